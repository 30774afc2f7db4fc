"""The drift monitor's mechanics: bounded memory, exact window accounting, metrics, missing share."""

from __future__ import annotations

import numpy as np

from edge_runtime.drift.monitor import DriftMonitor, Thresholds, js_distance, psi
from edge_runtime.drift.reference import DriftReference, build_reference


def reference(seed: int = 0) -> DriftReference:
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(0, 1, (2000, 3)), rng.normal(3, 0.5, (2000, 3))])
    classes = np.repeat([0, 1], 2000)
    return build_reference(values, classes, 2, segments=[(i, i + 400) for i in range(0, 4000, 400)])


def test_window_histogram_equals_a_fresh_count_after_many_updates():
    ref = reference()
    monitor = DriftMonitor(ref, Thresholds(), window=300)
    rng = np.random.default_rng(1)
    stream = rng.normal(0, 1, (5000, 3))
    for start in range(0, 5000, 7):
        monitor.update(stream[start : start + 7], 0)
    from edge_runtime.drift.reference import bin_index

    last = bin_index(stream[-300:], ref.inner_edges)
    expected = np.stack([np.bincount(last[:, c], minlength=ref.bins) for c in range(3)])
    np.testing.assert_array_equal(monitor._counts.reshape(3, -1), expected)
    assert monitor._class_counts.tolist() == [300, 0]
    assert monitor._bins.shape == (300, 3)  # memory fixed by the window, not by the uptime


def test_mixture_of_class_references_follows_predicted_classes():
    ref = reference()
    monitor = DriftMonitor(ref, Thresholds(), window=400)
    rng = np.random.default_rng(2)
    for _ in range(20):
        monitor.update(rng.normal(0, 1, (10, 3)), 0)
        monitor.update(rng.normal(3, 0.5, (10, 3)), 1)
    np.testing.assert_allclose(monitor.class_weights(), [0.5, 0.5])
    np.testing.assert_allclose(monitor.expected_shares(), 0.5 * ref.shares[0] + 0.5 * ref.shares[1])
    report = monitor.evaluate()
    assert report["state"] == "ok" and report["window"]["filled"] == 400 and monitor.level() == 0


def test_psi_and_js_basics():
    same = np.full((1, 4), 0.25)
    assert psi(same, same)[0] == 0 and js_distance(same, same)[0] == 0
    shifted = np.array([[0.7, 0.1, 0.1, 0.1]])
    assert psi(shifted, same)[0] > 0.3 and 0 < js_distance(shifted, same)[0] <= 1


def test_missing_share_counts_rejected_samples():
    monitor = DriftMonitor(reference(), Thresholds(), window=100)
    rng = np.random.default_rng(3)
    for _ in range(10):
        monitor.update(rng.normal(0, 1, (10, 3)), 0)
    monitor.record_missing(10)
    report = monitor.evaluate()
    assert report["missing_share"] == round(10 / 110, 4)
    assert report["state"] == "drift" and any("missing" in reason for reason in report["reasons"])


def test_thresholds_round_trip_per_channel():
    thresholds = Thresholds(psi=[(0.1, 0.2), (0.3, 0.4)], cusum=(5.0, 9.0))
    again = Thresholds.from_dict(thresholds.as_dict())
    assert again.for_channel("psi", 1) == (0.3, 0.4) and again.for_channel("cusum", 0) == (5.0, 9.0)
