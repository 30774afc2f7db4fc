"""Shared fixtures: the sample models, built once per machine through the cache and reused by every run."""

from __future__ import annotations

import pytest

from sample_models import SampleModel, build_sample


@pytest.fixture(scope="session")
def activity_sample() -> SampleModel:
    """The BasicMotions 1-D CNN (trains in seconds on the first run)."""
    return build_sample("activity")


@pytest.fixture(scope="session")
def digits_sample() -> SampleModel:
    """The digits ResNet (trains in about a minute on the first run)."""
    return build_sample("digits")


@pytest.fixture(scope="session")
def activity_wide_sample() -> SampleModel:
    """The same 1-D CNN made wide enough for about 1 ms per window (the daemon benchmark's model)."""
    return build_sample("activity_wide")


@pytest.fixture(scope="session")
def activity_bundle(activity_sample, tmp_path_factory):
    """The activity model converted for this machine (x86_64, int8), once per test session."""
    from converter.cli import main

    out = tmp_path_factory.mktemp("activity-bundle") / "activity.bundle"
    args = [str(activity_sample.onnx_path), "-o", str(out), "--target", "x86_64", "--card",
            str(activity_sample.card_path), "--calibration", str(activity_sample.calibration_path), "--eval",
            str(activity_sample.eval_path), "--no-latency"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def activity_recording(activity_sample, tmp_path_factory):
    """The held-out BasicMotions recordings as one CSV stream in class runs (4,000 samples at 10 Hz)."""
    from sample_models.recording import write_activity_recording

    return write_activity_recording(tmp_path_factory.mktemp("recording") / "activity.recording.csv")


@pytest.fixture
def broker():
    """A fresh, real mosquitto on a free loopback port, stopped (and its temp dir removed) after the test."""
    from tests.support.broker import MosquittoBroker

    with MosquittoBroker() as running:
        yield running
