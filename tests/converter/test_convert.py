"""edge-convert end to end on the real sample models: every pass, the report, the bundle it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from converter.cli import main
from edge_runtime.bundle import read_bundle


def convert(sample, out: Path, *extra: str) -> int:
    args = [
        str(sample.onnx_path),
        "-o",
        str(out),
        "--card",
        str(sample.card_path),
        "--calibration",
        str(sample.calibration_path),
        "--eval",
        str(sample.eval_path),
        *extra,
    ]
    if "--target" not in extra:
        args += ["--target", "x86_64"]
    return main(args)


def ops(model_bytes: bytes) -> list[str]:
    return [node.op_type for node in onnx.load_from_string(model_bytes).graph.node]


def activation_zero_point_types(model_bytes: bytes) -> set[int]:
    """Element types of the zero points of QuantizeLinear nodes (activations are what get quantized at run time)."""
    model = onnx.load_from_string(model_bytes)
    initializers = {init.name: init for init in model.graph.initializer}
    return {
        initializers[node.input[2]].data_type
        for node in model.graph.node
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in initializers
    }


@pytest.fixture(scope="module")
def activity_x86(activity_sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "activity.bundle"
    assert convert(activity_sample, out, "--no-latency") == 0
    return out


def test_int8_bundle_for_x86_uses_unsigned_activations_and_keeps_accuracy(activity_x86):
    bundle = read_bundle(activity_x86)
    manifest = bundle.manifest
    assert manifest.model.format == "onnx"
    assert manifest.model.precision in ("int8", "mixed")
    graph_ops = ops(bundle.model_bytes())
    assert "QuantizeLinear" in graph_ops and "DequantizeLinear" in graph_ops
    assert "BatchNormalization" not in graph_ops  # fused
    assert activation_zero_point_types(bundle.model_bytes()) == {onnx.TensorProto.UINT8}
    report = manifest.verification
    assert [stage["stage"] for stage in report["stages"]][:2] == ["original", "fused"]
    assert report["gate"]["passed"] is True
    assert report["gate"]["loss"] <= 0.005
    assert report["passes"] == {
        "check": "ran",
        "fuse": "ran",
        "quantize": "ran (int8)",
        "verify": "ran",
        "reference": "ran",
    }
    methods = {trial["method"] for trial in report["calibration"]}
    assert methods == {"minmax", "entropy", "percentile"}
    assert sum(trial["chosen"] for trial in report["calibration"]) == 1


def test_arm_board_gets_signed_activations(activity_sample, tmp_path):
    out = tmp_path / "activity-pi.bundle"
    assert convert(activity_sample, out, "--target", "raspberry-pi-4", "--no-latency") == 0
    bundle = read_bundle(out)
    assert activation_zero_point_types(bundle.model_bytes()) == {onnx.TensorProto.INT8}
    assert bundle.manifest.target.board == "raspberry-pi-4"
    assert bundle.manifest.target.arch == "aarch64"
    assert any("not verified" in note for note in bundle.manifest.verification["notes"])


def test_fused_graph_matches_original_and_drops_batchnorm(activity_x86, activity_sample):
    report = read_bundle(activity_x86).manifest.verification
    original, fused = report["stages"][0], report["stages"][1]
    assert fused["nodes"] < original["nodes"]
    assert fused["agreement"] == 1.0
    assert fused["cosine_mean"] > 0.99999
    assert "BatchNormalization" in [node.op_type for node in onnx.load(str(activity_sample.onnx_path)).graph.node]


def test_passes_can_be_switched_off_by_name(activity_sample, tmp_path):
    out = tmp_path / "plain.bundle"
    assert convert(activity_sample, out, "--skip", "fuse,quantize", "--no-latency") == 0
    bundle = read_bundle(out)
    assert bundle.manifest.model.precision == "fp32"
    assert "BatchNormalization" in ops(bundle.model_bytes())
    passes = bundle.manifest.verification["passes"]
    assert passes["fuse"].startswith("skipped") and passes["quantize"].startswith("skipped")


def test_golden_output_reproduces(activity_x86):
    bundle = read_bundle(activity_x86)
    inputs, expected = bundle.golden()
    session = ort.InferenceSession(bundle.model_bytes(), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    actual = dict(zip(names, session.run(names, inputs), strict=True))
    spec = bundle.manifest.golden
    for name, value in expected.items():
        np.testing.assert_allclose(actual[name], value, rtol=spec.rtol, atol=spec.atol)
    assert len(next(iter(inputs.values()))) == 1


def test_reference_statistics_per_channel_and_per_class(activity_x86, activity_sample):
    manifest = read_bundle(activity_x86).manifest
    reference = manifest.reference
    entry = next(iter(reference["inputs"].values()))
    assert entry["channel_axis"] == 1
    assert len(entry["channels"]) == 6
    calibration = np.load(activity_sample.calibration_path)
    assert reference["samples"] == len(calibration["x"])
    for index, channel in enumerate(entry["channels"]):
        edges = channel["edges"]
        assert edges == sorted(edges) and len(edges) >= 3
        assert sum(channel["shares"]) == pytest.approx(1.0)
        values = calibration["x"][:, index, :]
        assert channel["mean"] == pytest.approx(float(values.mean()), rel=1e-4, abs=1e-6)
        assert channel["min"] == pytest.approx(float(values.min()))
    classes = sorted(set(calibration["y"].tolist()))
    assert sorted(entry["per_class"]) == [str(c) for c in classes]
    outputs = reference["outputs"]
    assert outputs["classes"] == manifest.card["labels"]
    assert sum(outputs["predicted_distribution"]) == pytest.approx(1.0)
    assert sum(outputs["confidence"]["shares"]) == pytest.approx(1.0)
    assert 0.0 < outputs["confidence"]["mean"] <= 1.0


def test_report_measures_latency_of_every_stage(digits_sample, tmp_path, capsys):
    out = tmp_path / "digits.bundle"
    assert convert(digits_sample, out, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert all(stage["latency_ms"] > 0 for stage in report["stages"])
    assert "this host" in report["latency_measured_on"]
    assert report["final_stage"] in [stage["stage"] for stage in report["stages"]]
    manifest = read_bundle(out).manifest
    assert manifest.verification == report
    final = next(stage for stage in report["stages"] if stage["stage"] == report["final_stage"])
    assert final["accuracy"] >= report["stages"][0]["accuracy"] - 0.005


def test_fp16_for_a_gpu_board(activity_sample, tmp_path):
    out = tmp_path / "orin.bundle"
    assert convert(activity_sample, out, "--target", "jetson-orin", "--no-latency") == 0
    bundle = read_bundle(out)
    assert bundle.manifest.model.precision == "fp16"
    model = onnx.load_from_string(bundle.model_bytes())
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in and out
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)


def test_human_report_shows_stages(activity_x86, capsys):
    assert main(["inspect", str(activity_x86)]) == 0
    text = capsys.readouterr().out
    for expected in ("original", "fused", "int8", "accuracy gate passed", "reference statistics", "golden.npz"):
        assert expected in text


def test_inspect_json_round_trips_the_manifest(activity_x86, capsys):
    assert main(["inspect", str(activity_x86), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["name"] == "activity"
    assert document["signature_status"] == "unsigned"
    assert set(document["files"]) == {"model.onnx", "golden.npz"}


def test_drift_reference_with_cross_fitted_thresholds(activity_x86):
    drift = read_bundle(activity_x86).manifest.reference["drift"]
    assert drift["channel_names"] == ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
    assert drift["class_source"] == "labels"
    assert drift["runs"] == 40  # the 40 training recordings, recovered from the overlapping windows
    assert drift["samples"] == 4000 and drift["hop"] == 10
    reference = drift["reference"]
    assert len(reference["shares"]) == 4 and len(reference["shares"][0]) == 6  # per class, per channel
    for class_shares in reference["shares"]:
        for channel in class_shares:
            assert sum(channel) == pytest.approx(1.0)
    thresholds = drift["thresholds"]
    for metric in ("psi", "js", "out_of_range", "cusum"):
        assert len(thresholds[metric]) == 6  # one (warning, drift) pair per channel
        assert all(0 < warning < drift_bound for warning, drift_bound in thresholds[metric])
    calibration = drift["calibration"]
    assert "cross-fitted" in calibration["method"] and calibration["evaluations"] > 50
