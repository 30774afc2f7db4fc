"""The rknn backend plugin's checks and fallbacks, on this machine without an NPU (the unit tier).

rknn-toolkit-lite2 has aarch64 wheels only and needs a board's librknnrt.so, so the runtime itself is never run
here: where a test needs it past the checks, a stand-in `rknnlite` module records what the plugin asks of it. The
fallback to the bundle's ONNX is real (onnxruntime, a real bundle, the model loader). A real rk3588 bundle built by
rknn-toolkit2 falls back in the daemon over a real broker in tests/edge_runtime/test_rknn_fallback.py.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import edge_runtime.backends.rknn as rknn
from converter.model_info import onnx_tensor_infos
from converter.package import AcceleratedContents, BundleContents, write_model_bundle
from edge_runtime.backends.base import BackendUnavailable, BundleModels
from edge_runtime.backends.select import choose_backend, default_configs
from edge_runtime.board import load_board
from edge_runtime.model_loader import load_bundle_model
from tests.support.graphs import conv_relu, images

RK3588 = load_board("rk3588")


@pytest.fixture(scope="module")
def conv():
    return conv_relu(["batch", 3, 8, 8])


@pytest.fixture(scope="module")
def conv_bytes(conv) -> bytes:
    return conv.SerializeToString()


def fake_rknnlite(monkeypatch, outputs=None):
    """A stand-in `rknnlite.api.RKNNLite` that records its calls and returns `outputs(inputs)` (default: zeros)."""
    calls: list[tuple] = []

    class RKNNLite:
        NPU_CORE_AUTO, NPU_CORE_0, NPU_CORE_1, NPU_CORE_2 = 0, 1, 2, 4
        NPU_CORE_0_1, NPU_CORE_0_1_2, NPU_CORE_ALL = 3, 7, 0xFFFF

        def __init__(self, verbose=False):
            calls.append(("new",))

        def load_rknn(self, path):
            calls.append(("load_rknn", Path(path).read_bytes()))
            return 0

        def init_runtime(self, core_mask=0):
            calls.append(("init_runtime", core_mask))
            return 0

        def inference(self, inputs, data_format=None):
            calls.append(("inference", [array.shape for array in inputs], data_format))
            return outputs(inputs) if outputs else [np.zeros((1, 8, 1, 1), np.float32)]

        def release(self):
            calls.append(("release",))

    api = types.ModuleType("rknnlite.api")
    api.RKNNLite = RKNNLite
    monkeypatch.setitem(sys.modules, "rknnlite", types.ModuleType("rknnlite"))
    monkeypatch.setitem(sys.modules, "rknnlite.api", api)
    return calls


def with_npu(monkeypatch, tmp_path) -> None:
    """A loadable library in place of librknnrt.so and an NPU node under a hardware root."""
    monkeypatch.setattr(rknn, "RUNTIME_LIBRARY", "libm.so.6")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "rknpu").write_text("")
    monkeypatch.setenv("EDGE_HARDWARE_ROOT", str(tmp_path))


def test_without_rknn_toolkit_lite2_the_plugin_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rknnlite", None)  # not importable, as on any x86 machine
    with pytest.raises(BackendUnavailable, match=r"pip install 'edge-runtime\[rknn\]'"):
        rknn.check_installed()


def test_the_board_puts_the_npu_first_only_for_a_bundle_that_has_a_rknn():
    assert [config.type for config in default_configs(RK3588, "onnx", ("rknn",))] == ["rknn", "onnxruntime"]
    assert [config.type for config in default_configs(RK3588, "onnx")] == ["onnxruntime"]
    assert RK3588.rknn.core_mask == "auto" and RK3588.backends[0] == "rknn"


def test_no_rknnlite_falls_back_to_the_bundles_onnx_degraded(monkeypatch, conv_bytes):
    monkeypatch.setitem(sys.modules, "rknnlite", None)
    bundle = BundleModels(["x"], ["y"], {"rknn": b"RKNN not used"})
    choice = choose_backend(conv_bytes, "onnx", None, RK3588, bundle=bundle)
    assert choice.active == "onnxruntime:CPUExecutionProvider" and choice.degraded
    assert choice.reason.startswith("rknn unavailable (rknn-toolkit-lite2 is not installed")


def test_a_missing_runtime_library_or_npu_node_is_the_reason(monkeypatch, tmp_path, conv_bytes):
    fake_rknnlite(monkeypatch)
    monkeypatch.setattr(rknn, "RUNTIME_LIBRARY", "librknnrt-missing.so")
    with pytest.raises(BackendUnavailable, match="librknnrt-missing.so is not loadable .*board's image"):
        rknn.open_backend(b"RKNN", rknn.RknnBackendConfig(type="rknn"), RK3588, bundle=BundleModels(["x"], ["y"]))
    monkeypatch.setattr(rknn, "RUNTIME_LIBRARY", "libm.so.6")
    monkeypatch.setenv("EDGE_HARDWARE_ROOT", str(tmp_path))
    choice = choose_backend(conv_bytes, "onnx", None, RK3588, bundle=BundleModels(["x"], ["y"], {"rknn": b"RKNN"}))
    assert choice.degraded and "no NPU device node (/dev/rknpu, /dev/dri/renderD129 not found)" in choice.reason


def test_the_runtime_gets_the_rknn_the_core_mask_and_the_onnx_layout(monkeypatch, tmp_path):
    calls = fake_rknnlite(monkeypatch)
    with_npu(monkeypatch, tmp_path)
    config = rknn.RknnBackendConfig(type="rknn", core_mask="0_1_2")
    backend = rknn.open_backend(b"RKNN model bytes", config, RK3588, bundle=BundleModels(["x"], ["y"]))
    assert ("load_rknn", b"RKNN model bytes") in calls and ("init_runtime", 7) in calls
    assert backend.device == "npu (cores 0_1_2)" and backend.accelerated == "rknn" and backend.max_batch == 1
    out = backend.run({"x": images(3, 3, 8, 8)})
    assert out["y"].shape == (3, 8, 1, 1)
    assert [call for call in calls if call[0] == "inference"] == [("inference", [(1, 3, 8, 8)], ["nchw"])] * 3
    backend.close()
    assert calls[-1] == ("release",)


def rk3588_bundle(tmp_path, conv, npu_outputs) -> object:
    """A real rk3588 bundle of the conv model with a (stand-in) .rknn whose simulator golden is `npu_outputs`."""
    session = onnxruntime.InferenceSession(conv.SerializeToString())
    golden_inputs = {"x": images(1, 3, 8, 8)}
    golden = {"y": session.run(None, golden_inputs)[0]}
    contents = BundleContents(
        name="conv", version="1", model_bytes=conv.SerializeToString(), model_format="onnx", precision="fp32",
        inputs=onnx_tensor_infos(conv.graph.input), outputs=onnx_tensor_infos(conv.graph.output),
        golden_inputs=golden_inputs, golden_outputs=golden, verification={}, reference={},
        accelerated=[AcceleratedContents(b"RKNN stand-in", "rknn", "rk3588 NPU", "int8", {"y": npu_outputs(golden)})],
    )
    write_model_bundle(tmp_path / "conv.bundle", contents, RK3588, None, None)
    return tmp_path / "conv.bundle", golden


def load(path):
    return load_bundle_model(path, name=None, backends=None, board=RK3588, trusted_keys=None,
                             require_signature=False, warmup_runs=0)


def test_an_npu_that_reproduces_its_simulator_golden_runs_the_model(monkeypatch, tmp_path, conv):
    path, golden = rk3588_bundle(tmp_path, conv, lambda golden: golden["y"] + 0.001)
    fake_rknnlite(monkeypatch, outputs=lambda inputs: [golden["y"] + 0.001])
    with_npu(monkeypatch, tmp_path)
    model = load(path)
    assert model.choice.active == "rknn:npu (cores auto)" and not model.choice.degraded
    model.close()


def test_an_npu_that_computes_something_else_gives_way_to_the_onnx(monkeypatch, tmp_path, conv):
    path, golden = rk3588_bundle(tmp_path, conv, lambda golden: golden["y"])
    fake_rknnlite(monkeypatch, outputs=lambda inputs: [golden["y"] + 5.0])
    with_npu(monkeypatch, tmp_path)
    model = load(path)
    assert model.choice.active == "onnxruntime:CPUExecutionProvider" and model.choice.degraded
    assert "golden output not reproduced on rknn:npu (cores auto)" in model.choice.reason
    model.close()
