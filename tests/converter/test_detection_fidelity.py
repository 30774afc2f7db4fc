"""Matched boxes: same class, IoU >= 0.5, each box matched once; lost and invented boxes both count."""

from __future__ import annotations

import numpy as np
import pytest

from converter.detection_fidelity import match_boxes, score_error
from converter.evaluate import Fidelity, quality_loss
from edge_runtime.detection import Detections


def frame(*boxes) -> Detections:
    array = np.array([box[:4] for box in boxes], np.float32).reshape(-1, 4)
    return Detections(array, np.array([box[4] for box in boxes], np.float32), np.array([box[5] for box in boxes]))


def test_matching_counts_class_overlap_and_each_box_once():
    original = [frame((0, 0, 10, 10, 0.9, 0), (20, 20, 30, 30, 0.8, 1)), frame((0, 0, 10, 10, 0.7, 2))]
    candidate = [frame((1, 1, 11, 11, 0.9, 0), (20, 20, 30, 30, 0.8, 0), (0, 0, 10, 10, 0.5, 0)), frame()]
    match = match_boxes(original, candidate)
    # frame 0: the first box matches (IoU 0.68), the second has the wrong class; frame 1: lost
    assert (match.original, match.candidate, match.matched) == (3, 3, 1)
    assert match.rate == 1 / 3


def test_invented_boxes_cost_as_much_as_lost_ones_and_nothing_found_is_perfect():
    assert match_boxes([frame((0, 0, 10, 10, 0.9, 0))], [frame((0, 0, 10, 10, 0.9, 0), (50, 50, 60, 60, 0.9, 0))]
                       ).rate == 0.5
    assert match_boxes([frame()], [frame()]).rate == 1.0


def test_the_gate_measures_unmatched_boxes_for_detectors():
    fidelity = Fidelity(samples=4, agreement=None, cosine_mean=0.999, cosine_min=0.99, max_abs_diff=0.1,
                        matched_boxes=0.9)
    assert abs(quality_loss(fidelity, fidelity) - 0.1) < 1e-9


def test_score_error_is_continuous_where_the_matched_rate_is_not():
    original = [frame((0, 0, 10, 10, 0.8, 0), (20, 20, 30, 30, 0.8, 1))]
    assert score_error(original, original) == 0.0
    # the same boxes at half the score: no box lost at a low threshold, but half the score gone
    assert score_error(original, [frame((0, 0, 10, 10, 0.4, 0), (20, 20, 30, 30, 0.4, 1))]) == pytest.approx(0.5)
    # one box gone, the other of another class: nothing left
    assert score_error(original, [frame((20, 20, 30, 30, 0.8, 0))]) == 1.0
    assert score_error([frame()], [frame((0, 0, 10, 10, 0.9, 0))]) == 0.0  # nothing to lose
