"""`edge-convert --prune`: real trained models lose channels, keep their accuracy, and bad requests get one message.

The digits sample is a residual CNN trained on scikit-learn's digits; pruning it is what the benchmark measures.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.cli import main
from converter.data import load_dataset
from converter.evaluate import accuracy
from converter.passes.check import model_inputs
from converter.passes.fuse import fuse
from converter.prune.graph import tensor_shapes
from converter.prune.pruner import ChannelPruner
from converter.runner import make_session, run_dataset
from edge_runtime.board import load_board
from edge_runtime.bundle import read_bundle
from tests.support.tflite_mlp import build_tflite_digits_sample


def run(capsys, *args) -> tuple[int, str]:
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    return code, text


def sample_args(sample, out, *extra) -> list:
    return [
        sample.onnx_path, "-o", out, "--target", "x86_64", "--card", sample.card_path,
        "--calibration", sample.calibration_path, "--eval", sample.eval_path, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def digits_fused(digits_sample):
    model = fuse(onnx.load(str(digits_sample.onnx_path)), load_board("x86_64"))
    inputs = model_inputs(model)
    calibration = load_dataset(digits_sample.calibration_path, inputs, what="calibration")
    evaluation = load_dataset(digits_sample.eval_path, inputs, what="evaluation")
    return model, calibration, evaluation


def eval_accuracy(model, evaluation) -> float:
    return accuracy(run_dataset(make_session(model), evaluation)["logits"], evaluation.labels)


@pytest.fixture(scope="module")
def digits_pruned_half(digits_fused):
    """The digits model with half of every prunable group's channels removed, with and without refit."""
    model, calibration, _ = digits_fused
    pruner = ChannelPruner(model)
    moments = pruner.moments(calibration)
    keep = pruner.keep({group.id: 0.5 for group in pruner.groups}, pruner.scores(moments))
    return pruner, keep, pruner.build(keep, moments), pruner.build(keep, None)


def test_refit_recovers_the_accuracy_that_removing_channels_loses(digits_fused, digits_pruned_half):
    model, _, evaluation = digits_fused
    _, _, refitted, removed_only = digits_pruned_half
    original = eval_accuracy(model, evaluation)
    with_refit, without_refit = eval_accuracy(refitted, evaluation), eval_accuracy(removed_only, evaluation)
    assert original > 0.98
    assert original - with_refit <= 0.01, (original, with_refit)
    assert with_refit - without_refit > 0.3, (with_refit, without_refit)


def test_activation_scores_beat_filter_magnitude_at_the_same_ratio(digits_fused, digits_pruned_half):
    """The naive peer: L1-norm filter pruning, no refit. Same groups and ratio; much worse accuracy."""
    model, calibration, evaluation = digits_fused
    _, _, refitted, _ = digits_pruned_half
    naive = ChannelPruner(model, scoring="magnitude", refit_layers=False)
    keep = naive.keep({group.id: 0.5 for group in naive.groups}, naive.scores({}))
    assert eval_accuracy(refitted, evaluation) - eval_accuracy(naive.build(keep, None), evaluation) > 0.3


def test_pruned_model_is_valid_onnx_with_the_original_interface(digits_fused, digits_pruned_half):
    model, _, _ = digits_fused
    pruner, keep, refitted, _ = digits_pruned_half
    onnx.checker.check_model(refitted, full_check=True)
    assert [(v.name, v.type) for v in refitted.graph.input] == [(v.name, v.type) for v in model.graph.input]
    assert [(v.name, v.type) for v in refitted.graph.output] == [(v.name, v.type) for v in model.graph.output]
    assert refitted.ByteSize() < model.ByteSize() * 0.4
    assert {len(kept) for kept in keep.values()} and all(
        len(keep[group.id]) == group.size // 2 for group in pruner.groups
    )


def test_residual_groups_are_pruned_together(digits_pruned_half):
    """Both sides of every residual Add lose the same channels, so the Add still lines up."""
    pruner, keep, refitted, _ = digits_pruned_half
    merged = [group for group in pruner.groups if len(group.producers) == 2]
    assert len(merged) == 3  # stem + block 1's identity path, and the two projection stages
    shapes = tensor_shapes(refitted)
    adds = [node for node in refitted.graph.node if node.op_type == "Add"]
    assert len(adds) == 3
    for node in adds:
        assert shapes[node.input[0]] == shapes[node.input[1]]
    weights = {init.name: numpy_helper.to_array(init) for init in refitted.graph.initializer}
    nodes = {node.name: node for node in refitted.graph.node}
    for group in merged:
        counts = {weights[nodes[producer.node].input[1]].shape[0] for producer in group.producers}
        assert counts == {len(keep[group.id])}


def test_prune_then_int8_report_and_bundle(digits_sample, tmp_path, capsys):
    out = tmp_path / "digits.bundle"
    code, text = run(capsys, *sample_args(digits_sample, out, "--prune", "0.5", "--max-accuracy-drop", "0.01",
                                          "--json", "--no-latency"))  # fmt: skip
    assert code == 0, text
    report = json.loads(text[text.index("{") :])
    stages = {stage["stage"]: stage for stage in report["stages"]}
    assert "pruned (ratio 0.5)" in stages
    assert stages["pruned (ratio 0.5)"]["flops"] < stages["fused"]["flops"] * 0.3
    assert report["final_stage"].startswith("int8")
    assert stages[report["final_stage"]]["flops"] == stages["pruned (ratio 0.5)"]["flops"]
    pruning = report["pruning"]
    assert pruning["mode"] == "ratio 0.5" and pruning["flops_after"] < pruning["flops_before"]
    assert {(g["before"], g["after"]) for g in pruning["groups"]} == {(64, 32), (128, 64), (256, 128)}
    assert [g["name"] for g in pruning["left_alone"]] == ["/head/Gemm"]
    assert "graph output" in pruning["left_alone"][0]["reasons"][0]
    bundle = read_bundle(out)
    model = onnx.load_from_string(bundle.model_bytes())
    original = onnx.load(str(digits_sample.onnx_path))
    assert model_inputs(model)[0].shape[1:] == model_inputs(original)[0].shape[1:]
    assert bundle.manifest.verification["pruning"]["mode"] == "ratio 0.5"


def test_auto_stays_within_the_budget_and_reports_its_search(activity_sample, tmp_path, capsys):
    code, text = run(capsys, *sample_args(activity_sample, tmp_path / "a.bundle", "--prune", "auto", "--json"))
    assert code == 0, text
    report = json.loads(text[text.index("{") :])
    pruning = report["pruning"]
    assert pruning["mode"].startswith("auto") and pruning["budget"] == pytest.approx(0.005 * 0.75)
    assert pruning["search"] and any(step["within_budget"] for step in pruning["search"])
    assert pruning["flops_after"] < pruning["flops_before"]
    assert set(pruning["sensitivity"]) == {group["name"] for group in pruning["groups"]}
    assert report["gate"]["passed"] and report["gate"]["loss"] <= 0.005
    accepted = [step for step in pruning["search"] if step["within_budget"]]
    assert all(step["loss"] <= pruning["budget"] for step in accepted)
    assert report["passes"]["prune"].startswith("ran (auto")
    assert any(stage["stage"] == "pruned (auto)" for stage in report["stages"])


def test_prune_then_fp16_for_a_jetson(activity_sample, tmp_path, capsys):
    """The fp16 converter appends its input Cast after the layers that read it; FLOPs are still counted."""
    args = sample_args(activity_sample, tmp_path / "j.bundle", "--target", "jetson-orin", "--prune", "0.5",
                       "--json", "--no-latency")  # fmt: skip
    code, text = run(capsys, *args)
    assert code == 0, text
    report = json.loads(text[text.index("{") :])
    stages = {stage["stage"]: stage for stage in report["stages"]}
    assert report["final_stage"] == "fp16"
    assert stages["fp16"]["flops"] == stages["pruned (ratio 0.5)"]["flops"] < stages["fused"]["flops"] / 3


def test_human_report_shows_channels_per_group(activity_sample, tmp_path, capsys):
    code, text = run(capsys, *sample_args(activity_sample, tmp_path / "a.bundle", "--prune", "0.25",
                                          "--quantize", "none", "--no-latency"))  # fmt: skip
    assert code == 0, text
    assert "32 -> 24" in text and "64 -> 48" in text
    assert "MFLOPs" in text and "left alone: /head/Gemm" in text


@pytest.mark.parametrize("ratio", ["0", "1", "1.5", "-0.2", "half", "nan"])
def test_ratio_outside_zero_one_is_one_message(activity_sample, tmp_path, capsys, ratio):
    code, text = run(capsys, *sample_args(activity_sample, tmp_path / "o.bundle", f"--prune={ratio}"))
    assert code == 2
    assert "--prune" in text and ("between 0 and 1" in text or "ratio in (0, 1)" in text)
    assert len(text.strip().splitlines()) == 1
    assert not (tmp_path / "o.bundle").exists()


def test_a_ratio_that_breaks_the_budget_is_refused_right_after_pruning(digits_sample, tmp_path, capsys):
    """No int8 rounds that cannot help: the refusal names the prune stage and what to try instead."""
    out = tmp_path / "o.bundle"
    code, text = run(capsys, *sample_args(digits_sample, out, "--prune", "0.9", "--no-latency"))
    assert code == 1
    assert "--prune 0.9 alone loses" in text and "smaller ratio" in text and "--prune auto" in text
    assert "int8" not in text.split("edge-convert: error:")[0].split("pruned (ratio 0.9)")[-1]
    assert not out.exists()


def test_skip_verify_lets_an_over_budget_ratio_through(activity_sample, tmp_path, capsys):
    args = sample_args(activity_sample, tmp_path / "o.bundle", "--prune", "0.9", "--max-accuracy-drop", "0",
                       "--skip", "verify", "--quantize", "none", "--no-latency", "--json")  # fmt: skip
    code, text = run(capsys, *args)
    assert code == 0, text
    assert json.loads(text[text.index("{") :])["gate"]["passed"] is True


def test_prune_without_calibration_data(activity_sample, tmp_path, capsys):
    args = [activity_sample.onnx_path, "-o", tmp_path / "o.bundle", "--target", "x86_64",
            "--eval", activity_sample.eval_path, "--quantize", "none", "--prune", "0.3"]  # fmt: skip
    code, text = run(capsys, *args)
    assert code == 2
    assert "--prune needs --calibration" in text
    assert not (tmp_path / "o.bundle").exists()


def test_nothing_prunable(tmp_path, capsys):
    """A single linear layer: its outputs are the model's outputs, so no channel can go."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="linear")],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [weight, bias],
    )
    model_path = tmp_path / "linear.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model_path))
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.normal(size=(64, 4)).astype(np.float32), y=rng.integers(0, 3, 64))
    args = [model_path, "-o", tmp_path / "o.bundle", "--target", "x86_64", "--calibration", data,
            "--prune", "0.5", "--quantize", "none", "--no-latency"]  # fmt: skip
    code, text = run(capsys, *args)
    assert code == 2
    assert "nothing to prune" in text and "linear" in text and "graph output 'y'" in text
    assert not (tmp_path / "o.bundle").exists()


@pytest.mark.slow  # trains the TFLite digits MLP
def test_prune_refuses_tflite(tmp_path, capsys):
    paths = build_tflite_digits_sample(tmp_path)
    args = [paths["model"], "-o", tmp_path / "o.bundle", "--target", "x86_64", "--prune", "0.5",
            "--calibration", paths["calibration"]]  # fmt: skip
    code, text = run(capsys, *args)
    assert code == 2 and "--prune works on ONNX graphs" in text
