"""Data for a recurrent model with a constant input: the npz holds only the streamed input, the card gives the
constant, and the state inputs are what the original model produces over each recording. That is what int8 is
calibrated on (the calibrator's batches), while every stage is run over the sequence with its own state."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from converter.data import Dataset
from converter.errors import ConversionError
from converter.model_info import onnx_tensor_infos
from converter.passes.quantize import DatasetReader
from converter.sequence import load_stream_data, plan_for, record_states, run_sequence
from edge_runtime.card import ModelCard
from tests.support.stateful_model import WINDOW, accumulator_card, build_accumulator, expected_totals

K = 2


@pytest.fixture
def model():
    return build_accumulator()


@pytest.fixture
def data(model, tmp_path) -> tuple[Dataset, np.ndarray]:
    rows = np.random.default_rng(0).normal(size=(8, WINDOW)).astype(np.float32)
    path = tmp_path / "data.npz"
    np.savez(path, x=rows, recording=np.array([7, 7, 7, 7, 7, 9, 9, 9]))
    card = ModelCard.model_validate(accumulator_card(k=K))
    inputs, outputs = onnx_tensor_infos(model.graph.input), onnx_tensor_infos(model.graph.output)
    plan = plan_for(card, None, inputs, outputs)
    notes: list[str] = []
    dataset = load_stream_data(path, card, plan, inputs, what="calibration", notes=notes)
    return dataset, rows


def run_one(model):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda feed: dict(zip(["y", "stateN"], session.run(["y", "stateN"], feed), strict=True))


def test_the_sequence_is_run_with_the_state_carried_per_recording(model, data):
    dataset, rows = data
    assert dataset.sequence.starts.tolist() == [0, 5] and list(dataset.constants) == ["k"]
    outputs = run_sequence(run_one(model), dataset)
    want = expected_totals(rows.reshape(-1), K, resets_before={5})
    assert outputs["y"][:, 0] == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert outputs["stateN"][:, 0] == pytest.approx(want, rel=1e-5, abs=1e-6)  # the state fed to the next window


def test_calibration_batches_carry_the_states_the_original_produced(model, data):
    dataset, rows = data
    recorded = record_states(dataset, run_one(model))
    totals = expected_totals(rows.reshape(-1), K, resets_before={5})
    fed_before = [0.0, *totals[:4], 0.0, *totals[5:7]]  # zeros at the start of each recording
    assert recorded.inputs["state"][:, 0, 0] == pytest.approx(fed_before, rel=1e-5, abs=1e-6)
    reader = DatasetReader(recorded, batch_size=16)  # what quantize_static is given
    feeds = list(iter(reader.get_next, None))
    assert len(feeds) == 8  # one window per batch: a state tensor has no batch axis to stack along
    assert all(feed["state"].shape == (1, 1) and feed["k"].dtype == np.int64 and feed["k"].shape == ()
               for feed in feeds)
    # out of order (a subset), the stored states stand in for the sequence
    subset = recorded.subset(np.array([6, 2]))
    assert subset.sequence is None
    assert run_one(model)(subset.first())["y"][0, 0] == pytest.approx(totals[6], rel=1e-5, abs=1e-6)


def test_arrays_that_match_nothing_are_refused(model, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((2, WINDOW), np.float32), extra=np.zeros(2))
    card = ModelCard.model_validate(accumulator_card(k=K))
    inputs, outputs = onnx_tensor_infos(model.graph.input), onnx_tensor_infos(model.graph.output)
    with pytest.raises(ConversionError, match="arrays extra match no model input"):
        load_stream_data(path, card, plan_for(card, None, inputs, outputs), inputs, what="eval", notes=[])
