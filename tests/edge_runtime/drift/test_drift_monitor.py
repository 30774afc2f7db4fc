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


def test_bundles_made_before_the_calibrated_slack_keep_their_cusum():
    """A drift section written before `cusum_slack`, `class_lag` and per-class window bounds existed: the device
    reads it and runs the CUSUM exactly as it did (one slack of 0.25, z clipped at 3, the class of the prediction
    that brought the samples), with the per-channel bounds."""
    from edge_runtime.drift.monitor import Z_CLIP

    ref = reference()
    old = ref.as_dict()
    assert "cusum_slack" not in old  # built without a design: the old format
    thresholds = {"psi": [[0.2, 0.4]] * 3, "js": [[0.2, 0.3]] * 3, "out_of_range": [[0.05, 0.15]] * 3,
                  "cusum": [[8.0, 16.0]] * 3, "missing": [0.01, 0.05], "class_mix": [0.5, 1.0], "stuck_run": 50}
    monitor = DriftMonitor(DriftReference.from_dict(old), Thresholds.from_dict(thresholds), window=200)
    rng = np.random.default_rng(4)
    up = down = np.zeros(3)
    for step in range(60):
        samples = rng.normal(0.3 if step > 30 else 0.0, 1, (10, 3))
        monitor.update(samples, 0)
        z = np.clip((samples.mean(axis=0) - ref.mean[0]) / ref.mean_scale[0], -Z_CLIP, Z_CLIP)
        up, down = np.maximum(0, up + z - 0.25), np.maximum(0, down - z - 0.25)
    np.testing.assert_allclose(monitor.metrics()["cusum"], np.maximum(up, down))
    assert monitor.window_bounds("psi").tolist() == [[0.2, 0.4]] * 3


def test_calibrated_slack_and_class_lag_round_trip_and_apply():
    ref = reference()
    ref.cusum_slack = np.full((2, 3), 2.0)
    again = DriftReference.from_dict(ref.as_dict())
    np.testing.assert_array_equal(again.cusum_slack, ref.cusum_slack)
    monitor = DriftMonitor(again, Thresholds(), window=200, class_lag=2)
    monitor.update(np.full((10, 3), ref.mean[0] + 1.5 * ref.mean_scale[0]), 0)
    monitor.update(np.full((10, 3), ref.mean[0] + 1.5 * ref.mean_scale[0]), 0)
    assert monitor.samples_seen == 0  # two hops wait for the predictions of the windows centred on them
    for _ in range(10):
        monitor.update(np.full((10, 3), ref.mean[0] + 1.5 * ref.mean_scale[0]), 0)
    assert monitor.samples_seen == 100 and monitor.metrics()["cusum"].max() == 0  # 1.5 sd is inside a slack of 2
