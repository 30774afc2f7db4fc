"""The hand-written TFLite digits model is a real model: LiteRT loads it and it computes the trained MLP.

Converter tests rely on it to check TFLite packaging and accuracy, so a wrong transpose, a missing fused
ReLU or a malformed flatbuffer must fail here, next to the writer, not somewhere in the converter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tflite as schema
import yaml
from ai_edge_litert.interpreter import Interpreter

from edge_runtime.card import FeatureInput, ModelCard
from tests.support.tflite_mlp import (
    CALIBRATION_ROWS,
    DIGITS_LABELS,
    DigitsSplit,
    build_tflite_digits_sample,
    build_tflite_mlp,
    train_digits_mlp,
    write_tflite_mlp,
)
from tests.support.tiers import tier

ROWS = 50


@pytest.fixture(scope="module")
@tier("slow")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, DigitsSplit, Path]:
    classifier, split = train_digits_mlp(seed=0)
    path = write_tflite_mlp(classifier, tmp_path_factory.mktemp("mlp") / "digits_mlp.tflite")
    return classifier, split, path


def _interpreter(path: Path) -> Interpreter:
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def _run_rows(interpreter: Interpreter, x: np.ndarray) -> np.ndarray:
    """One invoke per row: the model's stored batch is 1, as a device would run it."""
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    rows = []
    for row in x:
        interpreter.set_tensor(input_index, row[None, :].astype(np.float32))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(output_index)[0].copy())
    return np.stack(rows)


def test_io_details(trained: tuple[object, DigitsSplit, Path]) -> None:
    interpreter = _interpreter(trained[2])
    (given,) = interpreter.get_input_details()
    (output,) = interpreter.get_output_details()
    assert given["name"] == "x"
    assert given["shape"].tolist() == [1, 64]
    assert given["shape_signature"].tolist() == [-1, 64]
    assert given["dtype"] == np.float32
    assert output["name"] == "probabilities"
    assert output["shape"].tolist() == [1, 10]
    assert output["shape_signature"].tolist() == [-1, 10]
    assert output["dtype"] == np.float32
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["x"], "outputs": ["probabilities"]}
    }


def test_flatbuffer_follows_conventions(trained: tuple[object, DigitsSplit, Path]) -> None:
    data = trained[2].read_bytes()
    assert data[4:8] == b"TFL3"
    model = schema.Model.GetRootAs(data, 0)
    assert model.Version() == 3
    assert model.Buffers(0).DataLength() == 0
    assert model.SubgraphsLength() == 1
    subgraph = model.Subgraphs(0)
    codes = [model.OperatorCodes(subgraph.Operators(i).OpcodeIndex()).BuiltinCode() for i in range(3)]
    assert codes == [schema.BuiltinOperator.FULLY_CONNECTED] * 2 + [schema.BuiltinOperator.SOFTMAX]
    assert subgraph.OperatorsLength() == 3


def test_matches_predict_proba(trained: tuple[object, DigitsSplit, Path]) -> None:
    classifier, split, path = trained
    x = split.x_test[:ROWS]
    got = _run_rows(_interpreter(path), x)
    np.testing.assert_allclose(got, classifier.predict_proba(x), atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_loads_from_bytes_too(trained: tuple[object, DigitsSplit, Path]) -> None:
    classifier, split, path = trained
    interpreter = Interpreter(model_content=path.read_bytes())
    interpreter.allocate_tensors()
    got = _run_rows(interpreter, split.x_test[:5])
    np.testing.assert_allclose(got, classifier.predict_proba(split.x_test[:5]), atol=1e-5, rtol=0)


def test_accuracy_on_test_split(trained: tuple[object, DigitsSplit, Path]) -> None:
    _, split, path = trained
    probabilities = _run_rows(_interpreter(path), split.x_test)
    accuracy = float((probabilities.argmax(axis=1) == split.y_test).mean())
    assert accuracy >= 0.9, accuracy


def test_dynamic_batch_matches_row_by_row(trained: tuple[object, DigitsSplit, Path]) -> None:
    _, split, path = trained
    x = split.x_test[:32]
    expected = _run_rows(_interpreter(path), x)
    interpreter = _interpreter(path)
    input_index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, [32, 64], strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_index, x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert got.shape == (32, 10)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_generic_layers_without_softmax_or_dynamic_batch() -> None:
    """Two hidden layers, a linear head and a fixed batch: the writer is not tied to the digits model."""
    rng = np.random.default_rng(0)
    layers = [
        (rng.normal(size=(5, 7)).astype(np.float32), rng.normal(size=7).astype(np.float32), "relu"),
        (rng.normal(size=(7, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32), "relu6"),
        (rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32), "identity"),
    ]
    interpreter = Interpreter(
        model_content=build_tflite_mlp(layers, input_name="in", output_name="out", dynamic_batch=False)
    )
    interpreter.allocate_tensors()
    (given,) = interpreter.get_input_details()
    (output,) = interpreter.get_output_details()
    assert (given["name"], output["name"]) == ("in", "out")
    assert given["shape_signature"].tolist() == [1, 5]
    x = rng.normal(size=(6, 5)).astype(np.float32)
    expected = x
    for weights, bias, activation in layers:
        expected = expected @ weights + bias
        if activation == "relu":
            expected = np.maximum(expected, 0)
        elif activation == "relu6":
            expected = np.clip(expected, 0, 6)
    np.testing.assert_allclose(_run_rows(interpreter, x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # trains the TFLite digits MLP
def test_build_sample_writes_model_card_and_data(tmp_path: Path) -> None:
    paths = build_tflite_digits_sample(tmp_path)
    assert set(paths) == {"model", "card", "calibration", "eval"}
    assert {path.name for path in paths.values()} == {
        "digits_mlp.tflite",
        "digits_mlp.card.yaml",
        "digits_mlp.calibration.npz",
        "digits_mlp.eval.npz",
    }

    card = ModelCard.model_validate(yaml.safe_load(paths["card"].read_text()))
    assert isinstance(card.input, FeatureInput)
    assert card.input.features == 64
    assert card.labels == DIGITS_LABELS
    assert (card.output.kind, card.output.name, card.output.scores) == (
        "classification",
        "probabilities",
        "probabilities",
    )

    with np.load(paths["calibration"]) as calibration:
        assert set(calibration.files) == {"x", "y"}
        assert calibration["x"].dtype == np.float32 and calibration["y"].dtype == np.int64
        assert calibration["x"].shape == (CALIBRATION_ROWS, 64)
        assert calibration["y"].shape == (CALIBRATION_ROWS,)
    with np.load(paths["eval"]) as evaluation:
        x, y = evaluation["x"], evaluation["y"]
    assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape[1] == 64 and len(x) == len(y)
    assert x.min() >= 0.0 and x.max() <= 1.0

    probabilities = _run_rows(_interpreter(paths["model"]), x)
    assert float((probabilities.argmax(axis=1) == y).mean()) >= 0.9
