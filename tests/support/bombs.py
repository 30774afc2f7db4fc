"""Hostile bundles: small files that declare or inflate to huge sizes (the memory attacks of issue 13)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from edge_runtime.bundle import FileEntry, manifest_bytes, read_bundle

_MB = 1024 * 1024


def zip_bomb(out: Path, base: Path, inflated: int) -> Path:
    """`base`'s members plus `padding.bin`, `inflated` zero bytes that deflate to about 1/1000 of that, listed in
    an unsigned manifest with their true sha256 (so only the signature policy or a size cap can refuse it)."""
    bundle = read_bundle(base)
    digest = hashlib.sha256()
    zeros = bytes(_MB)
    for _ in range(inflated // _MB):
        digest.update(zeros)
    files = dict(bundle.manifest.files) | {"padding.bin": FileEntry(sha256=digest.hexdigest(), size=inflated)}
    manifest = bundle.manifest.model_copy(update={"files": files})
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("manifest.json", manifest_bytes(manifest))
        for name in bundle.names:
            archive.writestr(name, bundle.read(name))
        with archive.open("padding.bin", "w", force_zip64=True) as padding:
            for _ in range(inflated // _MB):
                padding.write(zeros)
    return out


def npz_declaring(shape: tuple[int, ...], dtype: str = "<f4", data: bytes = b"") -> bytes:
    """An .npz of a few bytes whose one array's header declares `shape`: np.load would allocate all of it."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as archive:
        archive.writestr("input:x.npy", buffer.getvalue() + data)
    return npz.getvalue()
