"""A replayable sensor recording for the activity models: the held-out BasicMotions recordings as one stream.

Held out means whole recordings that neither the training, the calibration nor the converter's evaluation used
(the odd half of the test split, `datasets.eval_and_held_out`): 5 recordings of 100 samples per activity.
Real streams are not shuffled: a person plays badminton for minutes, then stands. So the stream puts one class
after the other in long runs; a run plays the class's held-out recordings in the data set's order and then again
in reverse order (1,000 samples, as long as the whole test split gave before it was halved). Raw units, as a CSV
the daemon's replay source plays back: `ts` at 10 Hz, six raw channels, and the true `label`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .datasets import BASIC_MOTIONS_CHANNELS, BASIC_MOTIONS_RATE_HZ, eval_and_held_out, load_basic_motions

PLAYS_PER_RUN = 2  # each held-out recording twice in its class's run: forward order, then reverse order


def activity_stream(class_order: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Raw held-out samples [n, 6] in class runs (class index order unless `class_order` says otherwise), their
    class index per sample, and the class names."""
    split = load_basic_motions()
    _, held_out = eval_and_held_out(split.y_test)
    x, y = split.x_test[held_out], split.y_test[held_out]
    order = range(len(split.label_names)) if class_order is None else class_order
    runs, labels = [], []
    for cls in order:
        recordings = list(x[y == cls])
        plays = [recordings if play % 2 == 0 else recordings[::-1] for play in range(PLAYS_PER_RUN)]
        runs += [recording.T for play in plays for recording in play]  # [100, 6] per recording
        labels.append(np.full(sum(len(play) for play in plays) * x.shape[2], cls, dtype=np.int64))
    return np.concatenate(runs).astype(np.float32), np.concatenate(labels), split.label_names


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
