"""Build-once cache for the sample models: train a model the first time, hand out its files afterwards.

An entry is a folder named after the sample and a short hash of what decides its content (sample name,
the module's SAMPLE_VERSION, the torch version). It is built in a temporary folder beside its final place
and moved there with one ``os.replace``, so readers see either no entry or a complete one, never a half
build after a crash. Concurrent builders of the same entry serialise on a lock file where the platform has
``fcntl``; without it both build and the loser of the final rename throws its copy away.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

ENV_VAR = "EDGE_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$EDGE_CACHE_DIR``, else ``<repo root>/.cache/models`` (git-ignored), else the user cache."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    repo_root = Path(__file__).resolve().parents[1]
    if (repo_root / "pyproject.toml").is_file():
        return repo_root / ".cache" / "models"
    # Installed from a wheel: there is no repository to put a .cache folder in.
    return Path.home() / ".cache" / "edge-runtime" / "models"


def _torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"


def entry_name(name: str, version: str) -> str:
    """Folder name of a cache entry: readable prefix plus a hash of everything that changes the result."""
    key = "\0".join([name, version, _torch_version()])
    return f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on `path`; yields False where file locks are not available."""
    try:
        import fcntl
    except ImportError:  # Windows: rely on the atomic rename alone
        yield False
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_entry(
    name: str, version: str, build: Callable[[Path], Any], cache_dir: Path | None = None
) -> Path:
    """Return the entry folder for (name, version), calling ``build(folder)`` to fill it if it is missing.

    `build` writes its files into the folder it is given; if it raises, nothing is left behind.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    final = root / entry_name(name, version)
    if final.is_dir():
        return final
    with _lock(root / f".{final.name}.lock") as locked:
        if final.is_dir():  # another process finished it while we waited for the lock
            return final
        if locked:  # nobody else is building this entry: leftovers of killed builds can go
            for stale in root.glob(f".{final.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
        try:
            build(staging)
            staging.chmod(0o755)  # mkdtemp makes it private; the entry is meant to be shared
            try:
                os.replace(staging, final)
            except OSError:
                if not final.is_dir():
                    raise
                # Lost a race against a builder without a lock: its entry is as good as ours.
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final
