"""FleetHistory: bounded sampling, transitions, deploy results, retention, and two writers on one file.

The history reads devices through a protocol (the attributes of `fleet.state.DeviceState`), so these tests build
plain stand-ins and do not depend on how the state parses MQTT messages; test_fleet_serve.py covers the real chain.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from dataclasses import dataclass, field

import pytest

from edge_fleet.history import DAY_S, FleetHistory, drift_level

T0 = 1_700_000_000.0


@dataclass
class Model:
    throughput_per_s: float | None = 10.0
    latency_p95_ms: float | None = 5.0
    drift_state: str | None = "ok"
    degraded: bool = False
    queue_depth: float | None = 0


@dataclass
class Device:
    device_id: str = "pi-01"
    state: str = "online"
    online: bool = True
    models: dict = field(default_factory=lambda: {"activity": Model()})
    deploy: dict | None = None


@pytest.fixture
def history(tmp_path):
    store = FleetHistory(tmp_path / "h.sqlite", sample_every_s=10, retention_days=1, prune_every_s=1e9)
    yield store
    store.close()


def test_file_is_wal_with_busy_timeout(history):
    db = sqlite3.connect(history.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert history._db.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    db.close()


def test_samples_at_most_once_per_interval(history):
    device = Device()
    for i in range(50):  # a message every second for 50 s
        device.models["activity"].throughput_per_s = float(i)
        history.record(device, T0 + i)
    points = history.series("pi-01", "throughput", T0 - 1)
    assert [ts - T0 for ts, _ in points] == [0, 10, 20, 30, 40]
    assert [value for _, value in points] == [0, 10, 20, 30, 40]
    assert history.writes == 6  # the transition to online and five samples
    assert history.series("pi-01", "latency_p95", T0 + 15) == [(T0 + 20, 5.0), (T0 + 30, 5.0), (T0 + 40, 5.0)]


def test_no_samples_while_offline_and_transitions_once(history):
    device = Device()
    history.record(device, T0)
    device.state, device.online = "offline", False
    for i in range(1, 10):
        history.record(device, T0 + i * 20)
    device.state, device.online = "online", True
    history.record(device, T0 + 200)
    assert [ts - T0 for ts, _ in history.series("pi-01", "throughput", T0)] == [0, 200]
    assert history.online_history("pi-01", T0 - 10) == [(T0, "online"), (T0 + 20, "offline"), (T0 + 200, "online")]
    # a window that starts while the device was offline begins with that state, at the window's start
    assert history.online_history("pi-01", T0 + 100) == [(T0 + 100, "offline"), (T0 + 200, "online")]


def test_device_level_series_combine_models(history):
    device = Device(models={"a": Model(throughput_per_s=3, latency_p95_ms=4, drift_state="ok"),
                            "b": Model(throughput_per_s=5, latency_p95_ms=9, drift_state="warning"),
                            "c": Model(throughput_per_s=None, latency_p95_ms=None, drift_state=None)})
    history.record(device, T0)
    assert history.series("pi-01", "throughput", T0) == [(T0, 8.0)]
    assert history.series("pi-01", "latency_p95", T0) == [(T0, 9.0)]
    assert history.series("pi-01", "drift", T0) == [(T0, 1.0)]
    assert history.series("pi-01", "throughput", T0, model="b") == [(T0, 5.0)]
    assert history.series("pi-01", "drift", T0, model="c") == []  # drift off: no point rather than a fake 0
    assert history.models("pi-01", T0) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="unknown metric"):
        history.series("pi-01", "temperature", T0)


def test_sampling_tolerates_jitter(history):
    """Stats every 10 s with a little jitter, sampled every 10 s: every message is a sample."""
    device = Device()
    for ts in [0, 9.8, 20.1, 29.9, 39.7]:
        history.record(device, T0 + ts)
    assert len(history.series("pi-01", "throughput", 0)) == 5


def test_no_sample_before_the_first_numbers(history):
    """A status alone (no stats yet) does not use up the sampling slot with an empty row."""
    device = Device(models={"m": Model(throughput_per_s=None, latency_p95_ms=None, drift_state=None)})
    history.record(device, T0)
    device.models["m"].throughput_per_s = 7.0
    history.record(device, T0 + 1)
    assert history.series("pi-01", "throughput", 0) == [(T0 + 1, 7.0)]


def test_untrusted_values_do_not_reach_the_file(history):
    device = Device(models={"m": Model(throughput_per_s="fast", latency_p95_ms=float("nan"), drift_state="drift",
                                       queue_depth=True), "n": Model(drift_state="weird")})
    assert history.record(device, T0)
    rows = history._db.execute("SELECT throughput, latency_p95_ms, drift, queue_depth FROM samples ORDER BY model")
    assert rows.fetchall() == [(None, None, 2, None), (10.0, 5.0, None, 0.0)]
    assert drift_level("drift") == 2 and drift_level(None) is None


def test_deploy_results_recorded_once_per_state(history):
    device = Device()
    for state in ["receiving", "receiving", "verifying", "failed", "failed"]:
        device.deploy = {"deployment_id": "d1", "state": state, "model": "activity", "sha256": "ab" * 32,
                         "error": "golden mismatch" if state == "failed" else None, "ts": T0 + 5}
        history.record(device, T0 + 10)
    deploys = history.deploys("pi-01", T0)
    assert [d["state"] for d in deploys] == ["receiving", "verifying", "failed"]
    assert deploys[-1]["error"] == "golden mismatch" and deploys[-1]["ts"] == T0 + 5


def test_retention_deletes_old_rows_but_keeps_the_current_state(history):
    device = Device(deploy={"deployment_id": "old", "state": "installed", "ts": T0})
    history.record(device, T0)
    history.record(device, T0 + 3600)
    later = T0 + 2 * DAY_S
    deleted = history.prune(later)
    assert deleted == 3  # two samples and one deploy; the only transition stays: pi-01 is still online
    assert history.series("pi-01", "throughput", 0) == []
    assert history.deploys("pi-01", 0) == []
    assert history.online_history("pi-01", later - 3600) == [(later - 3600, "online")]
    device.state, device.online = "offline", False
    history.record(device, later)
    history.prune(later + 2 * DAY_S)
    assert history.online_history("pi-01", 0) == [(later, "offline")]


def test_prune_runs_periodically_from_record(tmp_path):
    store = FleetHistory(tmp_path / "h.sqlite", sample_every_s=10, retention_days=1, prune_every_s=3600)
    try:
        device = Device()
        store.record(device, T0)
        store.record(Device(device_id="pi-02"), T0 + 2 * DAY_S)  # an hour since the last prune: prunes
        assert store.series("pi-01", "throughput", 0) == []
        assert store.series("pi-02", "throughput", 0) == [(T0 + 2 * DAY_S, 10.0)]
    finally:
        store.close()


def test_two_writers_on_one_file_share_the_sampling_gate(tmp_path):
    """Two serve processes see every retained status and, via the shared subscription, each a part of the stats."""
    first = FleetHistory(tmp_path / "h.sqlite", sample_every_s=10)
    second = FleetHistory(tmp_path / "h.sqlite", sample_every_s=10)
    try:
        device = Device()
        assert first.record(device, T0)
        assert not second.record(device, T0 + 3)  # the other process sampled 3 s ago and wrote the transition
        assert second.record(device, T0 + 11)
        assert not first.record(device, T0 + 12)
        device.state, device.online = "offline", False
        assert first.record(device, T0 + 20)
        assert not second.record(device, T0 + 20)
        assert [ts - T0 for ts, _ in first.series("pi-01", "throughput", 0)] == [0, 11]
        assert [state for _, state in second.online_history("pi-01", 0)] == ["online", "offline"]
    finally:
        first.close()
        second.close()


def _write_many(path: str, device_id: str, count: int) -> None:
    store = FleetHistory(path, sample_every_s=0)
    device = Device(device_id=device_id)
    for i in range(count):
        device.state = "online" if i % 2 == 0 else "stopped"
        store.record(device, T0 + i)
    store.close()


def test_concurrent_processes_wait_for_each_other(tmp_path):
    path = str(tmp_path / "h.sqlite")
    FleetHistory(path).close()  # create the schema first, as a running serve would have
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(path, f"pi-{n}", 150)) for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    store = FleetHistory(path)
    try:
        for n in range(3):  # sample_every_s=0: every record wrote a sample; none lost to "database is locked"
            assert len(store.series(f"pi-{n}", "throughput", 0)) == 150
            assert len(store.online_history(f"pi-{n}", 0)) == 150
        assert store.devices() == ["pi-0", "pi-1", "pi-2"]
    finally:
        store.close()


def test_record_many_is_one_transaction_and_a_locked_file_is_retried(tmp_path):
    store = FleetHistory(tmp_path / "h.sqlite", sample_every_s=10, busy_timeout_ms=100)
    blocker = sqlite3.connect(tmp_path / "h.sqlite", isolation_level=None)
    try:
        fleet = [Device(device_id=f"pi-{n:02d}") for n in range(50)]
        blocker.execute("BEGIN IMMEDIATE")  # another serve process holding the write lock for too long
        assert store.record_many(fleet, T0) == 0  # logged, not raised: the dashboard goes on
        blocker.execute("ROLLBACK")
        assert store.record_many(fleet, T0 + 1) == 100  # nothing was remembered as written: all of it again
        assert store.knows("pi-07") and not store.knows("pi-99")
        assert store.record_many(fleet, T0 + 2) == 0
    finally:
        blocker.close()
        store.close()
