"""`edge-runtime check` says which board it detected and from what, what it found, and refuses to load the ARM
runtimes (which would die with SIGSEGV) when /proc/cpuinfo lacks the lines they need."""

from __future__ import annotations

import platform

import pytest

from edge_runtime.cli import main
from tests.support.board_trees import board_trees

TREES = board_trees()


def check(capsys, tmp_path, monkeypatch, tree: str, arch: str = "aarch64", board: str | None = None):
    monkeypatch.setenv("EDGE_HARDWARE_ROOT", str(TREES / tree))
    monkeypatch.setattr(platform, "machine", lambda: arch)
    config = tmp_path / "c.yaml"
    config.write_text("device_id: pi-01\nbroker: mqtt://127.0.0.1:1\n" + (f"board: {board}\n" if board else "")
                      + "models:\n  - bundle: missing.bundle\n    source: {type: mqtt, topic: t}\n")
    code = main(["check", str(config)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_check_names_the_detected_board_its_evidence_accelerators_and_backends(capsys, tmp_path, monkeypatch):
    code, text = check(capsys, tmp_path, monkeypatch, "coral-usb-on-pi4")
    assert code == 1  # the bundle is missing: everything before it is still said
    lines = text.splitlines()
    assert lines[1] == "board coral-usb (detected: USB device 18d1:9302)"
    assert lines[2].startswith("  note: raspberry-pi-4 also matches (compatible brcm,bcm2711")
    assert "  accelerator Edge TPU (USB): found (USB 18d1:9302); reached by tflite delegate libedgetpu.so.1" in text
    assert "  temperature 51.1 C, throttling none" in text
    assert "backend onnxruntime: onnxruntime 1." in text
    assert "backend tflite: ai_edge_litert" in text and "delegate libedgetpu.so.1 not loadable (" in text


def test_check_on_a_jetson_says_what_is_missing_from_this_onnxruntime(capsys, tmp_path, monkeypatch):
    code, text = check(capsys, tmp_path, monkeypatch, "jetson-orin")
    assert "board jetson-orin (detected: compatible nvidia,tegra234 in /proc/device-tree/compatible; model " \
           "'NVIDIA Jetson Orin Nano Developer Kit'; R36 in /etc/nv_tegra_release)" in text
    assert "accelerator Ampere GPU (1024-2048 CUDA cores): found (/dev/nvgpu/igpu0/ctrl)" in text
    assert "jetson-orin also wants TensorrtExecutionProvider, CUDAExecutionProvider, not in this build" in text
    assert "temperature 47.5 C, throttling not exposed" in text


def test_a_named_board_that_does_not_match_the_machine_is_noted(capsys, tmp_path, monkeypatch):
    _, text = check(capsys, tmp_path, monkeypatch, "raspberry-pi-5", board="raspberry-pi-4")
    assert "board raspberry-pi-4 (named in the config)" in text
    assert "note: this machine looks like raspberry-pi-5 (compatible brcm,bcm2712" in text


@pytest.mark.parametrize("tree", ["arm64-container", "x86_64"])
def test_an_arm_cpuinfo_without_the_cpu_lines_stops_check_before_any_backend_loads(capsys, tmp_path, monkeypatch,
                                                                                    tree):
    code, text = check(capsys, tmp_path, monkeypatch, tree, board="generic-arm64")
    assert code == 1
    assert "onnxruntime and ai-edge-litert crash (SIGSEGV)" in text and "installed: onnxruntime 1." in text
    assert "backend onnxruntime" not in text and "model " not in text


def test_run_refuses_the_same_way(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_HARDWARE_ROOT", str(TREES / "arm64-container"))
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    config = tmp_path / "c.yaml"
    config.write_text("device_id: pi-01\nbroker: mqtt://127.0.0.1:1\nmodels:\n  - bundle: missing.bundle\n"
                      "    source: {type: mqtt, topic: t}\n")
    assert main(["run", str(config)]) == 1
    assert "edge-runtime: error: /proc/cpuinfo is empty: onnxruntime" in capsys.readouterr().err
