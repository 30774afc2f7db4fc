"""The onnxruntime backend plugin: a real converted bundle on the CPU, and provider handling with a fake build."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_runtime.backends import AttemptsFailed
from edge_runtime.backends import onnxruntime as ort_backend
from edge_runtime.backends.base import BackendUnavailable
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackendConfig
from edge_runtime.board import load_board
from edge_runtime.bundle import read_bundle

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", ort_backend.TENSORRT


@pytest.fixture(scope="module")
def bundle(activity_bundle):
    return read_bundle(activity_bundle)


@pytest.fixture(scope="module")
def board():
    return load_board("x86_64")


def config(**values) -> OnnxRuntimeBackendConfig:
    return OnnxRuntimeBackendConfig(type="onnxruntime", **values)


def test_runs_the_converted_bundle_and_reproduces_its_golden_output(bundle, board):
    backend = ort_backend.open_backend(bundle.model_bytes(), config(), board)
    assert (backend.name, backend.device) == ("onnxruntime", CPU)
    assert backend.max_batch is None  # the converter keeps the batch dimension symbolic
    assert backend.input_names == ["x"] and backend.output_names == ["logits"]
    assert backend.threads == board.threads
    inputs, expected = bundle.golden()
    actual = backend.run(inputs)
    spec = bundle.manifest.golden
    np.testing.assert_allclose(actual["logits"], expected["logits"], rtol=spec.rtol, atol=spec.atol)
    batch = backend.run({"x": np.repeat(inputs["x"], 8, axis=0).astype(np.float64)})  # cast to the model's type
    assert batch["logits"].shape == (8, 4)
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.run(inputs)


def test_configured_threads_override_the_board(bundle, board):
    backend = ort_backend.open_backend(bundle.model_bytes(), config(threads=2), board)
    assert backend.threads == 2


def test_fixed_batch_dimension_is_the_max_batch(bundle, board):
    model = onnx.load_from_string(bundle.model_bytes())
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    backend = ort_backend.open_backend(model.SerializeToString(), config(), board)
    assert backend.max_batch == 1


def test_missing_input_is_named(bundle, board):
    backend = ort_backend.open_backend(bundle.model_bytes(), config(), board)
    with pytest.raises(ValueError, match="missing input 'x'"):
        backend.run({"y": np.zeros((1, 6, 50), np.float32)})


def test_unavailable_providers_are_skipped_with_the_reason(bundle, board):
    backend = ort_backend.open_backend(bundle.model_bytes(), config(providers=[TRT, CUDA, CPU]), board)
    assert backend.device == CPU
    assert [str(attempt).split(":")[1] for attempt in backend.attempts] == [TRT, CUDA, CPU]
    assert "not in this onnxruntime build" in backend.attempts[0].outcome
    assert backend.attempts[-1].ok


def test_only_unavailable_providers_is_refused(bundle, board):
    with pytest.raises(AttemptsFailed, match="TensorrtExecutionProvider unavailable") as error:
        ort_backend.open_backend(bundle.model_bytes(), config(providers=[TRT]), board)
    assert [attempt.device for attempt in error.value.attempts] == [TRT]


def test_an_invalid_model_is_not_blamed_on_a_provider(board):
    with pytest.raises(BackendUnavailable, match="cannot load the model"):
        ort_backend.open_backend(b"not an onnx model", config(), board)


def test_missing_onnxruntime_gives_the_install_hint(monkeypatch, bundle, board):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install 'edge-runtime\[onnx\]'"):
        ort_backend.open_backend(bundle.model_bytes(), config(), board)
    with pytest.raises(BackendUnavailable):
        ort_backend.check_installed()


# -- provider handling against a fake onnxruntime (no GPU here) ----------------------------------------------
class FakeMeta:
    def __init__(self, name: str, shape: list):
        self.name, self.shape, self.type = name, shape, "tensor(float)"


class FakeOrt:
    """An onnxruntime build with GPU providers whose session keeps only `keeps` (as a failed EP init does)."""

    class GraphOptimizationLevel:
        ORT_ENABLE_ALL = "all"

    class SessionOptions:
        pass

    def __init__(self, available: list[str], keeps: list[str], fails: tuple[str, ...] = ()):
        self.available, self.keeps, self.fails = available, keeps, fails
        self.calls: list[dict] = []

    def get_available_providers(self) -> list[str]:
        return self.available

    def InferenceSession(self, model, sess_options, providers, **kwargs):  # noqa: N802 - onnxruntime's name
        self.calls.append({"providers": providers, "options": sess_options, **kwargs})
        first = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if first in self.fails:
            raise RuntimeError(f"{first}: cannot load libcudart.so.12")
        keeps = self.keeps

        class Session:
            def get_providers(self):
                return keeps

            def get_inputs(self):
                return [FakeMeta("x", ["batch", 6, 50])]

            def get_outputs(self):
                return [FakeMeta("logits", ["batch", 4])]

        return Session()


def test_a_provider_onnxruntime_drops_silently_is_detected(monkeypatch, board):
    fake = FakeOrt([TRT, CUDA, CPU], keeps=[CUDA, CPU])
    monkeypatch.setattr(ort_backend, "_import_onnxruntime", lambda: fake)
    backend = ort_backend.open_backend(b"model", config(providers=[TRT, CUDA, CPU]), board)
    assert backend.device == CUDA
    assert [attempt.outcome for attempt in backend.attempts] == [
        "dropped by onnxruntime at session creation (failed to initialise)",
        "ok",
    ]
    assert fake.calls[0]["enable_fallback"] == 0  # onnxruntime must not switch providers behind our back
    options = fake.calls[0]["options"]
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (board.threads, 1)
    assert options.graph_optimization_level == "all"


def test_a_provider_that_raises_is_recorded_and_the_next_is_tried(monkeypatch, board):
    fake = FakeOrt([CUDA, CPU], keeps=[CPU], fails=(CUDA,))
    monkeypatch.setattr(ort_backend, "_import_onnxruntime", lambda: fake)
    backend = ort_backend.open_backend(b"model", config(providers=[CUDA, CPU]), board)
    assert backend.device == CPU
    assert backend.attempts[0].outcome.startswith("failed to initialise (CUDAExecutionProvider: cannot load")
    assert [call["providers"] for call in fake.calls] == [[CUDA, CPU], [CPU]]


def test_falling_back_to_an_unlisted_provider_is_refused(monkeypatch, board):
    monkeypatch.setattr(ort_backend, "_import_onnxruntime", lambda: FakeOrt([CUDA, CPU], keeps=[CPU]))
    with pytest.raises(AttemptsFailed, match="not configured"):
        ort_backend.open_backend(b"model", config(providers=[CUDA]), board)


def test_tensorrt_gets_its_engine_cache_and_fp16(monkeypatch, board, tmp_path: Path):
    fake = FakeOrt([TRT, CPU], keeps=[TRT, CPU])
    monkeypatch.setattr(ort_backend, "_import_onnxruntime", lambda: fake)
    cache = tmp_path / "engines"
    backend = ort_backend.open_backend(
        b"model", config(providers=[TRT, CPU], trt_engine_cache=cache), board, precision="fp16"
    )
    assert backend.device == TRT and backend.max_batch is None
    assert fake.calls[0]["providers"] == [
        (TRT, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache), "trt_fp16_enable": "True"}),
        CPU,
    ]
    assert cache.is_dir()
    ort_backend.open_backend(b"model", config(providers=[TRT, CPU]), board)
    assert fake.calls[-1]["providers"] == [TRT, CPU]  # fp32 without a cache: no options


# -- the board's provider options reach onnxruntime ----------------------------------------------------------
def test_the_boards_tensorrt_options_reach_the_session(monkeypatch, tmp_path: Path):
    fake = FakeOrt([TRT, CUDA, CPU], keeps=[TRT, CUDA, CPU])
    monkeypatch.setattr(ort_backend, "_import_onnxruntime", lambda: fake)
    orin = load_board("jetson-orin")
    cache = tmp_path / "tensorrt"  # the board's /var/cache/edge-runtime/tensorrt, moved for the test
    orin.onnxruntime.tensorrt.trt_engine_cache_path = str(cache)
    backend = ort_backend.open_backend(b"model", config(), orin)
    assert backend.device == TRT
    assert fake.calls[0]["providers"] == [
        (TRT, {"trt_fp16_enable": "True", "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
               "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache)}),
        CUDA,
        CPU,
    ]
    assert cache.is_dir()  # created before the session, so TensorRT can write its first engine


def test_the_configs_options_override_the_boards(monkeypatch, tmp_path: Path):
    fake = FakeOrt([TRT, CUDA, CPU], keeps=[TRT, CUDA, CPU])
    monkeypatch.setattr(ort_backend, "_import_onnxruntime", lambda: fake)
    orin = load_board("jetson-orin")
    orin.onnxruntime.provider_options = {CUDA: {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}}
    overrides = config(trt_engine_cache=tmp_path / "engines",
                       tensorrt={"trt_fp16_enable": False, "trt_dla_enable": True},
                       provider_options={CUDA: {"device_id": 1}})
    ort_backend.open_backend(b"model", overrides, orin, precision="fp16")
    trt, cuda, cpu = fake.calls[0]["providers"]
    assert trt[1]["trt_fp16_enable"] == "False"  # said explicitly: an fp16 bundle does not turn it back on
    assert trt[1]["trt_dla_enable"] == "True" and trt[1]["trt_engine_cache_path"] == str(tmp_path / "engines")
    assert cuda == (CUDA, {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC"})
    assert cpu == CPU


def test_a_misspelt_tensorrt_option_in_the_config_is_refused():
    with pytest.raises(ValueError, match="trt_engine_cache_enabled"):
        config(tensorrt={"trt_engine_cache_enabled": True})


def test_describe_installed_names_what_the_board_wants_and_this_build_lacks():
    text = ort_backend.describe_installed(load_board("jetson-orin"))
    assert text.startswith("onnxruntime 1.") and "CPUExecutionProvider" in text
    assert text.endswith("jetson-orin also wants TensorrtExecutionProvider, CUDAExecutionProvider, not in this build")
