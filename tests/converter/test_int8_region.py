"""Which operators join the int8 region is measured on candidate graphs when this host can stand in for the board,
and left to the board's list when it cannot; the report shows each candidate's Q/DQ nodes and latency."""

from __future__ import annotations

import onnx
import pytest

from converter.cli import main
from converter.int8_region import boundaries
from edge_runtime.bundle import read_bundle
from tests.support.tiers import tier


def convert_digits(sample, out, target: str) -> dict:
    args = [str(sample.onnx_path), "-o", str(out), "--target", target, "--card", str(sample.card_path),
            "--calibration", str(sample.calibration_path), "--eval", str(sample.eval_path)]
    assert main(args) == 0
    return read_bundle(out).manifest.verification


@pytest.fixture(scope="module")
@tier("slow")
def digits_x86(digits_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("region") / "digits.bundle"
    return out, convert_digits(digits_sample, out, "x86_64")


def test_candidates_are_measured_and_the_choice_follows_the_measurement(digits_x86):
    _, report = digits_x86
    region = report["int8_region"]
    assert region["measured"] is True and region["reason"].startswith("measured on this host")
    candidates = {candidate["name"]: candidate for candidate in region["candidates"]}
    board = candidates["board list"]
    assert board["op_types"] == ["Conv", "MatMul", "Gemm"]
    # the residual CNN leaves float islands around the Adds, ReLUs and pooling when only the board's list is int8
    assert board["quantize_nodes"] + board["dequantize_nodes"] > 2
    assert set(candidates["all quantizable"]["op_types"]) >= {"Add", "Relu", "GlobalAveragePool"}
    assert candidates["all quantizable"]["quantize_nodes"] < board["quantize_nodes"]
    chosen = [candidate for candidate in region["candidates"] if candidate["chosen"]]
    assert len(chosen) == 1 and chosen[0]["op_types"] == region["op_types"]
    measured = [candidate for candidate in region["candidates"] if candidate["latency_ms"] is not None]
    assert board in measured and chosen[0] in measured
    assert chosen[0]["latency_ms"] <= board["latency_ms"]  # never a region slower than the board's list
    assert chosen[0]["loss"] <= board["loss"] + report["gate"]["max_accuracy_drop"] / 2


def test_the_bundle_has_the_chosen_region(digits_x86):
    out, report = digits_x86
    model = onnx.load_from_string(read_bundle(out).model_bytes())
    chosen = next(candidate for candidate in report["int8_region"]["candidates"] if candidate["chosen"])
    crossings = boundaries(model)
    # calibrated again on all the data, the chosen region leaves the same crossings as its candidate graph
    assert (crossings["quantize"], crossings["dequantize"]) == (chosen["quantize_nodes"], chosen["dequantize_nodes"])


def test_the_boards_list_stands_where_this_host_cannot_time_the_board(digits_sample, tmp_path):
    report = convert_digits(digits_sample, tmp_path / "pi.bundle", "raspberry-pi-5")
    region = report["int8_region"]
    assert region["measured"] is False and region["op_types"] == ["Conv", "MatMul", "Gemm"]
    assert "not measured: the target 'raspberry-pi-5' is aarch64" in region["reason"]
    assert region["candidates"] == []
