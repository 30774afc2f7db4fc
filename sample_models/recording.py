"""A replayable sensor recording for the activity model: the held-out BasicMotions recordings as one stream.

Real streams are not shuffled: a person plays badminton for minutes, then stands. So the recording puts the
test split's recordings one class after the other (long runs of one class), in the data set's order within a
class, as a CSV the daemon's replay source plays back: `ts` at 10 Hz, six raw channels, and the true `label`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .datasets import BASIC_MOTIONS_CHANNELS, BASIC_MOTIONS_RATE_HZ, load_basic_motions


def activity_stream() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Raw test samples [n, 6] in class runs, their class index per sample, and the class names."""
    split = load_basic_motions()
    order = np.argsort(split.y_test, kind="stable")
    values = np.concatenate([split.x_test[i].T for i in order])  # [100, 6] per recording
    labels = np.repeat(split.y_test[order], split.x_test.shape[2])
    return values.astype(np.float32), labels, split.label_names


def write_activity_recording(path: Path) -> Path:
    values, labels, names = activity_stream()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ts", *BASIC_MOTIONS_CHANNELS, "label"])
        for index, (row, label) in enumerate(zip(values, labels, strict=True)):
            ts = index / BASIC_MOTIONS_RATE_HZ
            writer.writerow([f"{ts:.1f}", *(f"{value:.6g}" for value in row), names[label]])
    return path
