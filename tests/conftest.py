"""Shared fixtures (the sample models, built once per machine through the cache and reused by every run; a fresh
mosquitto per test) and the test tiers: every collected test is marked `unit`, `broker`, `browser` or `slow`
(tests/support/tiers.py says how)."""

from __future__ import annotations

import pytest

from sample_models import SampleModel, build_sample
from tests.support.broker import MosquittoBroker
from tests.support.tiers import TIERS, UNIT, declared_tiers, tier


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the tiers of the fixtures it uses (directly or through other fixtures); `unit` if none."""
    for item in items:
        written = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        fixture_info = getattr(item, "_fixtureinfo", None)  # pytest's record of the fixture closure (no public API)
        definitions = fixture_info.name2fixturedefs.values() if fixture_info is not None else ()
        inherited = {name for defs in definitions for definition in defs for name in declared_tiers(definition.func)}
        for name in sorted(inherited - written):
            item.add_marker(name)
        if not written | inherited:
            item.add_marker(UNIT)


@pytest.fixture(autouse=True)
def _mosquitto_only_in_broker_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that starts mosquitto without being a broker test fails, rather than slowing the unit tier unseen."""
    if request.node.get_closest_marker("broker") is not None:
        return

    def refuse(self: MosquittoBroker, *args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{request.node.nodeid} starts mosquitto but is not a broker test: mark it "
                           "@pytest.mark.broker, or have the fixture that starts it declare @tier(\"broker\") "
                           "(tests/support/tiers.py)")

    monkeypatch.setattr(MosquittoBroker, "start", refuse)


@pytest.fixture(scope="session")
@tier("slow")
def activity_sample() -> SampleModel:
    """The BasicMotions 1-D CNN (trains in seconds on the first run)."""
    return build_sample("activity")


@pytest.fixture(scope="session")
@tier("slow")
def digits_sample() -> SampleModel:
    """The digits ResNet (trains in about a minute on the first run)."""
    return build_sample("digits")


@pytest.fixture(scope="session")
@tier("slow")
def activity_long_sample() -> SampleModel:
    """Another 1-D CNN on the same IMU data with 10 s windows (window 100, hop 10), trained on class streams."""
    return build_sample("activity_long")


@pytest.fixture(scope="session")
@tier("slow")
def activity_wide_sample() -> SampleModel:
    """The same 1-D CNN made wide enough for about 1 ms per window (the daemon benchmark's model)."""
    return build_sample("activity_wide")


@pytest.fixture(scope="session")
@tier("slow")
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
@tier("slow")
def activity_recording(activity_sample, tmp_path_factory):
    """The held-out BasicMotions recordings as one CSV stream in class runs (4,000 samples at 10 Hz)."""
    from sample_models.recording import write_activity_recording

    return write_activity_recording(tmp_path_factory.mktemp("recording") / "activity.recording.csv")


@pytest.fixture
@tier("broker")
def broker():
    """A fresh, real mosquitto on a free loopback port, stopped (and its temp dir removed) after the test."""
    with MosquittoBroker() as running:
        yield running
