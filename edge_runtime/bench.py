"""`edge-runtime bench`: how fast a bundle runs on this device, on the backend the daemon would pick.

The model is loaded exactly as the daemon loads it (checksums, backend choice, golden check), so the numbers
belong to what will actually serve predictions, including a degraded fallback, which the result names.
Inputs are the bundle's golden input tiled to each batch size: real data, no extra files needed.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_runtime.backends.onnxruntime import OnnxRuntimeBackendConfig
from edge_runtime.backends.tflite import TfliteBackendConfig
from edge_runtime.board import Board
from edge_runtime.config import BackendConfig
from edge_runtime.model_loader import LoadedModel, load_bundle_model

#: each batch size is run at least this often, however short the time budget
MIN_RUNS = 5
#: untimed runs at each batch size first: a new shape re-plans memory (or rebuilds an engine)
WARMUP_RUNS = 2


def backend_configs(backend: str | None) -> list[BackendConfig] | None:
    """``onnxruntime`` or ``tflite`` (board's providers/delegates), or ``NAME:DEVICE`` to pin one device.

    ``onnxruntime:CUDAExecutionProvider``, ``tflite:libedgetpu.so.1``, ``tflite:cpu`` (no delegate).
    """
    if backend is None:
        return None
    name, _, device = backend.partition(":")
    if name == "onnxruntime":
        return [OnnxRuntimeBackendConfig(type="onnxruntime", providers=[device] if device else None)]
    if name == "tflite":
        delegates = None if not device else ([] if device.lower().startswith("cpu") else [device])
        return [TfliteBackendConfig(type="tflite", delegates=delegates)]
    raise ValueError(f"unknown backend '{name}' (use onnxruntime or tflite, optionally NAME:DEVICE)")


def _tile(inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The golden rows repeated to `batch` rows (the golden input usually has one)."""
    return {name: np.take(value, np.arange(batch) % len(value), axis=0) for name, value in inputs.items()}


def _percentiles_ms(times: list[float]) -> dict[str, float]:
    values = np.asarray(times) * 1e3
    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "p99": float(np.percentile(values, 99)),
        "mean": float(values.mean()),
    }


def _measure(model: LoadedModel, feed: dict[str, np.ndarray], budget: float) -> list[float]:
    """Per-run wall times (s) until the budget is spent and at least MIN_RUNS runs are done."""
    for _ in range(WARMUP_RUNS):
        model.run(feed)
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < MIN_RUNS or time.perf_counter() < deadline:
        start = time.perf_counter()
        model.run(feed)
        times.append(time.perf_counter() - start)
    return times


def bench_bundle(
    path: Path,
    backend: str | None,
    board: Board,
    seconds: float = 5.0,
    batch_sizes: Sequence[int] = (1, 8, 32),
) -> dict:
    """Latency (batch 1: p50/p95/p99) and throughput per batch size, measuring `seconds` at each batch size.

    `latency_ms` is None when 1 is not among `batch_sizes`. Batch sizes above the model's fixed batch are skipped
    (and listed as such). Signatures are reported, not required: bench measures speed; the daemon enforces the
    signature policy.
    """
    model = load_bundle_model(
        Path(path),
        name=None,
        backends=backend_configs(backend),
        board=board,
        trusted_keys=None,
        require_signature=False,
    )
    try:
        golden_inputs, _ = model.bundle.golden()
        sizes = list(dict.fromkeys(int(size) for size in batch_sizes if int(size) > 0))
        runnable = [size for size in sizes if model.max_batch is None or size <= model.max_batch]
        rows: list[dict] = []
        latency: dict[str, float | int] | None = None
        for size in sizes:
            if size not in runnable:
                rows.append({"batch": size, "skipped": f"above the model's max batch ({model.max_batch})"})
                continue
            times = _measure(model, _tile(golden_inputs, size), seconds)
            stats = _percentiles_ms(times)
            rows.append(
                {
                    "batch": size,
                    "runs": len(times),
                    "latency_ms_p50": stats["p50"],
                    "samples_per_s": size * len(times) / sum(times),
                }
            )
            if size == 1:
                latency = {**stats, "runs": len(times)}
        return {
            "model": model.describe(),
            "backend": model.choice.describe(),
            "board": board.name,
            "machine": platform.machine(),
            "threads": getattr(model.choice.backend, "threads", None),
            "latency_ms": latency,
            "throughput": rows,
        }
    finally:
        model.close()


def render_bench(result: dict) -> str:
    """A plain-text report of `bench_bundle`'s result, for a terminal."""
    model, backend = result["model"], result["backend"]
    lines = [
        f"{model['name']} {model['version']} ({model['precision']}, built for {model['target_board']})",
        f"board {result['board']} on {result['machine']}, backend {backend['active']}"
        + (f", {result['threads']} threads" if result.get("threads") else ""),
    ]
    if backend["degraded"]:
        lines.append(f"DEGRADED: {backend['reason']}")
    latency = result.get("latency_ms")
    if latency:
        lines.append(
            f"latency, batch 1: p50 {latency['p50']:.3f} ms  p95 {latency['p95']:.3f} ms  "
            f"p99 {latency['p99']:.3f} ms  ({latency['runs']} runs)"
        )
    lines.append("")
    lines.append(f"{'batch':>5}  {'runs':>7}  {'p50 ms/run':>10}  {'samples/s':>11}")
    for row in result["throughput"]:
        if "skipped" in row:
            lines.append(f"{row['batch']:>5}  skipped: {row['skipped']}")
        else:
            lines.append(
                f"{row['batch']:>5}  {row['runs']:>7}  {row['latency_ms_p50']:>10.3f}  {row['samples_per_s']:>11.1f}"
            )
    return "\n".join(lines)
