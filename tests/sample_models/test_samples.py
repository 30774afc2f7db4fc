"""The sample models are the converter's test inputs, checked the way the converter relies on them.

Valid ONNX with BatchNorm still in it, a dynamic batch, a card that agrees with the graph and with the data
files, and an accuracy that a broken export would not reach.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import sample_models as samples
from edge_runtime.card import ImageInput, ModelCard, TimeSeriesInput
from edge_runtime.yaml_source import load_model
from sample_models import MAX_CALIBRATION, SAMPLE_NAMES, SampleModel, build_sample
from sample_models.__main__ import main
from sample_models.cache import cached_entry
from tests.support.tiers import tier

# What the models reach (activity 1.00 on the 120 windows of the eval half of the test recordings, digits ~0.997 on
# 360 test images) minus margin.
ACCURACY_FLOOR = {"activity": 0.95, "activity_long": 0.95, "activity_wide": 0.95, "digits": 0.97}


@pytest.fixture(params=SAMPLE_NAMES)
@tier("slow")
def sample(request: pytest.FixtureRequest) -> SampleModel:
    return request.getfixturevalue(f"{request.param}_sample")


def _input_dims(model: onnx.ModelProto) -> list[int | str]:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [dim.dim_param or dim.dim_value for dim in dims]


def test_onnx_is_valid_and_keeps_batchnorm(sample: SampleModel) -> None:
    model = onnx.load(str(sample.onnx_path))
    onnx.checker.check_model(model, full_check=True)
    ops = [node.op_type for node in model.graph.node]
    assert "BatchNormalization" in ops, "the fuse pass needs unfused BatchNorm in the sample models"
    assert ops.count("BatchNormalization") == ops.count("Conv")
    assert model.opset_import[0].version == 17
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["logits"]


def test_batch_dimension_is_dynamic(sample: SampleModel) -> None:
    model = onnx.load(str(sample.onnx_path))
    dims = _input_dims(model)
    assert isinstance(dims[0], str) and dims[0], f"batch axis is fixed: {dims}"
    assert all(isinstance(dim, int) and dim > 0 for dim in dims[1:]), f"only the batch axis may vary: {dims}"
    session = ort.InferenceSession(str(sample.onnx_path), providers=["CPUExecutionProvider"])
    x = np.load(sample.eval_path)["x"]
    for batch in (1, 3):
        (logits,) = session.run(None, {"x": x[:batch]})
        assert logits.shape[0] == batch


def test_card_validates_and_matches_the_graph(sample: SampleModel) -> None:
    card = load_model(sample.card_path, ModelCard)
    model = onnx.load(str(sample.onnx_path))
    assert card.name == sample.name
    assert card.input.model_shape() == _input_dims(model)[1:]
    assert card.input.name == "x" and card.output.name == "logits"
    assert card.output.kind == "classification" and card.output.scores == "logits"
    classes = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    assert card.labels is not None and len(card.labels) == classes


def test_data_files_are_model_ready(sample: SampleModel) -> None:
    card = load_model(sample.card_path, ModelCard)
    for path, limit in ((sample.calibration_path, MAX_CALIBRATION), (sample.eval_path, None)):
        data = np.load(path)
        x, y = data["x"], data["y"]
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert list(x.shape[1:]) == card.input.model_shape()
        assert len(x) == len(y) > 0 and (limit is None or len(x) <= limit)
        assert set(np.unique(y)) == set(range(len(card.labels or [])))
        assert np.isfinite(x).all()


def test_activity_data_follows_the_card(activity_sample: SampleModel) -> None:
    """Raw recordings + the card's window/hop/normalize reproduce the npz inputs, recording by recording; the eval
    data is the eval half of the test recordings (the other half is held out from everything)."""
    from sample_models.datasets import eval_and_held_out, load_basic_motions

    card = load_model(activity_sample.card_path, ModelCard)
    assert isinstance(card.input, TimeSeriesInput) and card.input.normalize is not None
    assert card.labels == ["badminton", "running", "standing", "walking"]
    assert card.input.channel_names == ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
    raw = load_basic_motions()
    evaluated, held_out = eval_and_held_out(raw.y_test)
    assert len(evaluated) == len(held_out) == 20 and not set(evaluated) & set(held_out)
    mean = np.asarray(card.input.normalize.mean, dtype=np.float32)[:, None]
    std = np.asarray(card.input.normalize.std, dtype=np.float32)[:, None]
    window, hop = card.input.window, card.input.hop
    for path, recordings, labels in (
        (activity_sample.calibration_path, raw.x_train, raw.y_train),
        (activity_sample.eval_path, raw.x_test[evaluated], raw.y_test[evaluated]),
    ):
        data = np.load(path)
        expected = [
            (rec[:, start : start + window] - mean) / std
            for rec in recordings
            for start in range(0, rec.shape[1] - window + 1, hop)
        ]
        count = min(len(expected), len(data["x"]))
        np.testing.assert_allclose(data["x"][:count], np.stack(expected[:count]), atol=1e-5)
        np.testing.assert_array_equal(data["y"], np.repeat(labels, len(expected) // len(recordings))[:count])


def test_digits_data_follows_the_card(digits_sample: SampleModel) -> None:
    """Raw 0..16 pixels times the card's scale are the npz inputs, in the data set's own order."""
    from sample_models.datasets import load_digits_images

    card = load_model(digits_sample.card_path, ModelCard)
    assert isinstance(card.input, ImageInput) and card.input.normalize is None
    assert card.labels == [str(digit) for digit in range(10)]
    raw = load_digits_images()
    calibration, evaluation = np.load(digits_sample.calibration_path), np.load(digits_sample.eval_path)
    count = len(calibration["x"])
    assert count == MAX_CALIBRATION
    np.testing.assert_allclose(calibration["x"][:, 0], raw.x_train[:count] * card.input.scale, atol=1e-6)
    np.testing.assert_array_equal(calibration["y"], raw.y_train[:count])
    np.testing.assert_allclose(evaluation["x"][:, 0], raw.x_test * card.input.scale, atol=1e-6)
    np.testing.assert_array_equal(evaluation["y"], raw.y_test)


def test_accuracy_on_the_test_split(sample: SampleModel) -> None:
    data = np.load(sample.eval_path)
    session = ort.InferenceSession(str(sample.onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"x": data["x"]})
    accuracy = float((logits.argmax(axis=1) == data["y"]).mean())
    assert accuracy >= ACCURACY_FLOOR[sample.name], f"{sample.name}: accuracy {accuracy:.3f}"


def test_cache_hands_out_the_same_files_without_retraining(
    sample: SampleModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = [path.stat().st_mtime_ns for path in sample.paths]

    def no_training(name: str, directory: object) -> SampleModel:
        raise AssertionError(f"{name} was rebuilt although it is cached")

    monkeypatch.setattr(samples, "write_sample", no_training)
    again = build_sample(sample.name)
    assert again == sample
    assert [path.stat().st_mtime_ns for path in again.paths] == before


def test_cache_builds_once_and_never_leaves_half_entries(tmp_path) -> None:
    calls: list[str] = []

    def build(directory) -> None:
        calls.append(directory.name)
        (directory / "model.txt").write_text("done")

    def crash(directory) -> None:
        (directory / "partial.txt").write_text("half")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        cached_entry("toy", "1", crash, tmp_path)
    leftovers = [path.name for path in tmp_path.iterdir() if not path.name.endswith(".lock")]
    assert leftovers == [], "a crashed build left files behind"
    first = cached_entry("toy", "1", build, tmp_path)
    second = cached_entry("toy", "1", build, tmp_path)
    assert first == second and len(calls) == 1
    assert (first / "model.txt").read_text() == "done"
    assert cached_entry("toy", "2", build, tmp_path) != first, "SAMPLE_VERSION must be part of the key"


def test_unknown_sample_name_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    with pytest.raises(ValueError, match="activity, activity_long, activity_wide, digits"):
        build_sample("imagenet")
    with pytest.raises(SystemExit):
        main(["imagenet", str(tmp_path)])
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_command_line_copies_the_four_files(
    activity_sample: SampleModel, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["activity", str(tmp_path / "out")]) == 0
    copied = SampleModel.in_directory(tmp_path / "out", "activity")
    assert capsys.readouterr().out.split() == [str(path) for path in copied.paths]
    for source, copy in zip(activity_sample.paths, copied.paths, strict=True):
        assert copy.read_bytes() == source.read_bytes()


def test_command_line_writes_the_replayable_recording(activity_sample: SampleModel, tmp_path) -> None:
    """The held-out recordings as one stream in class runs: 40 recordings x 100 samples, 10 Hz, labelled."""
    assert main(["activity", str(tmp_path), "--recording"]) == 0
    lines = (tmp_path / "activity.recording.csv").read_text().splitlines()
    assert lines[0] == "ts,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,label"
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 4000
    assert [float(row[0]) for row in rows[:3]] == [0.0, 0.1, 0.2]
    labels = [row[-1] for row in rows]
    runs = [label for index, label in enumerate(labels) if index == 0 or labels[index - 1] != label]
    assert len(runs) == 4 and len(set(runs)) == 4  # one long run per activity
