"""`edge-runtime bench` logic: the structure of its result and report (no wall-clock thresholds)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from converter.cli import main
from edge_runtime.bench import backend_configs, bench_bundle, render_bench
from edge_runtime.board import load_board
from edge_runtime.bundle import read_bundle, write_bundle
from edge_runtime.model_loader import ModelLoadError


@pytest.fixture(scope="module")
def bundle_path(activity_sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "activity.bundle"
    args = [str(activity_sample.onnx_path), "-o", str(out), "--target", "x86_64", "--card",
            str(activity_sample.card_path), "--eval", str(activity_sample.eval_path), "--quantize", "none",
            "--no-latency"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def board():
    return load_board("x86_64")


def test_bench_reports_latency_and_throughput(bundle_path, board):
    result = bench_bundle(bundle_path, None, board, seconds=0.2, batch_sizes=(1, 8))
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert latency["runs"] >= 5
    assert [row["batch"] for row in result["throughput"]] == [1, 8]
    for row in result["throughput"]:
        assert row["runs"] >= 5 and row["samples_per_s"] > 0 and row["latency_ms_p50"] > 0
    assert result["backend"]["active"] == "onnxruntime:CPUExecutionProvider"
    assert result["backend"]["degraded"] is False
    assert result["board"] == "x86_64" and result["machine"]
    assert result["model"]["name"] == "activity"
    text = render_bench(result)
    assert "onnxruntime:CPUExecutionProvider" in text and "samples/s" in text and "p99" in text
    assert "DEGRADED" not in text


def test_bench_on_a_board_whose_accelerator_is_missing_shows_degraded(bundle_path):
    result = bench_bundle(bundle_path, None, load_board("jetson-orin"), seconds=0.05, batch_sizes=(1,))
    assert result["backend"]["degraded"] is True
    assert "DEGRADED: TensorrtExecutionProvider unavailable" in render_bench(result)


def test_batch_sizes_above_a_fixed_batch_are_skipped(bundle_path, board, tmp_path):
    bundle = read_bundle(bundle_path)
    model = onnx.load_from_string(bundle.model_bytes())
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    members = {name: bundle.read(name) for name in bundle.names}
    members["model.onnx"] = model.SerializeToString()
    fixed = tmp_path / "fixed.bundle"
    write_bundle(fixed, bundle.manifest, members)
    result = bench_bundle(fixed, "onnxruntime", board, seconds=0.05, batch_sizes=(1, 8))
    assert result["throughput"][1] == {"batch": 8, "skipped": "above the model's max batch (1)"}
    assert "skipped" in render_bench(result)


def test_a_backend_that_cannot_run_the_bundle_is_refused(bundle_path, board):
    with pytest.raises(ModelLoadError, match="no backend can run this onnx model"):
        bench_bundle(bundle_path, "tflite", board, seconds=0.05)


def test_backend_names_become_configs():
    assert backend_configs(None) is None
    (onnx_config,) = backend_configs("onnxruntime:CUDAExecutionProvider")
    assert onnx_config.type == "onnxruntime" and onnx_config.providers == ["CUDAExecutionProvider"]
    assert backend_configs("onnxruntime")[0].providers is None
    assert backend_configs("tflite:libedgetpu.so.1")[0].delegates == ["libedgetpu.so.1"]
    assert backend_configs("tflite:cpu")[0].delegates == []
    with pytest.raises(ValueError, match="unknown backend"):
        backend_configs("openvino")
