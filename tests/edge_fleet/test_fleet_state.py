"""FleetState: every topic of docs/fleet-protocol.md applied, untrusted input counted and never raised."""

from __future__ import annotations

import json
import threading

import pytest

from edge_fleet.state import DeviceState, FleetState

NOW = 1_800_000_000.0


def status(state: str = "online", **extra) -> bytes:
    document = {
        "state": state, "schema": 1, "device_id": "pi-01", "version": "0.1.0", "ts": NOW - 5, "board": "raspberry-pi-4",
        "group": "lab", "host": "pi-01", "started": NOW - 100,
        "models": [{"name": "activity", "version": "1.2.0", "model_sha256": "ab" * 32, "precision": "int8",
                    "signature": "verified", "backend": {"active": "onnxruntime", "degraded": False, "reason": None,
                                                         "attempts": []},
                    "drift": "enabled"}],
    }
    document.update(extra)
    return json.dumps(document).encode()


def stats(**model_extra) -> bytes:
    """Shaped like the daemon's `stats`, extra keys included: the state must ignore what it does not use."""
    model = {"throughput_per_s": 9.5, "windows": 100, "predictions": 100, "batches": 50,
             "latency_ms": {"p50": 1.1, "p95": 2.5, "p99": 3.0}, "inference_ms": {"p50": 0.5, "p95": 0.7, "p99": 0.9},
             "invalid": 2, "invalid_by_reason": {"non_finite": 2}, "dropped": 1, "queue_depth": 3,
             "backend": "onnxruntime", "degraded": False, "degraded_reason": None, "source": "mqtt",
             "source_finished": False, "drift": {"state": "ok", "top_channels": [], "reasons": []}}
    model.update(model_extra)
    return json.dumps({"ts": NOW, "device_id": "pi-01", "interval_s": 10, "uptime_s": 100.0,
                       "models": {"activity": model},
                       "device": {"cpu_percent": 31.5, "load_1m": 0.4, "temperature_c": 55.0, "rss_mb": 98.2},
                       "mqtt": {}, "errors_suppressed": 0}).encode()


@pytest.fixture
def fleet() -> FleetState:
    return FleetState()


def test_online_status_describes_the_device_and_its_models(fleet):
    assert fleet.ingest("edge/pi-01/status", status(), retained=True, now=NOW) == "pi-01"
    device = fleet.device("pi-01")
    assert (device.state, device.online, device.group, device.version, device.board) == (
        "online", True, "lab", "0.1.0", "raspberry-pi-4")
    assert device.first_seen == NOW
    assert device.last_seen == NOW - 5  # a retained status is old news: the device's own timestamp
    model = device.models["activity"]
    assert (model.version, model.sha256, model.precision, model.backend, model.degraded) == (
        "1.2.0", "ab" * 32, "int8", "onnxruntime", False)


def test_live_status_counts_as_seen_now(fleet):
    fleet.ingest("edge/pi-01/status", status(), retained=False, now=NOW)
    assert fleet.device("pi-01").last_seen == NOW


def test_stats_update_model_numbers_and_device_health(fleet):
    fleet.ingest("edge/pi-01/status", status(), now=NOW)
    assert fleet.ingest("edge/pi-01/stats", stats(), now=NOW + 10) == "pi-01"
    device = fleet.device("pi-01")
    model = device.models["activity"]
    assert (model.throughput_per_s, model.latency_p95_ms, model.queue_depth, model.invalid, model.dropped) == (
        9.5, 2.5, 3, 2, 1)
    assert model.drift_state == "ok"
    assert (device.cpu_percent, device.temperature_c, device.rss_mb) == (31.5, 55.0, 98.2)
    assert device.last_seen == NOW + 10
    assert model.version == "1.2.0"  # stats do not erase what the status said


def test_only_a_valid_status_creates_a_device(fleet):
    """Issue 13: 20,000 junk messages made 20,000 devices. Stats, drift and garbage for a device that no status
    announced are counted, not tracked; a status whose device_id is not the topic's is garbage."""
    assert fleet.ingest("edge/pi-02/stats", stats(), now=NOW) is None
    for index in range(2000):
        fleet.ingest(f"edge/junk-{index}/status", b"\x00garbage", now=NOW)
        fleet.ingest(f"edge/junk-{index}/drift/m", b'{"state": "ok"}', now=NOW)
    fleet.ingest("edge/pi-03/status", status(), now=NOW)  # says it is pi-01
    assert fleet.device("pi-02") is None and fleet.device("pi-03") is None and len(fleet) == 0
    snapshot = fleet.snapshot()
    assert (snapshot["unknown_device"], snapshot["garbage"]) == (2001, 2001)
    fleet.ingest("edge/pi-02/status", status(device_id="pi-02"), now=NOW)
    assert fleet.ingest("edge/pi-02/stats", stats(), now=NOW) == "pi-02"
    assert fleet.device("pi-02").models["activity"].throughput_per_s == 9.5


def test_the_number_of_devices_is_bounded():
    fleet = FleetState(max_devices=3)
    for index in range(5):
        fleet.ingest(f"edge/pi-{index}/status", status(device_id=f"pi-{index}"), now=NOW)
    assert len(fleet) == 3 and fleet.snapshot()["refused_devices"] == 2


def test_drift_message_sets_state_and_top_channels_and_raises_an_alert(fleet):
    fleet.ingest("edge/pi-01/status", status(), now=NOW)
    report = {"state": "drift", "window": {"size": 600}, "channels": {"acc_z": {"psi": 0.4, "level": "drift"}},
              "top_channels": ["acc_z", "gyro_x"], "missing_share": 0.0, "outputs": {}, "reasons": ["acc_z psi"]}
    assert fleet.ingest("edge/pi-01/drift/activity", json.dumps(report).encode(), now=NOW + 1) == "pi-01"
    model = fleet.device("pi-01").models["activity"]
    assert (model.drift_state, model.drift_top) == ("drift", ["acc_z", "gyro_x"])
    alerts = fleet.alerts()
    assert [(a["device"], a["kind"], a["since"]) for a in alerts] == [("pi-01", "drift", NOW + 1)]
    assert "acc_z" in alerts[0]["detail"]
    assert fleet.snapshot()["counts"]["drift"] == 1
    fleet.ingest("edge/pi-01/drift/activity", json.dumps({**report, "state": "ok"}).encode(), now=NOW + 2)
    assert fleet.alerts() == []


def test_degraded_backend_from_status_and_stats(fleet):
    fleet.ingest("edge/pi-01/status", status(models=[{"name": "activity", "backend": {
        "active": "onnxruntime", "degraded": True, "reason": "TensorRT missing"}}]), now=NOW)
    model = fleet.device("pi-01").models["activity"]
    assert (model.degraded, model.degraded_reason) == (True, "TensorRT missing")
    assert [a["kind"] for a in fleet.alerts()] == ["degraded"]
    assert fleet.snapshot()["counts"]["degraded"] == 1
    fleet.ingest("edge/pi-01/stats", stats(degraded=False), now=NOW + 1)
    assert fleet.alerts() == []


def test_deploy_status_and_failed_deployment_alert(fleet):
    fleet.ingest("edge/pi-01/status", status(), now=NOW)
    progress = {"deployment_id": "d-1", "state": "receiving", "received": 3, "chunks": 10, "model": "activity",
                "sha256": "cd" * 32, "error": None, "ts": NOW}
    assert fleet.ingest("edge/pi-01/deploy/status", json.dumps(progress).encode(), now=NOW + 1) == "pi-01"
    assert fleet.device("pi-01").deploy["received"] == 3
    assert fleet.alerts() == []
    failed = {**progress, "state": "failed", "error": "signature: untrusted key"}
    fleet.ingest("edge/pi-01/deploy/status", json.dumps(failed).encode(), now=NOW + 2)
    (alert,) = fleet.alerts()
    assert (alert["kind"], alert["since"]) == ("deploy_failed", NOW + 2)
    assert "untrusted key" in alert["detail"]


def test_last_will_marks_offline_and_keeps_what_the_device_told(fleet):
    fleet.ingest("edge/pi-01/status", status(), now=NOW)
    will = {"state": "offline", "schema": 1, "device_id": "pi-01", "group": "lab"}
    fleet.ingest("edge/pi-01/status", json.dumps(will).encode(), now=NOW + 30)
    device = fleet.device("pi-01")
    assert (device.state, device.online, device.group, device.board) == ("offline", False, "lab", "raspberry-pi-4")
    assert "activity" in device.models
    (alert,) = fleet.alerts()
    assert (alert["kind"], alert["since"]) == ("offline", NOW + 30)
    counts = fleet.snapshot()["counts"]
    assert (counts["online"], counts["offline"]) == (0, 1)


def test_stopped_is_not_online_and_not_an_alert(fleet):
    fleet.ingest("edge/pi-01/status", status("stopped"), now=NOW)
    device = fleet.device("pi-01")
    assert (device.state, device.online) == ("stopped", False)
    assert fleet.alerts() == []
    assert fleet.snapshot()["counts"]["online"] == 0


@pytest.mark.parametrize("topic, payload", [
    ("edge/pi-01/stats", b"{not json"),
    ("edge/pi-01/stats", b"\xff\xfe"),  # not UTF-8
    ("edge/pi-01/stats", b"[1, 2]"),  # JSON, not an object
    ("edge/pi-01/stats", b"null"),
    ("edge/pi-01/stats", json.dumps({"models": {"activity": {"throughput_per_s": "fast"}}}).encode()),
    ("edge/pi-01/stats", json.dumps({"models": {"activity": {"latency_ms": [1, 2]}}}).encode()),
    ("edge/pi-01/stats", json.dumps({"models": ["activity"]}).encode()),
    ("edge/pi-01/stats", json.dumps({"device": {"cpu_percent": True}}).encode()),
    ("edge/pi-01/status", json.dumps({"state": "sleeping"}).encode()),
    ("edge/pi-01/status", json.dumps({"state": "online", "models": [{"version": "1"}]}).encode()),
    ("edge/pi-01/status", json.dumps({"state": "online", "group": 7}).encode()),
    ("edge/pi-01/drift/activity", json.dumps({"state": 3}).encode()),
    ("edge/pi-01/drift/activity", json.dumps({"state": "ok", "top_channels": "acc_z"}).encode()),
    ("edge/pi-01/deploy/status", json.dumps({"received": 1}).encode()),
    ("edge/pi-01/deploy/status", json.dumps({"state": "failed", "error": {"why": 1}}).encode()),
    ("edge/pi-01/stats", b"[" * 100_000),  # nested too deep for the JSON parser
])
def test_garbage_is_counted_never_raised_and_changes_nothing(fleet, topic, payload):
    fleet.ingest("edge/pi-01/status", status(), now=NOW)
    fleet.ingest("edge/pi-01/stats", stats(), now=NOW)
    before = fleet.device("pi-01").as_dict()
    assert fleet.ingest(topic, payload, now=NOW + 1) is None
    after = fleet.device("pi-01")
    assert after.problems == 1
    assert fleet.snapshot()["garbage"] == 1
    assert {**after.as_dict(), "problems": 0} == before


def test_garbage_from_an_unknown_device_is_counted_not_tracked(fleet):
    assert fleet.ingest("edge/rogue/stats", b"\x00\x01", now=NOW) is None
    assert fleet.device("rogue") is None and fleet.snapshot()["garbage"] == 1
    fleet.ingest("edge/rogue/status", status(device_id="rogue"), now=NOW)
    fleet.ingest("edge/rogue/stats", b"\x00\x01", now=NOW)
    assert fleet.device("rogue").problems == 1


def test_newer_status_schema_is_counted_and_only_the_state_is_trusted(fleet):
    newer = status(schema=2, group="elsewhere", models={"shape": "changed"})
    assert fleet.ingest("edge/pi-01/status", newer, now=NOW) == "pi-01"
    device = fleet.device("pi-01")
    assert (device.state, device.online, device.problems, device.group) == ("online", True, 1, None)
    snapshot = fleet.snapshot()
    assert (snapshot["unknown_schema"], snapshot["garbage"]) == (1, 0)


@pytest.mark.parametrize("topic", [
    "other/pi-01/status", "edge/pi-01/predictions/activity", "edge/pi-01/errors", "edge/pi-01/cmd/info",
    "edge/pi-01/cmd/info/result", "edge/bundles/abcd/chunk/0", "edge/pi-01/deploy/request", "edge/pi-01",
    "edge//stats", "edge/pi-01/drift", "edge/pi-01/stats/extra/levels", "edge/pi-01/drift/",
])
def test_unrelated_topics_are_ignored(fleet, topic):
    assert fleet.ingest(topic, b'{"state": "online"}', now=NOW) is None
    assert fleet.devices() == []
    assert fleet.snapshot()["garbage"] == 0


def test_cleared_retained_status_forgets_the_device(fleet):
    fleet.ingest("edge/pi-01/status", status(), now=NOW)
    assert fleet.ingest("edge/pi-01/status", b"", retained=False, now=NOW + 1) == "pi-01"
    assert fleet.device("pi-01") is None
    assert fleet.ingest("edge/never/status", b"", now=NOW) is None


def test_a_new_status_replaces_the_model_list(fleet):
    fleet.ingest("edge/pi-01/status", status(), now=NOW)
    fleet.ingest("edge/pi-01/stats", stats(), now=NOW)
    renamed = [{"name": "gesture", "version": "2.0.0", "backend": {"active": "tflite", "degraded": False}}]
    fleet.ingest("edge/pi-01/status", status(models=renamed), now=NOW + 1)
    assert list(fleet.device("pi-01").models) == ["gesture"]


def test_listeners_hear_every_change_and_a_failing_one_does_not_stop_ingest(fleet):
    heard = []
    fleet.add_listener(lambda device, what: heard.append((device, what)))
    fleet.add_listener(lambda device, what: 1 / 0)
    fleet.ingest("edge/pi-01/status", status(), now=NOW)
    fleet.ingest("edge/pi-01/stats", stats(), now=NOW)
    fleet.ingest("edge/pi-01/drift/activity", b'{"state": "ok"}', now=NOW)
    fleet.ingest("edge/pi-01/deploy/status", b'{"state": "receiving"}', now=NOW)
    fleet.ingest("edge/pi-01/stats", b"garbage", now=NOW)
    assert heard == [("pi-01", "status"), ("pi-01", "stats"), ("pi-01", "drift"), ("pi-01", "deploy")]


def test_devices_are_sorted_copies(fleet):
    for name in ("pi-03", "pi-01", "pi-02"):
        fleet.ingest(f"edge/{name}/status", status(device_id=name), now=NOW)
    devices = fleet.devices()
    assert [device.device_id for device in devices] == ["pi-01", "pi-02", "pi-03"]
    devices[0].models["activity"].drift_top.append("mutated")
    devices[0].state = "mutated"
    assert fleet.device("pi-01").state == "online"
    assert fleet.device("pi-01").models["activity"].drift_top == []


def test_snapshot_is_json_ready(fleet):
    fleet.ingest("edge/pi-01/status", status(), now=NOW)
    fleet.ingest("edge/pi-01/stats", stats(), now=NOW)
    fleet.ingest("edge/pi-02/status", b'{"state": "offline"}', now=NOW)
    snapshot = json.loads(json.dumps(fleet.snapshot()))
    assert snapshot["counts"] == {"total": 2, "online": 1, "offline": 1, "degraded": 0, "drift": 0}
    assert set(snapshot["devices"][0]) == set(DeviceState("x").as_dict())
    assert snapshot["devices"][0]["models"]["activity"]["latency_p95_ms"] == 2.5


def test_an_online_device_that_went_silent_is_shown_offline(fleet):
    stale = FleetState(stale_after_s=30)
    stale.ingest("edge/pi-01/status", status(ts=1000.0), retained=True, now=1000.0)
    device = stale.device("pi-01")  # read now, long after the retained ts
    assert (device.state, device.online) == ("offline", False)
    assert [alert["kind"] for alert in stale.alerts()] == ["offline"]
    stale.ingest("edge/pi-01/stats", stats())
    assert stale.device("pi-01").online


def test_another_prefix(fleet):
    lab = FleetState(prefix="lab")
    assert lab.ingest("lab/pi-01/status", status()) == "pi-01"
    assert lab.ingest("edge/pi-01/status", status()) is None


def test_ingest_from_many_threads(fleet):
    for index in range(4):
        for device in range(10):
            fleet.ingest(f"edge/d{index}-{device}/status", status(device_id=f"d{index}-{device}"), now=NOW)

    def worker(index: int) -> None:
        for message in range(500):
            fleet.ingest(f"edge/d{index}-{message % 10}/stats", stats())
            fleet.ingest(f"edge/d{index}-{message % 10}/stats", b"bad")

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = fleet.snapshot()
    assert snapshot["counts"]["total"] == 40
    assert snapshot["garbage"] == 2000
    assert sum(device["problems"] for device in snapshot["devices"]) == 2000
