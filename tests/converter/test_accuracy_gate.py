"""The accuracy gate: sensitive nodes left in float when int8 costs too much, refusal when that is not enough,
and the float model kept when int8 is not faster on a board this machine can stand in for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import converter.passes.quantize as quantize
from converter.cli import main
from converter.passes.verify import pick_final
from converter.report import Report, StageResult
from edge_runtime.board import load_board
from edge_runtime.bundle import read_bundle


@pytest.fixture
def miscalibrated(activity_sample, tmp_path) -> Path:
    """Calibration data squeezed to 5% of its range: int8 ranges far too narrow, so int8 clips and accuracy falls."""
    data = np.load(activity_sample.calibration_path)
    path = tmp_path / "squeezed.npz"
    np.savez(path, x=(data["x"] * 0.05).astype(np.float32), y=data["y"])
    return path


def args_for(sample, out: Path, calibration: Path, *extra: str) -> list[str]:
    return [str(sample.onnx_path), "-o", str(out), "--target", "x86_64", "--card", str(sample.card_path),
            "--calibration", str(calibration), "--eval", str(sample.eval_path), "--no-latency", *extra]


def test_sensitive_nodes_are_left_in_float_until_the_gate_passes(activity_sample, miscalibrated, tmp_path):
    out = tmp_path / "mixed.bundle"
    assert main(args_for(activity_sample, out, miscalibrated, "--max-accuracy-drop", "0.02")) == 0
    report = read_bundle(out).manifest.verification
    assert report["excluded_nodes"], "the first int8 model should have failed the gate"
    first_int8 = next(stage for stage in report["stages"] if stage["stage"].startswith("int8 QDQ"))
    original = report["stages"][0]
    assert original["accuracy"] - first_int8["accuracy"] > 0.02
    assert report["final_stage"].endswith("node(s) in float")
    assert report["gate"]["passed"] and report["gate"]["loss"] <= 0.02


def test_bundle_refused_when_the_gate_cannot_be_met(activity_sample, miscalibrated, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(quantize, "MAX_EXCLUSION_ROUNDS", 0)
    out = tmp_path / "refused.bundle"
    out.write_bytes(b"the previous good bundle")
    args = args_for(activity_sample, out, miscalibrated, "--max-accuracy-drop", "0.01", "--quantize", "int8")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "bundle refused" in err and "accuracy" in err
    assert "original" in err and "int8" in err  # the report says which step cost what
    assert out.read_bytes() == b"the previous good bundle"
    assert not list(tmp_path.glob("*.tmp*"))


def test_auto_keeps_the_float_model_when_int8_cannot_meet_the_gate(
    activity_sample, miscalibrated, tmp_path, monkeypatch
):
    monkeypatch.setattr(quantize, "MAX_EXCLUSION_ROUNDS", 0)
    out = tmp_path / "float.bundle"
    assert main(args_for(activity_sample, out, miscalibrated, "--max-accuracy-drop", "0.01")) == 0
    manifest = read_bundle(out).manifest
    report = manifest.verification
    assert manifest.model.precision == "fp32" and report["final_stage"] == "fused"
    assert report["gate"]["passed"] and report["gate"]["loss"] <= 0.01
    first_int8 = next(stage for stage in report["stages"] if stage["stage"].startswith("int8 QDQ"))
    assert report["stages"][0]["accuracy"] - first_int8["accuracy"] > 0.01  # int8 really was over the budget
    assert any("--quantize auto" in note and "float model is bundled" in note for note in report["notes"])


def _report_with(latencies: dict[str, float], board_name: str) -> Report:
    report = Report(model="m", target=board_name)
    precisions = {"int8": "int8", "fused": "fp32"}
    for stage, latency in latencies.items():
        report.add_stage(
            StageResult(stage=stage, precision=precisions[stage], size_bytes=1, nodes=1, latency_ms=latency)
        )
    return report


def test_float_model_kept_when_int8_is_not_faster_on_this_host():
    report = _report_with({"fused": 1.0, "int8": 1.02}, "x86_64")
    assert pick_final(report, load_board("x86_64"), "fused", "int8") == "fused"
    assert "not faster" in report.notes[0]


def test_int8_kept_when_faster():
    report = _report_with({"fused": 1.0, "int8": 0.3}, "x86_64")
    assert pick_final(report, load_board("x86_64"), "fused", "int8") == "int8"
    assert report.notes == []


def test_speed_not_judged_for_a_board_this_host_cannot_stand_in_for():
    report = _report_with({"fused": 1.0, "int8": 2.0}, "raspberry-pi-4")
    assert pick_final(report, load_board("raspberry-pi-4"), "fused", "int8") == "int8"
    assert "not verified" in report.notes[0]
