"""Reading an .npz only after its array headers say it fits: a 3 KB file must not make the device allocate 1 TiB.

`np.load` allocates each array from the shape its `.npy` header declares before it reads a byte of data, so a tiny
archive that declares a huge array raises MemoryError (or takes the memory) before anything can refuse it. Here
every member's header is read first (`numpy.lib.format.read_magic` / `read_array_header_*`), and the archive is
refused unless each array's declared bytes are physically in the archive (at most the member's uncompressed size)
and all of them together stay under `max_bytes`. Object arrays (pickles) are refused. Then `np.load` reads it.
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import BinaryIO

import numpy as np

#: the largest .npy header numpy itself accepts by default
MAX_HEADER_BYTES = 10_000


class NpzError(ValueError):
    """An .npz that is refused; the message says which array and why."""


def _header(handle: BinaryIO, name: str) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(handle, max_header_size=MAX_HEADER_BYTES)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = fmt.read_array_header_2_0(handle, max_header_size=MAX_HEADER_BYTES)
        else:
            raise NpzError(f"array {name!r}: .npy format version {version} is not supported")
    except NpzError:
        raise
    except Exception as exc:  # numpy raises ValueError, SyntaxError, EOFError... on a damaged header
        raise NpzError(f"array {name!r}: not a valid .npy header ({str(exc)[:120]})") from None
    return shape, dtype


def check_npz(source: bytes | str | os.PathLike[str], max_bytes: int) -> None:
    """NpzError unless every array's header is sound and all arrays together take at most `max_bytes`."""
    stream: BinaryIO | str | os.PathLike[str] = io.BytesIO(source) if isinstance(source, bytes) else source
    total = 0
    try:
        with zipfile.ZipFile(stream) as archive:
            for info in archive.infolist():
                name = info.filename
                if not name.endswith(".npy"):
                    raise NpzError(f"member {name!r} is not an .npy array")
                if info.file_size > max_bytes:
                    raise NpzError(f"array {name!r} is {info.file_size} bytes, more than the limit of {max_bytes}")
                with archive.open(info) as handle:
                    shape, dtype = _header(handle, name)
                    header_bytes = handle.tell()
                if dtype.hasobject:
                    raise NpzError(f"array {name!r} holds Python objects (a pickle): refused")
                count = 1
                for dim in shape:
                    count *= int(dim)
                declared = count * dtype.itemsize
                if declared > info.file_size - header_bytes:
                    raise NpzError(f"array {name!r} declares {list(shape)} {dtype} ({declared} bytes) but its member "
                                   f"holds {info.file_size - header_bytes} bytes of data")
                total += declared
                if total > max_bytes:
                    raise NpzError(f"the arrays take more than the limit of {max_bytes} bytes")
    except NpzError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise NpzError(f"not a readable .npz archive ({str(exc)[:120]})") from None


def load_npz(source: bytes | str | os.PathLike[str], max_bytes: int) -> dict[str, np.ndarray]:
    """Every array of an .npz, after `check_npz`; NpzError for anything wrong (never MemoryError)."""
    check_npz(source, max_bytes)
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with np.load(stream, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as exc:  # zipfile, format and memory errors differ between numpy versions
        raise NpzError(f"not a readable .npz archive ({type(exc).__name__}: {str(exc)[:120]})") from None
