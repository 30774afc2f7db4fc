"""Every bad input is one clear message and a non-zero exit, never a traceback, never a partial bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from converter.cli import main


def run(capsys, *args: str) -> tuple[int, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return code, text


def base_args(sample, out: Path, **override) -> list:
    values = {
        "model": sample.onnx_path,
        "--card": sample.card_path,
        "--calibration": sample.calibration_path,
        "--eval": sample.eval_path,
        "--target": "x86_64",
    }
    values.update(override)
    args = [values.pop("model"), "-o", out]
    for key, value in values.items():
        if value is not None:
            args += [key, value]
    return args + ["--no-latency"]


def test_not_a_model_file(activity_sample, tmp_path, capsys):
    bogus = tmp_path / "notes.onnx"
    bogus.write_text("these are not the weights you are looking for\n")
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", model=bogus))
    assert code == 2
    assert "not an ONNX or TFLite model" in text
    assert not (tmp_path / "o.bundle").exists()


def test_truncated_model(activity_sample, tmp_path, capsys):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(activity_sample.onnx_path.read_bytes()[:700])
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", model=truncated))
    assert code == 2
    assert "corrupt" in text or "not an ONNX" in text


def test_missing_model(activity_sample, tmp_path, capsys):
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", model=tmp_path / "nope.onnx"))
    assert code == 2 and "model not found" in text


def test_unsupported_opset(activity_sample, tmp_path, capsys):
    model = onnx.load(str(activity_sample.onnx_path))
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 5
    old = tmp_path / "old.onnx"
    onnx.save(model, str(old))
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", model=old))
    assert code == 2 and "unsupported opset 5" in text


def test_calibration_shape_mismatch_names_input_expected_and_given(activity_sample, tmp_path, capsys):
    data = np.load(activity_sample.calibration_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=data["x"][:, :5, :], y=data["y"])
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", **{"--calibration": bad}))
    assert code == 2
    assert "input 'x'" in text and "expected 6" in text and "is 5" in text


def test_calibration_dtype_mismatch(activity_sample, tmp_path, capsys):
    data = np.load(activity_sample.calibration_path)
    bad = tmp_path / "ints.npz"
    np.savez(bad, x=(data["x"] * 100).astype(np.int32))
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", **{"--calibration": bad}))
    assert code == 2 and "dtype int32" in text and "float32" in text


def test_calibration_with_nans(activity_sample, tmp_path, capsys):
    data = np.load(activity_sample.calibration_path)
    x = data["x"].copy()
    x[3, 2, 7] = np.nan
    bad = tmp_path / "nan.npz"
    np.savez(bad, x=x, y=data["y"])
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", **{"--calibration": bad}))
    assert code == 2 and "NaN" in text and "sample 3" in text


def test_wrong_array_name(activity_sample, tmp_path, capsys):
    data = np.load(activity_sample.calibration_path)
    bad = tmp_path / "named.npz"
    np.savez(bad, imu=data["x"])
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", **{"--calibration": bad}))
    assert code == 2 and "imu" in text and "'x'" in text


def test_unknown_board_lists_known_boards(activity_sample, tmp_path, capsys):
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", **{"--target": "raspberry-pi-9"}))
    assert code == 2
    assert "unknown board 'raspberry-pi-9'" in text
    for board in ("x86_64", "generic-arm64", "raspberry-pi-4", "raspberry-pi-5", "jetson-orin"):
        assert board in text


def test_card_that_contradicts_the_model(activity_sample, tmp_path, capsys):
    card = yaml.safe_load(activity_sample.card_path.read_text())
    card["input"]["window"] = card["input"]["window"] + 7
    bad = tmp_path / "card.yaml"
    bad.write_text(yaml.safe_dump(card))
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", **{"--card": bad}))
    assert code == 2 and "card contradicts the model" in text


def test_card_labels_contradict_output_classes(activity_sample, tmp_path, capsys):
    card = yaml.safe_load(activity_sample.card_path.read_text())
    card["labels"] = card["labels"] + ["skydiving"]
    bad = tmp_path / "card.yaml"
    bad.write_text(yaml.safe_dump(card))
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", **{"--card": bad}))
    assert code == 2 and "labels" in text and "classes" in text


def test_card_typo_names_file_line_key_and_suggestion(activity_sample, tmp_path, capsys):
    text = activity_sample.card_path.read_text().replace("window:", "windw:")
    bad = tmp_path / "card.yaml"
    bad.write_text(text)
    line = next(number for number, row in enumerate(text.splitlines(), start=1) if "windw:" in row)
    code, output = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", **{"--card": bad}))
    assert code == 2
    assert f"{bad}:{line}" in output
    assert "input.windw" in output and "Did you mean 'window'?" in output


def test_dynamic_dimension_without_card_is_fixed_from_the_data(activity_sample, tmp_path, capsys):
    model = onnx.load(str(activity_sample.onnx_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].Clear()
    dims[2].dim_param = "time"
    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(model, str(dynamic))
    args = base_args(activity_sample, tmp_path / "o.bundle", model=dynamic, **{"--card": None}) + ["--skip", "quantize"]
    code, text = run(capsys, *args)
    assert code == 0, text
    window = np.load(activity_sample.calibration_path)["x"].shape[2]
    assert f"axis 2 (written 'time') fixed to {window} from the calibration data" in text


def test_dynamic_dimension_resolved_by_card(activity_sample, tmp_path, capsys):
    model = onnx.load(str(activity_sample.onnx_path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].Clear()
    dims[2].dim_param = "time"
    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(model, str(dynamic))
    args = base_args(activity_sample, tmp_path / "o.bundle", model=dynamic) + ["--skip", "quantize"]
    code, text = run(capsys, *args)
    assert code == 0, text
    assert "fixed to" in text


def test_no_data_at_all(activity_sample, tmp_path, capsys):
    args = base_args(activity_sample, tmp_path / "o.bundle", **{"--calibration": None, "--eval": None})
    code, text = run(capsys, *args)
    assert code == 2 and "real data" in text


def test_int8_without_calibration(activity_sample, tmp_path, capsys):
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", **{"--calibration": None}))
    assert code == 2 and "--calibration" in text


def test_precision_the_board_does_not_support(activity_sample, tmp_path, capsys):
    args = base_args(activity_sample, tmp_path / "o.bundle") + ["--quantize", "fp16"]
    code, text = run(capsys, *args)
    assert code == 2 and "does not support --quantize fp16" in text


def test_onnx_model_for_a_tflite_only_board(activity_sample, tmp_path, capsys):
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle", **{"--target": "coral-usb"}))
    assert code == 2 and "TFLite" in text and "edgetpu_compiler" in text


def test_unknown_pass_name(activity_sample, tmp_path, capsys):
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle") + ["--skip", "fuze"])
    assert code == 2 and "fuze" in text and "fuse" in text


@pytest.mark.parametrize("drop", ["-0.1", "1.5"])
def test_accuracy_drop_out_of_range(activity_sample, tmp_path, capsys, drop):
    code, text = run(capsys, *base_args(activity_sample, tmp_path / "o.bundle") + ["--max-accuracy-drop", drop])
    assert code == 2 and "--max-accuracy-drop" in text
