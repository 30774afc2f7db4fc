"""Peak memory of reading hostile bundles, in a fresh process each: what issue 13 measured on the daemon.

    python benchmarks/bundle_bomb.py [--inflated-mb 512]

Three files, each refused: a 0.5 MB unsigned bundle whose member inflates to 500 MB (read with a trusted key
configured, as the attacked daemon was), and 1 KB bundles whose golden.npz declares a 1 TiB or 1.2 GB array (read
without keys, so only the npz header check stands in the way). For each: the peak RSS (VmHWM) of a child process before
and after `read_bundle` and `Bundle.golden()`, and the error it ended with. Run it with PYTHONPATH pointing at
another tree to compare (the numbers in docs/reliability.md are this tree against the one before the fix).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

CHILD = r"""
import sys
from pathlib import Path

def peak():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

from edge_runtime.bundle import read_bundle
from edge_runtime.signing import load_trusted_keys
keys = load_trusted_keys([sys.argv[2]]) if sys.argv[2] != "-" else None
before = peak()
try:
    read_bundle(sys.argv[1], trusted_keys=keys).golden()
    outcome = "accepted"
except BaseException as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[-90:]}"
print(f"{before:.0f}\t{peak():.0f}\t{outcome}")
"""


def _manifest(files: dict[str, tuple[str, int]]) -> bytes:
    from edge_runtime.bundle import FileEntry, Manifest, manifest_bytes

    manifest = Manifest(
        name="bomb", version="1", producer={"tool": "bench", "version": "0"},
        target={"board": "x86_64", "arch": "x86_64", "config": {}},
        model={"path": "model.onnx", "format": "onnx", "precision": "fp32"},
        inputs=[{"name": "x", "shape": [1, 4], "dtype": "float32"}],
        outputs=[{"name": "y", "shape": [1, 2], "dtype": "float32"}],
        golden={"rtol": 0.0, "atol": 0.0},
        files={name: FileEntry(sha256=sha, size=size) for name, (sha, size) in files.items()})
    return manifest_bytes(manifest)


def zip_bomb(path: Path, inflated_mb: int) -> Path:
    zeros = bytes(1024 * 1024)
    digest = hashlib.sha256()
    for _ in range(inflated_mb):
        digest.update(zeros)
    model, golden = b"not a model", b"not an npz"
    files = {"model.onnx": (hashlib.sha256(model).hexdigest(), len(model)),
             "golden.npz": (hashlib.sha256(golden).hexdigest(), len(golden)),
             "padding.bin": (digest.hexdigest(), inflated_mb * len(zeros))}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("manifest.json", _manifest(files))
        archive.writestr("model.onnx", model)
        archive.writestr("golden.npz", golden)
        with archive.open("padding.bin", "w", force_zip64=True) as out:
            for _ in range(inflated_mb):
                out.write(zeros)
    return path


def npz_bomb(path: Path, declared: tuple[int, ...]) -> Path:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": declared})
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as archive:
        archive.writestr("input:x.npy", header.getvalue())
    golden, model = npz.getvalue(), b"not a model"
    files = {"model.onnx": (hashlib.sha256(model).hexdigest(), len(model)),
             "golden.npz": (hashlib.sha256(golden).hexdigest(), len(golden))}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", _manifest(files))
        archive.writestr("model.onnx", model)
        archive.writestr("golden.npz", golden)
    return path


def measure(bundle: Path, key: Path | None) -> tuple[float, float, str]:
    result = subprocess.run([sys.executable, "-c", CHILD, str(bundle), str(key) if key else "-"],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        return 0.0, 0.0, f"child died ({result.returncode}): {result.stderr.strip()[-200:]}"
    before, after, outcome = result.stdout.strip().split("\t", 2)
    return float(before), float(after), outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inflated-mb", type=int, default=500)
    args = parser.parse_args(argv)
    from edge_runtime.signing import generate_keypair

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        _, public = generate_keypair("fleet", folder)
        cases = [
            (f"unsigned, {args.inflated_mb} MB inflated", zip_bomb(folder / "zip.bundle", args.inflated_mb), public),
            ("golden.npz declares 1 TiB", npz_bomb(folder / "npz.bundle", (1 << 38,)), None),
            ("golden.npz declares 1.2 GB", npz_bomb(folder / "npz12.bundle", (300_000_000,)), None),
        ]
        print(f"{'bundle':<34} {'file':>9} {'peak before':>12} {'peak after':>11}  outcome")
        for name, path, key in cases:
            before, after, outcome = measure(path, key)
            print(f"{name:<34} {path.stat().st_size / 1024:>7.0f} K {before:>9.0f} MB {after:>8.0f} MB  {outcome}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
