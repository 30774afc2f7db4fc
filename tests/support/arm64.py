"""The emulated aarch64 device of tests/arm64: qemu-user running Debian's arm64 python3.11 on the device install.

`scripts/arm64_sysroot.sh` (run by `make test-arm64`) builds `.cache/arm64/`: `sysroot/` (python3.11 and its
libraries from Debian's arm64 packages), `site/` (the device install's aarch64 wheels) and `app/` (this tree's
edge-runtime wheel). Each test gets its own guest root: symlinks to the sysroot's folders plus its own `proc/`
(a Raspberry Pi's cpuinfo and device tree, or an empty cpuinfo), because `qemu-aarch64-static -L ROOT` serves
every file that exists under ROOT in place of the host's. qemu shows the guest the host's x86 /proc/cpuinfo
otherwise, on which onnxruntime and LiteRT crash. Timing under emulation means nothing; correctness does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.board_trees import board_trees

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("EDGE_ARM64_DIR") or REPO / ".cache" / "arm64")
TREES = board_trees()
QEMU = "qemu-aarch64-static"
#: `make test-arm64` sets it: a missing sysroot is then a failure, not a skip
REQUIRED = "EDGE_ARM64"
TIMING_NOTE = "timing under qemu emulation means nothing (correctness does)"


def require_sysroot() -> None:
    """Fail (under `make test-arm64`) or skip (a plain pytest run) when the emulated device is not built."""
    missing = [str(path) for path in (CACHE / "sysroot" / ".complete", CACHE / "site", CACHE / "app")
               if not path.exists()]
    if shutil.which(QEMU) is None:
        missing.append(QEMU)
    if missing:
        message = f"the emulated aarch64 device is not built ({', '.join(missing)}): run `make test-arm64`"
        if os.environ.get(REQUIRED):
            pytest.fail(message)
        pytest.skip(message)


def guest_root(where: Path, board_tree: str | None = "raspberry-pi-4", cpuinfo: str | None = None) -> Path:
    """A guest root: the sysroot's folders plus `proc/` (and `sys/`) of a recorded board, or the given cpuinfo."""
    sysroot = CACHE / "sysroot"
    where.mkdir(parents=True, exist_ok=True)
    for entry in sysroot.iterdir():
        if entry.name not in ("proc", "sys", ".complete"):
            (where / entry.name).symlink_to(entry.resolve())
    if board_tree is not None:
        shutil.copytree(TREES / board_tree / "proc", where / "proc")
        if (TREES / board_tree / "sys").is_dir():
            shutil.copytree(TREES / board_tree / "sys", where / "sys")
    if cpuinfo is not None:
        (where / "proc").mkdir(exist_ok=True)
        (where / "proc" / "cpuinfo").write_text(cpuinfo)
    return where


@dataclass
class Guest:
    """The emulated aarch64 python of one guest root."""

    root: Path
    cpu: str = "cortex-a72"  # the Raspberry Pi 4's core; cortex-a76 is the Pi 5's and the RK3588's big core

    @property
    def python(self) -> list[str]:
        return [QEMU, "-cpu", self.cpu, "-L", str(self.root), str(self.root / "usr" / "bin" / "python3.11")]

    @property
    def env(self) -> dict[str, str]:
        """Only the device install on the path: nothing of the host's virtual environment or tree leaks in."""
        return {"PATH": "/usr/bin:/bin", "HOME": str(self.root.parent), "PYTHONNOUSERSITE": "1",
                "PYTHONPATH": f"{CACHE / 'app'}:{CACHE / 'site'}", "LANG": "C.UTF-8"}

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([*self.python, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
