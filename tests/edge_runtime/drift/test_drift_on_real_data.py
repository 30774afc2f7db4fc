"""Drift detection on real held-out sensor data (BasicMotions test recordings neither the calibration nor the
converter's evaluation saw) streamed in long class runs, through the real model, with sensor faults injected in
raw units from inside each class's run. Two models: the demo's (window 50) and activity_long (window 100, whose
calibration shows no recording boundary)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import drift_stream as ds

CLASS_RUN = ds.CLASS_RUN


@pytest.fixture(scope="module")
def setup(activity_sample):
    return ds.setup(activity_sample)


@pytest.fixture(scope="module")
def long_setup(activity_long_sample):
    return ds.setup(activity_long_sample)


@pytest.mark.parametrize("which", ["setup", "long_setup"])
def test_clean_held_out_streams_raise_no_warning(request, which):
    """16,000 clean samples: the held-out recordings in four class orders (every class after every other)."""
    setup = request.getfixturevalue(which)
    window, hop = setup.card.input.window, setup.card.input.hop
    for raw in setup.clean_streams():
        result = ds.run_stream(setup, setup.monitor(), raw)
        assert [state for _, state in result.states if state != "ok"] == []
        assert result.predictions == (len(raw) - window) // hop + 1


@pytest.mark.parametrize("start_class", range(4))
def test_half_sigma_offset_in_any_channel_is_seen_within_1000_samples_with_a_window_of_100(long_setup, start_class):
    start = start_class * CLASS_RUN + 100
    for channel in range(6):
        result = ds.run_stream(long_setup, long_setup.monitor(), long_setup.raw, fault=ds.offset(channel, 0.5),
                               fault_start=start)
        assert result.first_warning is not None and result.first_warning <= 1000, (channel, result.first_warning)
        assert result.first_drift is not None, channel


def test_naive_pooled_psi_bands_false_alarm_on_the_same_clean_stream(setup):
    """What the class-conditional reference is for: pooled histograms with 0.1/0.25 bands alarm on clean data."""
    result = ds.run_stream(setup, setup.monitor(pooled=True, fixed_psi_bands=True), setup.raw)
    assert sum(state != "ok" for _, state in result.states) > 100


@pytest.mark.parametrize("start_class", range(4))
def test_half_sigma_offset_is_seen_within_1000_samples(setup, start_class):
    start = start_class * CLASS_RUN + 100
    for channel in range(6):
        result = ds.run_stream(setup, setup.monitor(), setup.raw, fault=ds.offset(channel, 0.5), fault_start=start)
        assert result.first_warning is not None and result.first_warning <= 1000, (channel, result.first_warning)
        assert result.first_drift is not None, channel


FAULTS = {
    "offset": ds.offset(2, 1.0),
    "gain": ds.gain(1, 1.5),
    "noise": ds.noise(2, 1.0),
    "stuck": ds.stuck(0),
    "swap": ds.swap(0, 1),
}


@pytest.mark.parametrize("name", FAULTS)
@pytest.mark.parametrize("start_class", range(4))
def test_each_fault_is_detected_whichever_class_it_starts_in(setup, name, start_class):
    start = start_class * CLASS_RUN + 100
    result = ds.run_stream(setup, setup.monitor(), setup.raw, fault=FAULTS[name], fault_start=start)
    assert result.first_warning is not None, f"{name} from {setup.class_names[start_class]} never seen"
    assert result.first_drift is not None


def test_stuck_channel_is_its_own_finding(setup):
    result = ds.run_stream(setup, setup.monitor(), setup.raw, fault=ds.stuck(4), fault_start=2100)
    assert result.first_drift is not None and result.first_drift <= 50
    channel = setup.section["channel_names"][4]
    assert result.last_report["channels"][channel]["stuck"] is True
    assert result.last_report["top_channels"][0] == channel


def test_report_names_the_drifting_channel_first(setup):
    result = ds.run_stream(setup, setup.monitor(), setup.raw, fault=ds.offset(3, 1.0), fault_start=1100)
    report = result.last_report
    assert report["state"] == "drift"
    assert report["top_channels"][0] == setup.section["channel_names"][3]
    assert report["reasons"] and setup.section["channel_names"][3] in report["reasons"][0]


def test_class_mix_change_shows_without_raising_the_state(setup):
    """A wearer who only walks: a class mix far from the reference, which is not drift by default."""
    walking = setup.class_names.index("walking")
    only_walking = np.tile(setup.raw[setup.labels == walking], (2, 1))
    result = ds.run_stream(setup, setup.monitor(), only_walking)
    report = result.last_report
    assert report["state"] == "ok"
    mix = report["outputs"]["class_mix"]
    assert mix["current"]["walking"] > 0.9 and mix["reference"]["walking"] < 0.5
    assert mix["psi"] > 0.5 and mix["counts_toward_state"] is False
    counted = setup.monitor()
    counted.class_mix_counts = True
    assert ds.run_stream(setup, counted, only_walking).last_report["state"] != "ok"
