"""The TFLite backend plugin: delegates in order, and a missing or broken delegate falling back to the CPU."""

from __future__ import annotations

import ctypes.util
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from converter.cli import main
from edge_runtime.backends import tflite
from edge_runtime.backends.base import BackendUnavailable
from edge_runtime.backends.select import choose_backend
from edge_runtime.backends.tflite import TfliteBackendConfig
from edge_runtime.board import load_board
from edge_runtime.model_loader import load_bundle_model
from tests.support.tflite_mlp import build_tflite_digits_sample, build_tflite_mlp, load_digits_split
from tests.support.tiers import tier

EDGETPU = "libedgetpu.so.1"  # the Coral delegate: not installed on this machine
CPU = "cpu (XNNPACK)"  # ai-edge-litert is what the test environment has


@pytest.fixture(scope="module")
@tier("slow")
def sample(tmp_path_factory) -> dict[str, Path]:
    return build_tflite_digits_sample(tmp_path_factory.mktemp("tflite"))


@pytest.fixture(scope="module")
def model_bytes(sample) -> bytes:
    return sample["model"].read_bytes()


@pytest.fixture(scope="module")
def bundle_path(sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tflite-bundle") / "digits.bundle"
    args = [str(sample["model"]), "-o", str(out), "--target", "x86_64", "--card", str(sample["card"]),
            "--eval", str(sample["eval"]), "--no-latency"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def board():
    return load_board("x86_64")


def config(delegates: list[str] | None = None) -> TfliteBackendConfig:
    return TfliteBackendConfig(type="tflite", delegates=delegates)


def test_runs_on_the_cpu_with_xnnpack(model_bytes, board):
    backend = tflite.open_backend(model_bytes, config(), board)  # x86_64 board: no delegates
    assert (backend.name, backend.device) == ("tflite", CPU)
    assert backend.max_batch is None
    assert [str(attempt) for attempt in backend.attempts] == [f"tflite:{CPU}: ok"]
    rows = load_digits_split().x_test[:8]
    expected = tflite.TfliteModel(model_bytes).run({"x": rows})[0]
    actual = backend.run({"x": rows})["probabilities"]
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
    assert actual.shape == (8, 10)


def test_fixed_batch_model_reports_it_and_still_runs_bigger_batches(board):
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(4, 3)).astype(np.float32), np.zeros(3, np.float32), "softmax")]
    backend = tflite.open_backend(build_tflite_mlp(layers, dynamic_batch=False), config(), board)
    assert backend.max_batch == 1
    assert backend.run({"x": np.ones((3, 4), np.float32)})["probabilities"].shape == (3, 3)


def test_missing_delegate_falls_back_to_the_cpu_and_says_degraded(model_bytes, board, caplog):
    with caplog.at_level(logging.WARNING, logger="edge_runtime.backends"):
        choice = choose_backend(model_bytes, "tflite", [config([EDGETPU])], board)
    assert choice.active == f"tflite:{CPU}"
    assert choice.degraded is True
    assert choice.reason.startswith(f"delegate {EDGETPU} failed to load (")
    assert "cannot open shared object file" in choice.reason  # the loader's own error
    assert choice.reason.endswith(f"running on tflite:{CPU}")
    assert choice.attempts[0].startswith(f"tflite:{EDGETPU}: failed to load")
    assert any(EDGETPU in record.getMessage() for record in caplog.records)


def test_a_file_that_is_not_a_library_is_a_failed_delegate_not_a_crash(model_bytes, board, tmp_path):
    garbage = tmp_path / "libgarbage.so"
    garbage.write_bytes(b"\x7fELF but not really" * 64)
    choice = choose_backend(model_bytes, "tflite", [config([str(garbage)])], board)
    assert choice.degraded and choice.active == f"tflite:{CPU}"
    assert f"delegate {garbage} failed to load" in choice.reason


@pytest.mark.skipif(not ctypes.util.find_library("m"), reason="needs libm")
def test_a_library_that_is_not_a_delegate_is_refused(model_bytes, board):
    libm = ctypes.util.find_library("m")
    backend = tflite.open_backend(model_bytes, config([libm]), board)
    assert backend.device == CPU
    assert "not a TFLite delegate library" in backend.attempts[0].outcome


def test_a_delegate_that_cannot_run_the_model_falls_back(model_bytes, board, monkeypatch):
    monkeypatch.setattr(tflite, "_library_problem", lambda path: None)
    not_a_delegate = lambda path, options=None: object()  # noqa: E731
    monkeypatch.setattr(tflite, "delegate_loader", lambda package: not_a_delegate)
    backend = tflite.open_backend(model_bytes, config(["libfake-npu.so"]), board)
    assert backend.device == CPU
    assert backend.attempts[0].outcome.startswith("cannot run the model (")


def test_explicit_empty_delegates_means_cpu_only(model_bytes):
    coral = load_board("coral-usb")  # the board's default would be libedgetpu.so.1
    assert tflite.open_backend(model_bytes, config([]), coral).attempts[0].device == CPU
    assert tflite.open_backend(model_bytes, config(), coral).attempts[0].device == EDGETPU


def test_an_invalid_model_fails_with_every_attempt(board):
    with pytest.raises(BackendUnavailable, match="cannot load the model"):
        tflite.open_backend(b"not a tflite model" * 10, config(), board)


def test_no_interpreter_package_is_backend_unavailable(monkeypatch, model_bytes, board):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(BackendUnavailable, match="no TFLite interpreter"):
        tflite.open_backend(model_bytes, config(), board)
    with pytest.raises(BackendUnavailable):
        tflite.check_installed()


def test_coral_bundle_without_the_edge_tpu_loads_degraded_and_reproduces_golden(bundle_path, board):
    model = load_bundle_model(
        bundle_path,
        name=None,
        backends=[config([EDGETPU])],
        board=board,
        trusted_keys=None,
        require_signature=False,
    )
    described = model.describe()["backend"]
    assert described["active"] == f"tflite:{CPU}" and described["degraded"] is True
    assert EDGETPU in described["reason"]
    assert model.golden_max_error <= model.bundle.manifest.golden.atol
    assert model.output_name == "probabilities"
    model.close()


def test_the_boards_delegate_options_reach_the_delegate(model_bytes, monkeypatch):
    loaded = []

    def load_delegate(path, options=None):
        loaded.append((path, options))
        raise ValueError("Failed to load delegate from libedgetpu.so.1")  # no Edge TPU here

    monkeypatch.setattr(tflite, "_library_problem", lambda path: None)
    monkeypatch.setattr(tflite, "delegate_loader", lambda package: load_delegate)
    backend = tflite.open_backend(model_bytes, config(), load_board("coral-usb"))
    assert loaded == [(EDGETPU, {"device": "usb"})]
    assert backend.device == CPU and backend.attempts[0].outcome.startswith("failed to load (Failed to load delegate")
    over = TfliteBackendConfig(type="tflite", delegate_options={EDGETPU: {"device": "usb:1"}})
    tflite.open_backend(model_bytes, over, load_board("coral-devboard"))
    assert loaded[-1] == (EDGETPU, {"device": "usb:1"})


def test_describe_installed_says_whether_each_delegate_loads():
    text = tflite.describe_installed(load_board("coral-usb"))
    assert text.startswith("ai_edge_litert ") and "CPU with XNNPACK" in text
    assert "; delegate libedgetpu.so.1 not loadable (libedgetpu.so.1: cannot open shared object file" in text
