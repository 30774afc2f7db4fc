"""Board files: every shipped board validates against the schema the converter and the daemon read, says what the
issue asks of it, and a misspelt or inconsistent one is refused with file, line and key."""

from __future__ import annotations

import pytest

from edge_runtime.board import TENSORRT, UnknownBoardError, known_boards, load_board
from edge_runtime.yaml_source import ConfigError

REQUIRED = {"raspberry-pi-4", "raspberry-pi-5", "jetson-orin", "jetson-nano", "coral-usb", "coral-devboard", "rk3588",
            "generic-arm64", "x86_64"}


def test_required_boards_ship():
    assert set(known_boards()) >= REQUIRED


@pytest.mark.parametrize("name", sorted(known_boards()))
def test_every_board_file_is_valid_and_complete(name):
    board = load_board(name)
    assert board.name == name
    assert board.quantization.preferred in board.quantization.supports
    assert board.threads <= board.cores
    assert board.cpu and board.memory_budget_mb and board.thermal_zone
    assert board.detect.fallback or board.detect.compatible or board.detect.usb_ids or board.detect.devices
    for accelerator in board.accelerators:
        assert accelerator.reached_by
    listed = {*board.onnxruntime.providers, *board.tflite.delegates, *(["rknn backend"] if board.rknn else [])}
    for accelerator in board.accelerators:  # a supported accelerator is reached by something the board lists
        if accelerator.supported and "when installed" not in accelerator.reached_by:
            assert any(name in accelerator.reached_by for name in listed), accelerator


def test_signedness_follows_the_hardware():
    assert load_board("x86_64").quantization.activations == "uint8"
    for arm in ("generic-arm64", "raspberry-pi-4", "raspberry-pi-5", "rk3588", "jetson-nano"):
        assert load_board(arm).quantization.activations == "int8"


def test_jetson_orin_gets_tensorrt_with_its_caches():
    board = load_board("jetson-orin")
    assert board.onnxruntime.providers[0] == TENSORRT
    assert board.onnxruntime.tensorrt.given() == {
        "trt_fp16_enable": True, "trt_engine_cache_enable": True,
        "trt_engine_cache_path": "/var/cache/edge-runtime/tensorrt", "trt_timing_cache_enable": True,
    }
    assert board.detect.tegra_release == ["R36"]


def test_jetson_nano_says_plainly_that_its_gpu_is_out_of_reach():
    board = load_board("jetson-nano")
    assert board.onnxruntime.providers == ["CPUExecutionProvider"]
    assert [accelerator.supported for accelerator in board.accelerators] == [False]
    for words in ("Python 3.6", "JetPack 4", "CUDA 10.2", "does not install"):
        assert words in board.notes


def test_coral_boards_use_the_edge_tpu_delegate_with_their_bus():
    assert load_board("coral-usb").tflite.delegate_options == {"libedgetpu.so.1": {"device": "usb"}}
    assert load_board("coral-devboard").tflite.delegate_options == {"libedgetpu.so.1": {"device": "pci"}}
    for name in ("coral-usb", "coral-devboard"):
        assert load_board(name).requires_tflite and load_board(name).quantization.supports == ["int8"]


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(UnknownBoardError) as caught:
        load_board("beaglebone")
    message = str(caught.value)
    assert "unknown board 'beaglebone'" in message and "raspberry-pi-4" in message


def test_a_board_file_by_path(tmp_path):
    path = tmp_path / "my-board.yaml"
    path.write_text("name: my-board\narch: aarch64\ncores: 4\nthreads: 2\n")
    assert load_board(str(path)).name == "my-board"


def board_errors(tmp_path, body: str) -> str:
    path = tmp_path / "b.yaml"
    path.write_text("name: b\narch: aarch64\ncores: 4\nthreads: 2\n" + body)
    with pytest.raises(ConfigError) as caught:
        load_board(str(path))
    return str(caught.value)


def test_a_misspelt_tensorrt_option_is_refused_with_a_suggestion(tmp_path):
    text = board_errors(tmp_path, "onnxruntime:\n  providers: [TensorrtExecutionProvider]\n  tensorrt:\n"
                                  "    trt_fp16_enabled: true\n")
    assert ":8] onnxruntime.tensorrt.trt_fp16_enabled: unknown key. Did you mean 'trt_fp16_enable'?" in text


def test_options_for_a_provider_or_delegate_that_is_not_listed_are_refused(tmp_path):
    assert "not in providers: CUDAExecutionProvider" in board_errors(
        tmp_path, "onnxruntime:\n  provider_options: {CUDAExecutionProvider: {device_id: 0}}\n")
    assert "not in delegates: libedgetpu.so.1" in board_errors(
        tmp_path, "tflite:\n  delegate_options: {libedgetpu.so.1: {device: usb}}\n")


def test_an_unquoted_compatible_is_caught(tmp_path):
    assert "not a device-tree compatible" in board_errors(tmp_path, "detect:\n  compatible: [brcm,bcm2711]\n")


def test_more_threads_than_cores_and_an_unsupported_preference_are_refused(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("name: b\narch: aarch64\ncores: 2\nthreads: 4\n")
    with pytest.raises(ConfigError, match="threads"):
        load_board(str(path))
    assert "preferred fp16 is not in supports" in board_errors(
        tmp_path, "quantization: {preferred: fp16, supports: [int8]}\n")
