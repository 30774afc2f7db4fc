"""Run an ONNX model in onnxruntime on a whole data set, in batches when the batch dimension allows it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort

from converter.data import Dataset
from converter.sequence import run_sequence


def make_session(
    model: onnx.ModelProto | bytes,
    *,
    threads: int = 1,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
) -> ort.InferenceSession:
    """A CPU session; one thread by default so that measurements compare like with like."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    payload = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


def has_dynamic_batch(session: ort.InferenceSession) -> bool:
    return all(not isinstance(value.shape[0], int) for value in session.get_inputs() if value.shape)


def run_dataset(
    session: ort.InferenceSession,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    advance: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """All outputs for all samples, stacked along the batch axis, by output name. A recurrent model's data set
    (`dataset.sequence`) is run one window at a time over each recording, the session's own state carried."""
    names = [output.name for output in session.get_outputs()]
    if dataset.sequence is not None:
        return run_sequence(lambda feed: dict(zip(names, session.run(names, feed), strict=True)), dataset, advance)
    size = batch_size if has_dynamic_batch(session) else 1
    collected: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for feed in dataset.batches(size):
        for name, value in zip(names, session.run(names, feed), strict=True):
            collected[name].append(np.asarray(value))
        if advance:
            advance(len(next(iter(feed.values()))))
    return {name: np.concatenate(parts) for name, parts in collected.items()}
