"""The aarch64 /proc/cpuinfo check: what onnxruntime and LiteRT need to start without SIGSEGV."""

from __future__ import annotations

from edge_runtime.hardware.cpuinfo import cpuinfo_problem, installed_versions
from tests.support.board_trees import board_trees

TREES = board_trees()


def test_real_arm_boards_pass():
    for tree in ("raspberry-pi-4", "raspberry-pi-5", "jetson-orin", "jetson-nano", "rk3588", "coral-devboard",
                 "generic-arm64"):
        assert cpuinfo_problem(TREES / tree) is None, tree


def test_an_empty_cpuinfo_is_named_with_the_consequence():
    problem = cpuinfo_problem(TREES / "arm64-container")
    assert problem.startswith("/proc/cpuinfo is empty: onnxruntime and ai-edge-litert crash (SIGSEGV)")


def test_the_x86_file_qemu_shows_an_arm_guest_lacks_both_lines():
    problem = cpuinfo_problem(TREES / "x86_64", arch="aarch64")
    assert problem.startswith("/proc/cpuinfo has no 'CPU implementer' / 'CPU part' lines")


def test_one_missing_line_and_a_missing_file(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nCPU implementer\t: 0x41\n")
    assert cpuinfo_problem(tmp_path).startswith("/proc/cpuinfo has no 'CPU part' lines")
    assert cpuinfo_problem(tmp_path / "nowhere").startswith("/proc/cpuinfo cannot be read")


def test_only_aarch64_is_checked():
    assert cpuinfo_problem(TREES / "arm64-container", arch="x86_64") is None


def test_installed_versions_come_from_metadata():
    versions = installed_versions(("onnxruntime", "surely-not-installed-package"))
    assert len(versions) == 1 and versions[0].startswith("onnxruntime 1.")
