"""Files that are complete or absent: write to a temp file in the same folder, then `os.replace` it over the target.

Why one helper: a bundle written by the converter, a bundle installed by `reload` or a deployment, and the
deploy receiver's chunks and bookkeeping all need "readers see the old file or the whole new one, never half",
and a power cut must not leave a torn file under the real name. The temp file sits in the target's folder (a
rename is atomic only within one file system) and is named `.<target>.<random>.tmp`, so a crash leaves only a
hidden leftover. With `sync` (the default) the data is fsynced before the rename and the folder after it, so the
rename itself survives a power cut; `sync=False` is for files that are checked again anyway (deploy chunks are
hashed again when a transfer resumes) where an fsync per file would be slow on an SD card.

`stage`/`stage_copy` split the write from the rename for callers that must do something in between: an install
copies the new bundle beside the old one first (a full disk fails before anything changed), swaps the model, and
only then renames.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

COPY_BUFFER = 1024 * 1024


class StagedFile:
    """A complete temp file beside `target`, not in place yet: `commit()` renames it over `target`, `discard()`
    removes it."""

    def __init__(self, target: Path, temp: Path, sync: bool):
        self.target = target
        self.temp = temp
        self.sync = sync

    def commit(self) -> None:
        """`os.replace` onto the target (atomic); the temp file is removed if that fails."""
        try:
            os.replace(self.temp, self.target)
        except BaseException:
            self.discard()
            raise
        if self.sync:
            fsync_directory(self.target.parent)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.temp)


def stage(target: str | os.PathLike[str], write: Callable[[BinaryIO], None], *, sync: bool = True,
          mode: int | None = None) -> StagedFile:
    """Run `write(handle)` on a new temp file beside `target`; flushed and fsynced (with `sync`), chmod `mode`
    (default: 0600, as mkstemp makes it). On any error the temp file is removed and the error raised."""
    with _staging(Path(target), sync, mode) as (handle, staged):
        write(handle)
    return staged


def stage_copy(source: str | os.PathLike[str], target: str | os.PathLike[str], *, sync: bool = True) -> StagedFile:
    """`source` streamed into a temp file beside `target` (large bundles are not read into memory)."""

    def copy(out: BinaryIO) -> None:
        with open(source, "rb") as data:
            shutil.copyfileobj(data, out, COPY_BUFFER)

    return stage(target, copy, sync=sync)


def write_bytes(target: str | os.PathLike[str], data: bytes, *, sync: bool = True, mode: int | None = None) -> None:
    """`data` becomes the content of `target` atomically."""
    stage(target, lambda out: out.write(data), sync=sync, mode=mode).commit()


@contextlib.contextmanager
def atomic_writer(target: str | os.PathLike[str], *, sync: bool = True, mode: int | None = None) -> Iterator[BinaryIO]:
    """`with atomic_writer(path) as out: ...`: what is written to `out` replaces `target` when the block ends
    without an error; after an error `target` is untouched and the temp file is gone."""
    with _staging(Path(target), sync, mode) as (handle, staged):
        yield handle
    staged.commit()


@contextlib.contextmanager
def _staging(target: Path, sync: bool, mode: int | None) -> Iterator[tuple[BinaryIO, StagedFile]]:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    staged = StagedFile(target, Path(name), sync)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, staged
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(staged.temp, mode)
    except BaseException:
        staged.discard()
        raise


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename in `directory` durable across a power cut (best effort: not every platform allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
