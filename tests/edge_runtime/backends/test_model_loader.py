"""Loading a bundle: checks, backend choice, golden reproduction, and refusing anything that does not pass."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import edge_runtime.model_loader as model_loader
from edge_runtime.backends.onnxruntime import OnnxRuntimeBackendConfig
from edge_runtime.backends.tflite import TfliteBackendConfig
from edge_runtime.board import load_board
from edge_runtime.bundle import BundleError, BundleSignatureError, GoldenSpec, pack_golden, read_bundle, write_bundle
from edge_runtime.model_loader import ModelLoadError, load_bundle_model


@pytest.fixture(scope="module")
def bundle_path(activity_bundle) -> Path:
    """The session's activity bundle (x86_64, int8); tests that change it write copies."""
    return activity_bundle


@pytest.fixture(scope="module")
def board():
    return load_board("x86_64")


def load(path: Path, board, **overrides):
    arguments = {"name": None, "backends": None, "board": board, "trusted_keys": None, "require_signature": False}
    return load_bundle_model(path, **(arguments | overrides))


def repack(source: Path, target: Path, *, outputs=None, golden: GoldenSpec | None = None, key=None,
           card: dict | None = None, manifest_inputs=None) -> Path:
    """The same bundle written again through write_bundle: a valid manifest, optionally other golden data, another
    model card or other input specs."""
    bundle = read_bundle(source)
    manifest = bundle.manifest
    if golden is not None:
        manifest = manifest.model_copy(update={"golden": golden})
    if card is not None:
        manifest = manifest.model_copy(update={"card": card})
    if manifest_inputs is not None:
        manifest = manifest.model_copy(update={"inputs": manifest_inputs})
    inputs, expected = bundle.golden()
    members = {
        manifest.model.path: bundle.model_bytes(),
        manifest.golden.path: pack_golden(inputs, outputs if outputs is not None else expected),
    }
    write_bundle(target, manifest, members, signing_key=key)
    return target


def test_a_good_bundle_loads_and_reproduces_its_golden_output(bundle_path, board):
    model = load(bundle_path, board)
    manifest = read_bundle(bundle_path).manifest
    assert model.name == "activity"
    assert model.card is not None and model.card.labels == ["badminton", "running", "standing", "walking"]
    assert (model.input_name, model.output_name) == ("x", "logits")
    assert 0 <= model.golden_max_error <= manifest.golden.atol
    described = model.describe()
    assert described["bundle"] == str(bundle_path)
    assert described["model_sha256"] == manifest.files["model.onnx"].sha256
    assert described["precision"] == manifest.model.precision
    assert described["target_board"] == "x86_64"
    assert described["signature"] == "unsigned"
    # the backend holds the model: neither the bundle nor onnxruntime's Python session keeps its bytes too
    with pytest.raises(BundleError, match="released"):
        model.bundle.model_bytes()
    assert model.choice.backend._session._model_bytes is None
    assert model.bundle.golden()[0].keys() == {"x"}  # the golden output stays, for `bench`
    assert described["backend"] == {
        "active": "onnxruntime:CPUExecutionProvider",
        "degraded": False,
        "reason": None,
        "attempts": ["onnxruntime:CPUExecutionProvider: ok"],
    }
    logits = model.run({"x": np.zeros((2, 6, 50), np.float32)})["logits"]
    assert logits.shape == (2, 4)
    model.close()


def test_config_name_overrides_the_manifest_name(bundle_path, board):
    assert load(bundle_path, board, name="wrist", warmup_runs=0).name == "wrist"


def test_wrong_golden_outputs_are_not_reproduced_and_nothing_stays_loaded(bundle_path, board, tmp_path, monkeypatch):
    expected = read_bundle(bundle_path).golden()[1]
    wrong = repack(bundle_path, tmp_path / "wrong.bundle", outputs={"logits": expected["logits"] + 1.0})
    chosen = []
    real_choose = model_loader.choose_backend

    def spy(*args, **kwargs):
        chosen.append(real_choose(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(model_loader, "choose_backend", spy)
    with pytest.raises(ModelLoadError, match="golden output not reproduced on onnxruntime:CPUExecutionProvider") as err:
        load(wrong, board)
    assert str(wrong) in str(err.value)
    assert "max abs error 1 > atol" in str(err.value)
    assert isinstance(err.value, BundleError)
    with pytest.raises(RuntimeError, match="closed"):
        chosen[0].backend.run(read_bundle(bundle_path).golden()[0])


def test_a_different_top1_class_is_refused_even_within_tolerance(bundle_path, board, tmp_path):
    logits = read_bundle(bundle_path).golden()[1]["logits"]
    swapped = logits.copy()
    swapped[0, [logits[0].argmax(), logits[0].argmin()]] = swapped[0, [logits[0].argmin(), logits[0].argmax()]]
    loose = GoldenSpec(rtol=0.0, atol=100.0, top1_must_match=True)
    path = repack(bundle_path, tmp_path / "top1.bundle", outputs={"logits": swapped}, golden=loose)
    with pytest.raises(ModelLoadError, match="top-1 class"):
        load(path, board)


def test_a_tampered_member_is_a_bundle_error(bundle_path, board, tmp_path):
    tampered = tmp_path / "tampered.bundle"
    with zipfile.ZipFile(bundle_path) as original, zipfile.ZipFile(tampered, "w") as copy:
        for info in original.infolist():
            data = original.read(info.filename)
            copy.writestr(info, data[:-4] + b"\x00\x00\x00\x01" if info.filename == "model.onnx" else data)
    with pytest.raises(BundleError, match="checksum mismatch"):
        load(tampered, board)


def test_a_required_signature_that_is_missing_is_refused(bundle_path, board):
    key = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(BundleSignatureError, match="not signed"):
        load(bundle_path, board, trusted_keys=[key], require_signature=True)


def test_a_signed_bundle_with_a_trusted_key_loads_verified(bundle_path, board, tmp_path):
    key = Ed25519PrivateKey.generate()
    signed = repack(bundle_path, tmp_path / "signed.bundle", key=key)
    model = load(signed, board, trusted_keys=[key.public_key()], require_signature=True)
    assert model.describe()["signature"].startswith("verified")
    with pytest.raises(BundleSignatureError):
        load(signed, board, trusted_keys=[Ed25519PrivateKey.generate().public_key()], require_signature=True)


def test_a_bundle_for_another_board_warns_but_loads(bundle_path, caplog):
    pi = load_board("raspberry-pi-4")
    with caplog.at_level(logging.WARNING, logger="edge_runtime.model_loader"):
        model = load(bundle_path, pi, warmup_runs=0)
    assert model.choice.active == "onnxruntime:CPUExecutionProvider"
    assert any("built for board 'x86_64' (x86_64)" in record.getMessage() for record in caplog.records)


def test_no_backend_for_the_bundle_is_a_model_load_error(bundle_path, board):
    with pytest.raises(ModelLoadError, match="no backend can run this onnx model") as error:
        load(bundle_path, board, backends=[TfliteBackendConfig(type="tflite")])
    assert str(bundle_path) in str(error.value)


def test_degraded_backend_is_reported_in_describe(bundle_path, board):
    providers = ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    model = load(bundle_path, board, backends=[OnnxRuntimeBackendConfig(type="onnxruntime", providers=providers)])
    backend = model.describe()["backend"]
    assert backend["degraded"] is True and "TensorrtExecutionProvider unavailable" in backend["reason"]


def _card_with(bundle_path: Path, **changes: dict) -> dict:
    """The bundle's own card with some `input` / `output` keys changed."""
    card = dict(read_bundle(bundle_path).manifest.card)
    for section, values in changes.items():
        card[section] = {**card.get(section, {}), **values}
    return card


def test_a_card_whose_window_differs_from_the_model_is_refused_at_load(bundle_path, board, tmp_path, monkeypatch):
    """Such a bundle used to load, pass `check`, and then fail every batch the daemon built from its card."""
    path = repack(bundle_path, tmp_path / "window40.bundle", card=_card_with(bundle_path, input={"window": 40}))
    chosen = []
    real_choose = model_loader.choose_backend

    def spy(*args, **kwargs):
        chosen.append(real_choose(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(model_loader, "choose_backend", spy)
    with pytest.raises(ModelLoadError, match="card does not match the model") as error:
        load(path, board, warmup_runs=0)
    message = str(error.value)
    assert "window 40" in message and "[batch, 6, 40]" in message  # what the card says
    assert "'x' has shape" in message and "6, 50]" in message  # what the model takes
    with pytest.raises(RuntimeError, match="closed"):  # nothing stays loaded
        chosen[0].backend.run(read_bundle(bundle_path).golden()[0])


def test_card_input_and_output_names_must_be_the_models(bundle_path, board, tmp_path):
    wrong_input = repack(bundle_path, tmp_path / "in.bundle", card=_card_with(bundle_path, input={"name": "imu"}))
    with pytest.raises(ModelLoadError, match=r"card's input 'imu' is not an input of the model \(it takes: x\)"):
        load(wrong_input, board, warmup_runs=0)
    wrong_output = repack(bundle_path, tmp_path / "out.bundle", card=_card_with(bundle_path, output={"name": "probs"}))
    with pytest.raises(ModelLoadError, match="card's output 'probs' is not an output of the model"):
        load(wrong_output, board, warmup_runs=0)


def test_a_card_shaped_batch_is_run_when_the_manifest_shape_is_symbolic(bundle_path, board, tmp_path):
    """Symbolic dimensions in the manifest cannot be compared: the batch of zeros built from the card catches it."""
    spec = read_bundle(bundle_path).manifest.inputs[0]
    symbolic = [spec.model_copy(update={"shape": ["batch", "channels", "time"]})]
    path = repack(bundle_path, tmp_path / "symbolic.bundle", card=_card_with(bundle_path, input={"window": 40}),
                  manifest_inputs=symbolic)
    with pytest.raises(ModelLoadError, match=r"a batch shaped as the model card says \(x \[1, 6, 40\]; window 40"):
        load(path, board, warmup_runs=0)
    fine = repack(bundle_path, tmp_path / "symbolic-ok.bundle", manifest_inputs=symbolic)
    assert load(fine, board, warmup_runs=0).input_name == "x"
