"""Reading the small text files of /proc, /sys and /etc under a root directory (a recorded tree in tests)."""

from __future__ import annotations

from pathlib import Path


def under(root: Path, path: str) -> Path:
    """`path` (absolute, as on the device) inside `root`."""
    return root / path.lstrip("/")


def read_text(path: Path) -> str | None:
    """The file's text without NULs and surrounding space, or None when it cannot be read."""
    try:
        return path.read_bytes().replace(b"\0", b"\n").decode("utf-8", "replace").strip()
    except OSError:
        return None


def read_strings(path: Path) -> list[str]:
    """A device-tree string list (`compatible` is NUL-separated), empty when the file is absent."""
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part.strip()]
