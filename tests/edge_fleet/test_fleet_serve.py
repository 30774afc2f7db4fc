"""`edge-fleet serve` over real HTTP: the JSON API, /metrics, the page, the history recorder, SIGTERM.

The state is the real `FleetState` fed with protocol messages (tests/support/fleet_dashboard_data.py), the server
the real `ThreadingHTTPServer` on a free loopback port.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_fleet.history import FleetHistory
from edge_fleet.serve import HistoryRecorder, build_server, parse_http
from edge_fleet.state import FleetState
from tests.support.fleet_dashboard_data import feed_sample_fleet, model_stats, stats, status

ROOT = Path(__file__).resolve().parents[2]


def _strict(text: str):
    """JSON as a browser parses it: NaN and Infinity are errors."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def get(base: str, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def get_json(base: str, path: str, expect: int = 200):
    code, content_type, body = get(base, path)
    assert code == expect, body
    assert content_type == "application/json"
    return _strict(body)


@pytest.fixture
def served(tmp_path):
    """A sample fleet behind a running server; yields (base url, state, history)."""
    state = FleetState(prefix="edge")
    history = FleetHistory(tmp_path / "history.sqlite", sample_every_s=10)
    feed_sample_fleet(state, history)
    server = build_server(state, history, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state, history
    server.shutdown()
    server.server_close()
    thread.join(5)
    history.close()


def test_fleet_snapshot(served):
    base, _, _ = served
    snapshot = get_json(base, "/api/fleet")
    by_id = {device["device_id"]: device for device in snapshot["devices"]}
    assert sorted(by_id) == ["pi-01", "pi-02", "pi-03", "pi-04"]
    assert by_id["pi-02"]["state"] == "offline" and by_id["pi-01"]["state"] == "online"
    assert snapshot["counts"]["total"] == 4
    assert snapshot["counts"]["online"] == 3 and snapshot["counts"]["offline"] == 1
    assert snapshot["counts"]["degraded"] >= 1 and snapshot["counts"]["drift"] >= 1


def test_alerts(served):
    base, _, _ = served
    alerts = get_json(base, "/api/alerts")["alerts"]
    kinds = {(alert["device"], alert["kind"]) for alert in alerts}
    assert {("pi-02", "offline"), ("pi-03", "drift"), ("pi-03", "degraded"), ("pi-04", "deploy_failed")} <= kinds
    assert not any(alert["device"] == "pi-01" for alert in alerts)


def test_device_with_series(served):
    base, _, _ = served
    doc = get_json(base, "/api/devices/pi-03")
    assert doc["device"]["device_id"] == "pi-03" and doc["window_s"] == 3600
    assert set(doc["series"]) == {"activity", "digits"}
    throughput = doc["series"]["digits"]["throughput"]
    assert len(throughput) == 61  # ten minutes sampled every 10 s
    assert all(doc["since"] <= ts <= doc["ts"] + 1 for ts, _ in throughput)
    assert all(19 <= value <= 31 for _, value in throughput)
    drift = [value for _, value in doc["series"]["activity"]["drift"]]
    assert drift[0] == 0 and drift[-1] == 2 and 1 in drift
    assert [state for _, state in doc["online"]] == ["online"]

    offline = get_json(base, "/api/devices/pi-02?window=86400")
    assert offline["window_s"] == 86400
    assert [state for _, state in offline["online"]] == ["online", "offline"]
    failed = get_json(base, "/api/devices/pi-04")
    assert [(d["deployment_id"], d["state"]) for d in failed["deploys"]] == [("rollout-7", "failed")]


def test_device_errors(served):
    base, _, _ = served
    assert "unknown device" in get_json(base, "/api/devices/nope", expect=404)["error"]
    assert "window" in get_json(base, "/api/devices/pi-01?window=-5", expect=400)["error"]
    assert "window" in get_json(base, "/api/devices/pi-01?window=abc", expect=400)["error"]
    assert get_json(base, "/api/nothing", expect=404)["error"]


def test_device_ids_are_url_decoded(served):
    base, state, _ = served
    state.ingest("edge/pi 05/status", status("pi 05"), retained=True)
    assert get_json(base, "/api/devices/pi%2005")["device_id"] == "pi 05"


def test_metrics_parse_and_reflect_the_fleet(served):
    base, _, _ = served
    code, content_type, body = get(base, "/metrics")
    assert code == 200 and content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("edge_fleet_devices") == 4
    assert value("edge_fleet_devices_online") == 3 and value("edge_fleet_devices_offline") == 1
    assert value("edge_fleet_device_online", device="pi-01") == 1
    assert value("edge_fleet_device_online", device="pi-02") == 0
    assert value("edge_fleet_model_drift_state", device="pi-03", model="activity") == 2
    assert value("edge_fleet_model_drift_state", device="pi-01", model="activity") == 0
    assert value("edge_fleet_model_degraded", device="pi-03", model="activity") == 1
    assert value("edge_fleet_model_degraded", device="pi-03", model="digits") == 0
    assert value("edge_fleet_model_throughput_per_second", device="pi-04", model="activity") == 10
    assert value("edge_fleet_model_latency_p95_seconds", device="pi-04", model="activity") == pytest.approx(0.0045)
    assert 0 <= value("edge_fleet_device_last_seen_age_seconds", device="pi-01") < 60
    assert value("edge_fleet_device_last_seen_age_seconds", device="pi-02") >= 110
    assert value("edge_fleet_alerts", kind="offline") >= 1
    assert value("edge_fleet_alerts", kind="deploy_failed") >= 1


def test_metrics_read_the_state_at_scrape_time(served):
    """No gauges to keep in sync: a device that appears is in the very next scrape."""
    base, state, _ = served
    state.ingest("edge/pi-09/status", status("pi-09"), retained=True)
    assert 'edge_fleet_device_online{device="pi-09"} 1.0' in get(base, "/metrics")[2]


def test_page_health_and_head(served):
    base, _, _ = served
    code, content_type, body = get(base, "/")
    assert code == 200 and content_type == "text/html; charset=utf-8"
    assert 'id="fleet-table"' in body and 'id="alerts"' in body and 'id="device-charts"' in body
    assert "http://" not in body.replace("http://www.w3.org/2000/svg", "")  # self-contained: no CDN
    health = get_json(base, "/healthz")
    assert health["status"] == "ok" and health["devices"] == 4
    request = urllib.request.Request(base + "/", method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and response.read() == b""


def test_nan_from_a_device_still_gives_strict_json(served):
    base, state, _ = served
    payload = stats("pi-01", {"activity": model_stats(float("nan"), float("inf"))}, time.time())
    state.ingest("edge/pi-01/stats", payload)
    get_json(base, "/api/fleet")  # _strict raises on NaN/Infinity
    get_json(base, "/api/devices/pi-01")
    body = get(base, "/metrics")[2]
    list(text_string_to_metric_families(body))


def test_recorder_writes_on_messages_and_sweeps(tmp_path):
    state = FleetState(prefix="edge")
    history = FleetHistory(tmp_path / "h.sqlite", sample_every_s=10)
    clock = [1000.0]
    recorder = HistoryRecorder(state, history, clock=lambda: clock[0])
    state.add_listener(recorder.notify)
    state.ingest("edge/pi-01/status", status("pi-01"), retained=True)
    state.ingest("edge/pi-01/stats", stats("pi-01", {"activity": model_stats(12.0, 3.0)}, time.time()))
    assert recorder.flush() == 1
    assert history.series("pi-01", "throughput", 0) == [(1000.0, 12.0)]
    clock[0] = 1030.0
    state.ingest("edge/pi-01/status", status("pi-01", "offline"))
    recorder.flush()
    assert [s for _, s in history.online_history("pi-01", 0)] == ["online", "offline"]
    assert recorder.flush(sweep=True) == 1 and recorder.errors == 0
    history.close()


def test_recorder_thread_records_in_the_background(tmp_path):
    state = FleetState(prefix="edge")
    history = FleetHistory(tmp_path / "h.sqlite", sample_every_s=10)
    recorder = HistoryRecorder(state, history)
    state.add_listener(recorder.notify)
    recorder.start()
    try:
        state.ingest("edge/pi-01/status", status("pi-01"), retained=True)
        deadline = time.monotonic() + 10
        while not history.online_history("pi-01", 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [s for _, s in history.online_history("pi-01", 0)] == ["online"]
    finally:
        recorder.stop()
        history.close()


@pytest.mark.parametrize(("text", "expected"), [(":8080", ("127.0.0.1", 8080)), ("127.0.0.1:9", ("127.0.0.1", 9)),
                                                ("[::1]:8000", ("::1", 8000)), ("localhost:0", ("localhost", 0))])
def test_parse_http(text, expected):
    assert parse_http(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:", "host:99999", "host:http"])
def test_parse_http_refuses(text):
    with pytest.raises(ValueError, match="--http"):
        parse_http(text)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SERVE = """
import argparse, sys
from pathlib import Path
from edge_fleet.serve import main_serve
args = argparse.Namespace(broker=sys.argv[1], http=sys.argv[2], history=Path(sys.argv[3]), retention_days=7.0,
                          share_group="dash", prefix="edge")
raise SystemExit(main_serve(args))
"""


def test_main_serve_end_to_end_and_sigterm(broker, tmp_path):
    """A real broker, a retained status, `main_serve` in its own process: the device shows up on the API and in
    the history file, and SIGTERM ends the process cleanly (exit 0) within seconds."""
    import paho.mqtt.client as mqtt

    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fake-device")
    publisher.connect("127.0.0.1", broker.port)
    publisher.loop_start()
    publisher.publish("edge/pi-77/status", status("pi-77"), qos=1, retain=True).wait_for_publish(10)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", SERVE, f"mqtt://127.0.0.1:{broker.port}", f"127.0.0.1:{port}",
                                str(tmp_path / "h.sqlite")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        devices: list = []
        while time.monotonic() < deadline and not devices:
            with contextlib.suppress(OSError, AssertionError):  # not listening yet
                devices = [d["device_id"] for d in get_json(base, "/api/fleet")["devices"]]
            if not devices:
                assert process.poll() is None, process.stdout.read()
                time.sleep(0.2)
        assert devices == ["pi-77"]
        stats_payload = stats("pi-77", {"activity": model_stats(14.0, 3.5)}, time.time())
        publisher.publish("edge/pi-77/stats", stats_payload, qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 15
        throughput = None
        while time.monotonic() < deadline and throughput is None:
            models = get_json(base, "/api/devices/pi-77")["device"]["models"]
            throughput = (models.get("activity") or {}).get("throughput_per_s")
            time.sleep(0.1)
        assert throughput == 14.0
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        assert process.returncode == 0, output
        assert "http://127.0.0.1" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        publisher.loop_stop()
        publisher.disconnect()
    history = FleetHistory(tmp_path / "h.sqlite")
    try:
        assert [s for _, s in history.online_history("pi-77", 0)] == ["online"]
        assert not math.isnan(history.series("pi-77", "throughput", 0)[-1][1])
    finally:
        history.close()


@pytest.mark.parametrize(("change", "message"), [({"http": "nonsense"}, "--http"),
                                                 ({"share_group": "a/b"}, "share group"),
                                                 ({"history": "/proc/nope/h.sqlite"}, "cannot open the history")])
def test_main_serve_refuses_bad_options(tmp_path, capsys, change, message):
    from edge_fleet.serve import main_serve

    options = {"broker": "mqtt://127.0.0.1:1", "http": "127.0.0.1:0", "history": tmp_path / "h.sqlite",
               "retention_days": 7.0, "share_group": None, "prefix": "edge", **change}
    assert main_serve(argparse.Namespace(**options)) == 2
    assert message in capsys.readouterr().err


def test_main_serve_refuses_a_port_in_use(tmp_path, capsys):
    import socket

    from edge_fleet.serve import main_serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        options = argparse.Namespace(broker="mqtt://127.0.0.1:1", http=f"127.0.0.1:{taken.getsockname()[1]}",
                                     history=tmp_path / "h.sqlite", retention_days=7.0, share_group=None,
                                     prefix="edge")
        assert main_serve(options) == 2
    assert "cannot listen" in capsys.readouterr().err
