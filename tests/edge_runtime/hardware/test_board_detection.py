"""Board detection against recorded trees of each board (device tree, L4T release, USB ids, device nodes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edge_runtime.hardware.detect import accelerators_present, detect_board, read_machine, resolve_board
from tests.support.board_trees import board_trees

TREES = board_trees()


def detect(tree: str | Path, arch: str = "aarch64"):
    return detect_board(read_machine(TREES / tree if isinstance(tree, str) else tree, arch))


@pytest.mark.parametrize(("tree", "board", "evidence"), [
    ("raspberry-pi-4", "raspberry-pi-4", "compatible brcm,bcm2711"),
    ("raspberry-pi-5", "raspberry-pi-5", "compatible brcm,bcm2712"),
    ("jetson-orin", "jetson-orin", "compatible nvidia,tegra234"),
    ("jetson-nano", "jetson-nano", "compatible nvidia,tegra210"),
    ("rk3588", "rk3588", "compatible rockchip,rk3588"),
    ("coral-devboard", "coral-devboard", "/dev/apex_0"),
    ("coral-usb-on-pi4", "coral-usb", "USB device 18d1:9302"),
    ("generic-arm64", "generic-arm64", "no other board file matches this aarch64 machine"),
])
def test_each_recorded_board_is_recognised_with_its_evidence(tree, board, evidence):
    detection = detect(tree)
    assert detection.board.name == board
    assert detection.evidence[0].startswith(evidence)
    assert detection.describe().startswith(f"board {board} (detected: {evidence}")


def test_the_model_and_the_l4t_release_are_part_of_the_evidence():
    detection = detect("jetson-orin")
    assert detection.evidence == ["compatible nvidia,tegra234 in /proc/device-tree/compatible",
                                  "model 'NVIDIA Jetson Orin Nano Developer Kit'", "R36 in /etc/nv_tegra_release"]
    assert detection.notes == []


def test_an_x86_machine_is_x86_64_even_with_a_coral_stick_plugged_in(tmp_path):
    tree = tmp_path / "pc"
    shutil.copytree(TREES / "x86_64", tree)
    shutil.copytree(TREES / "coral-usb-on-pi4" / "sys" / "bus", tree / "sys" / "bus")
    detection = detect(tree, arch="x86_64")
    assert detection.board.name == "x86_64"
    assert any("18d1:9302" in note and "coral-usb is for aarch64" in note for note in detection.notes)


def test_the_coral_stick_before_its_firmware_is_loaded_has_the_other_id(tmp_path):
    tree = tmp_path / "pi"
    shutil.copytree(TREES / "coral-usb-on-pi4", tree)
    (tree / "sys/bus/usb/devices/2-2/idVendor").write_text("1a6e\n")
    (tree / "sys/bus/usb/devices/2-2/idProduct").write_text("089a\n")
    detection = detect(tree)
    assert detection.board.name == "coral-usb" and detection.evidence == ["USB device 1a6e:089a"]
    assert detection.notes == ["raspberry-pi-4 also matches (compatible brcm,bcm2711 in /proc/device-tree/compatible; "
                               "model 'Raspberry Pi 4 Model B Rev 1.4'); coral-usb is more specific"]


def test_an_orin_on_jetpack_5_is_an_orin_with_a_note(tmp_path):
    tree = tmp_path / "orin"
    shutil.copytree(TREES / "jetson-orin", tree)
    (tree / "etc/nv_tegra_release").write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref\n")
    detection = detect(tree)
    assert detection.board.name == "jetson-orin"
    assert detection.notes == ["L4T R35 (JetPack 5) found, but jetson-orin is written for R36 (JetPack 6): NVIDIA's "
                               "onnxruntime-gpu wheels are specific to one JetPack"]


def test_a_board_of_another_architecture_is_never_detected():
    assert detect("raspberry-pi-4", arch="x86_64").board.name == "x86_64"
    with pytest.raises(LookupError, match="no board file for architecture riscv64"):
        detect("generic-arm64", arch="riscv64")


def test_a_named_board_wins_and_a_mismatch_is_noted():
    detection = resolve_board("jetson-orin", TREES / "raspberry-pi-4", arch="aarch64")
    assert detection.board.name == "jetson-orin" and detection.named
    assert detection.describe() == "board jetson-orin (named in the config)"
    assert detection.notes == ["this machine looks like raspberry-pi-4 (compatible brcm,bcm2711 in "
                               "/proc/device-tree/compatible; model 'Raspberry Pi 4 Model B Rev 1.4')"]
    assert resolve_board("raspberry-pi-4", TREES / "raspberry-pi-4", arch="aarch64").notes == []
    assert resolve_board("x86_64", TREES / "raspberry-pi-4", arch="aarch64").notes[0] == (
        "x86_64 is an x86_64 board but this machine is aarch64")


def test_without_a_name_the_machine_decides():
    assert resolve_board(None, TREES / "rk3588", arch="aarch64").board.name == "rk3588"


def test_accelerators_are_reported_found_or_not():
    orin = detect("jetson-orin")
    found = {accelerator.kind: where for accelerator, where in accelerators_present(orin.board, read_machine(
        TREES / "jetson-orin", "aarch64"))}
    assert found == {"gpu": "/dev/nvgpu/igpu0/ctrl", "dla": None}  # an Orin Nano has no DLA
    coral = detect("coral-usb-on-pi4")
    machine = read_machine(TREES / "coral-usb-on-pi4", "aarch64")
    assert [where for _, where in accelerators_present(coral.board, machine)] == ["USB 18d1:9302"]
    assert accelerators_present(detect("raspberry-pi-4").board, machine) == []


def test_compatible_is_read_as_nul_separated_strings():
    machine = read_machine(TREES / "jetson-nano", "aarch64")
    assert machine.compatible == ("nvidia,p3449-0000-b00+p3448-0000-b00", "nvidia,jetson-nano", "nvidia,tegra210")
    assert machine.model == "NVIDIA Jetson Nano Developer Kit"  # the trailing NUL is gone
    assert machine.tegra_release == "R32"
