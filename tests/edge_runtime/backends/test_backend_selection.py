"""Choosing a backend: the user's order, plugin discovery, and a visible (degraded) fallback, never a silent one."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

import edge_runtime.backends as backends
from edge_runtime.backends import AttemptsFailed, available_backends, backends_for_format
from edge_runtime.backends.base import BackendUnavailable
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackendConfig
from edge_runtime.backends.select import choose_backend, default_configs
from edge_runtime.backends.tflite import TfliteBackendConfig
from edge_runtime.board import load_board
from tests.support.tflite_mlp import build_tflite_mlp

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@pytest.fixture(scope="module")
def onnx_bytes(activity_sample) -> bytes:
    return activity_sample.onnx_path.read_bytes()


@pytest.fixture(scope="module")
def tflite_bytes() -> bytes:
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(8, 4)).astype(np.float32), np.zeros(4, np.float32), "softmax")]
    return build_tflite_mlp(layers)


@pytest.fixture(scope="module")
def board():
    return load_board("x86_64")


def ort(*providers: str) -> OnnxRuntimeBackendConfig:
    return OnnxRuntimeBackendConfig(type="onnxruntime", providers=list(providers) or None)


def lite(*delegates: str) -> TfliteBackendConfig:
    return TfliteBackendConfig(type="tflite", delegates=list(delegates))


def test_gpu_providers_missing_fall_back_to_cpu_and_say_so(onnx_bytes, board, caplog):
    with caplog.at_level(logging.WARNING, logger="edge_runtime.backends"):
        choice = choose_backend(onnx_bytes, "onnx", [ort(TRT, CUDA, CPU)], board)
    assert choice.active == f"onnxruntime:{CPU}"
    assert choice.degraded is True
    assert choice.reason.startswith(f"{TRT} unavailable (not in this onnxruntime build: ")
    assert choice.reason.endswith(f"running on onnxruntime:{CPU}")
    assert [attempt.split(": ")[0] for attempt in choice.attempts] == [
        f"onnxruntime:{TRT}",
        f"onnxruntime:{CUDA}",
        f"onnxruntime:{CPU}",
    ]
    assert choice.attempts[-1] == f"onnxruntime:{CPU}: ok"
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert any(TRT in record.getMessage() for record in warnings)
    assert choice.describe()["degraded"] is True


def test_asking_for_cpu_only_is_not_degraded(onnx_bytes, board, caplog):
    with caplog.at_level(logging.WARNING, logger="edge_runtime.backends"):
        choice = choose_backend(onnx_bytes, "onnx", [ort(CPU)], board)
    assert choice.active == f"onnxruntime:{CPU}"
    assert (choice.degraded, choice.reason) == (False, None)
    assert not caplog.records


def test_default_order_comes_from_the_board(onnx_bytes, tflite_bytes, board):
    assert [config.type for config in default_configs(board, "onnx")] == ["onnxruntime"]
    assert [config.type for config in default_configs(board, "tflite")] == ["tflite"]
    assert not choose_backend(onnx_bytes, "onnx", None, board).degraded
    assert choose_backend(tflite_bytes, "tflite", None, board).active == "tflite:cpu (XNNPACK)"


def test_board_defaults_with_gpu_providers_are_degraded_here(onnx_bytes):
    choice = choose_backend(onnx_bytes, "onnx", None, load_board("jetson-orin"))
    assert choice.degraded and choice.active == f"onnxruntime:{CPU}"
    assert TRT in choice.reason


def test_a_first_config_for_the_other_format_counts_as_a_fallback(onnx_bytes, board):
    choice = choose_backend(onnx_bytes, "onnx", [lite(), ort(CPU)], board)
    assert choice.active == f"onnxruntime:{CPU}"
    assert choice.degraded is True
    assert choice.reason.startswith("tflite skipped (runs tflite models, this bundle is onnx)")
    later = choose_backend(onnx_bytes, "onnx", [ort(CPU), lite()], board)
    assert not later.degraded and len(later.attempts) == 1


def test_a_tflite_bundle_with_only_onnxruntime_configured_lists_the_attempts(tflite_bytes, board):
    with pytest.raises(BackendUnavailable, match="no backend can run this tflite model") as error:
        choose_backend(tflite_bytes, "tflite", [ort(TRT, CPU)], board)
    assert "onnxruntime: skipped (runs onnx models, this bundle is tflite)" in str(error.value)
    assert isinstance(error.value, AttemptsFailed) and len(error.value.attempts) == 1


def test_every_attempt_is_listed_when_nothing_runs(onnx_bytes, board):
    with pytest.raises(AttemptsFailed) as error:
        choose_backend(onnx_bytes, "onnx", [ort(TRT), ort(CUDA), lite()], board)
    message = str(error.value)
    for expected in (f"onnxruntime:{TRT}: unavailable", f"onnxruntime:{CUDA}: unavailable", "tflite: skipped"):
        assert expected in message


def test_a_board_without_a_backend_for_the_format(tflite_bytes):
    with pytest.raises(BackendUnavailable, match="has no backend for tflite models"):
        choose_backend(tflite_bytes, "tflite", None, load_board("jetson-orin"))


def test_formats_map_bundles_to_backends():
    assert backends_for_format("onnx") == ["onnxruntime"]
    assert backends_for_format("tflite") == ["tflite"]


def test_a_backend_that_cannot_be_imported_is_disabled_and_the_rest_still_load(
    monkeypatch, onnx_bytes, tflite_bytes, board, caplog
):
    plugins = backends.backend_plugins()
    broken = dataclasses.replace(plugins["onnxruntime"], module="edge_runtime.backends.no_such_backend")
    monkeypatch.setitem(plugins, "onnxruntime", broken)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.backends"):
        status = available_backends()
    assert status["tflite"] is None
    assert "no_such_backend" in status["onnxruntime"]
    assert any("backend onnxruntime disabled" in record.getMessage() for record in caplog.records)

    with pytest.raises(AttemptsFailed, match="no_such_backend") as error:
        choose_backend(onnx_bytes, "onnx", None, board)
    assert str(error.value.attempts[0]).startswith("onnxruntime: unavailable (cannot import")
    assert choose_backend(tflite_bytes, "tflite", None, board).active == "tflite:cpu (XNNPACK)"


def test_everything_installed_here_is_available():
    status = available_backends()
    assert status["onnxruntime"] is None and status["tflite"] is None
    assert status["rknn"].startswith("rknn-toolkit-lite2 is not installed")  # aarch64 wheels only
