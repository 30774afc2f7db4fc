"""Batch-1 latency of several models measured in one interleaved run, so they share the machine's state."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx

from converter.runner import make_session


@dataclass
class Latency:
    median_ms: float
    p90_ms: float
    runs: int


def measure_latencies(
    models: dict[str, onnx.ModelProto | bytes],
    feed: dict[str, np.ndarray],
    *,
    threads: int = 1,
    rounds: int = 15,
    runs_per_round: int = 20,
    budget_s: float = 20.0,
    feeds: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict[str, Latency]:
    """Median batch-1 latency per model; models take turns round by round (interleaved) within a time budget.
    `feeds` gives a model its own inputs where they differ (a converted model that lost a constant input)."""
    sessions = {name: make_session(model, threads=threads) for name, model in models.items()}
    inputs = {name: (feeds or {}).get(name, feed) for name in sessions}
    for name, session in sessions.items():  # warm-up: first runs allocate and pick kernels
        for _ in range(5):
            session.run(None, inputs[name])
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    deadline = time.perf_counter() + budget_s
    for _ in range(rounds):
        for name, session in sessions.items():
            for _ in range(runs_per_round):
                start = time.perf_counter()
                session.run(None, inputs[name])
                samples[name].append(time.perf_counter() - start)
        if time.perf_counter() > deadline and all(len(v) >= 3 * runs_per_round for v in samples.values()):
            break
    return {
        name: Latency(
            median_ms=float(np.median(values) * 1e3), p90_ms=float(np.percentile(values, 90) * 1e3), runs=len(values)
        )
        for name, values in samples.items()
    }
