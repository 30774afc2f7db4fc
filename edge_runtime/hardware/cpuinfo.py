"""The ARM /proc/cpuinfo check: onnxruntime and LiteRT read it when they start and crash without it.

On aarch64, onnxruntime (every version tried here, 1.23.2 to 1.32.0) reads /proc/cpuinfo at import and dies with
SIGSEGV when the file is empty or has no `CPU implementer` / `CPU part` lines; ai-edge-litert 2.3.0 dies the same
way when it creates an interpreter. That is what a locked-down container shows (and what qemu-user shows an
emulated ARM guest: the host's x86 file). A segfault leaves no message, and under systemd a restart loop, so
`check` and `run` look first and say so in one line.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from edge_runtime.hardware.sysfs import read_text, under

CPUINFO = "/proc/cpuinfo"
#: distributions whose native code reads /proc/cpuinfo at start on aarch64 and crashes without the ARM lines
AFFECTED = ("onnxruntime", "onnxruntime-gpu", "ai-edge-litert")
_REQUIRED = ("CPU implementer", "CPU part")


def installed_versions(names: tuple[str, ...] = AFFECTED) -> list[str]:
    """``name version`` of each distribution that is installed (read from metadata: nothing is imported)."""
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return found


def cpuinfo_problem(root: str | Path = "/", arch: str = "aarch64") -> str | None:
    """Why /proc/cpuinfo under `root` would crash the ARM runtimes, or None when it is fine (or not ARM)."""
    if arch != "aarch64":
        return None
    text = read_text(under(Path(root), CPUINFO))
    if not text:
        what = "is empty" if text == "" else "cannot be read"
    else:
        keys = {line.split(":", 1)[0].strip() for line in text.splitlines() if ":" in line}
        missing = [key for key in _REQUIRED if key not in keys]
        if not missing:
            return None
        what = f"has no '{missing[0]}' lines" if len(missing) == 1 else "has no 'CPU implementer' / 'CPU part' lines"
    return (
        f"{CPUINFO} {what}: onnxruntime and ai-edge-litert crash (SIGSEGV) on such an aarch64 system when they "
        f"start; give the container the host's {CPUINFO} (e.g. do not mask it; lxcfs passes it through)"
    )
