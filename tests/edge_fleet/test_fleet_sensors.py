"""Cameras and detectors in the fleet tool: the state keeps each model's latest snapshot (JPEG in a store bounded in
bytes), its detection counts and its source's state; `serve` answers the JPEG; `watch` shows frames dropped;
the dashboard in headless Chromium shows the snapshot and the counts."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.request

import numpy as np
import pytest
from PIL import Image

from edge_fleet.history import FleetHistory
from edge_fleet.serve import build_server
from edge_fleet.snapshots import SnapshotStore
from edge_fleet.state import FleetState
from edge_fleet.watch import build_table
from edge_runtime.snapshot import SnapshotConfig, SnapshotTaker
from tests.edge_fleet.test_fleet_dashboard_browser import parse, run_chromium
from tests.edge_fleet.test_fleet_watch import text
from tests.support.fleet_dashboard_data import feed_sample_fleet, status

NOW = 1_800_000_000.0


def snapshot_payload(seq: int = 7) -> bytes:
    pixels = np.zeros((240, 320, 3), np.uint8)
    pixels[60:180, 100:220] = (200, 150, 120)
    detections = [{"label": "person", "score": 0.91, "box": [100.0, 60.0, 220.0, 180.0]}]
    taker = SnapshotTaker(SnapshotConfig(labels=["person"]))
    document = taker.take(pixels, detections, detections[0], model="yolo", seq=seq, ts=NOW - 5)
    return json.dumps(document).encode()


def camera_stats(dropped: int, state: str = "connected") -> bytes:
    model = {"throughput_per_s": 4.8, "latency_ms": {"p95": 190.0}, "queue_depth": 0, "invalid": 0,
             "dropped": dropped, "source": "camera",
             "source_health": {"state": state, "connects": 1, "attempts": 0, "last_error": None,
                               "frames": {"decoded": 900, "skipped": 600, "delivered": 300, "dropped": dropped}},
             "detections": {"frames_with_detections": 40, "by_label": {"person": 52, "car": 3}},
             "drift": {"state": "ok", "top_channels": []}}
    return json.dumps({"ts": NOW, "device_id": "cam-1", "models": {"yolo": model}}).encode()


def test_the_state_keeps_snapshot_detections_and_source_state():
    state = FleetState()
    # a device exists once a valid status named it (issue 13: garbage never creates devices)
    assert state.ingest("edge/cam-1/status", status("cam-1"), retained=True, now=NOW) == "cam-1"
    assert state.ingest("edge/cam-1/snapshot/yolo", snapshot_payload(), retained=True, now=NOW) == "cam-1"
    assert state.ingest("edge/cam-1/stats", camera_stats(17), now=NOW) == "cam-1"
    model = state.device("cam-1").models["yolo"]
    assert model.snapshot["trigger"] == {"label": "person", "score": 0.91}
    assert (model.snapshot["seq"], model.snapshot["width"], model.snapshot["detections"]) == (7, 320, 1)
    assert model.detections == {"person": 52, "car": 3} and model.source_state == "connected" and model.dropped == 17
    jpeg = state.snapshots.get("cam-1", "yolo")
    assert Image.open(io.BytesIO(jpeg)).size == (320, 240)
    # garbage is counted, never applied
    assert state.ingest("edge/cam-1/snapshot/yolo", json.dumps({"jpeg": "not base64!"}).encode(), now=NOW) is None
    assert state.ingest("edge/cam-1/snapshot/yolo", json.dumps({"jpeg": base64.b64encode(b"GIF89a").decode(),
                                                               "detections": []}).encode(), now=NOW) is None
    assert state.garbage == 2 and state.snapshots.get("cam-1", "yolo") == jpeg


def test_the_snapshot_store_is_bounded_in_bytes():
    store = SnapshotStore(max_bytes=250)
    for index in range(5):
        store.put(f"d{index}", "m", bytes(100))
    assert store.size_bytes == 200 and store.evicted == 3
    assert store.get("d0", "m") is None and store.get("d4", "m") is not None
    store.forget("d4")
    assert store.get("d4", "m") is None and store.size_bytes == 100


def test_watch_shows_frames_dropped_and_a_camera_that_is_reconnecting():
    state = FleetState()
    state.ingest("edge/cam-1/status", status("cam-1"), retained=True, now=NOW)
    state.ingest("edge/cam-1/stats", camera_stats(17, "reconnecting"), now=NOW)
    table = text(build_table(state.devices(), NOW))
    assert "dropped" in table and "17 reconnecting" in table


@pytest.fixture
def served(tmp_path):
    state = FleetState(prefix="edge")
    history = FleetHistory(tmp_path / "history.sqlite", sample_every_s=10)
    feed_sample_fleet(state, history)
    state.ingest("edge/pi-01/snapshot/activity", snapshot_payload(), retained=True)
    state.ingest("edge/pi-01/stats", camera_stats(17).replace(b'"yolo"', b'"activity"'))
    server = build_server(state, history, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()
    thread.join(5)
    history.close()


def test_serve_answers_the_latest_snapshot_as_a_jpeg(served):
    url, state = served
    with urllib.request.urlopen(f"{url}/api/snapshots/pi-01/activity.jpg", timeout=10) as response:
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.read() == state.snapshots.get("pi-01", "activity")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{url}/api/snapshots/pi-01/nothing.jpg", timeout=10)
    assert missing.value.code == 404


@pytest.mark.browser
def test_the_dashboard_shows_the_snapshot_and_the_detection_counts(served, tmp_path):
    url, _ = served
    dom = parse(run_chromium(tmp_path, "--dump-dom", f"{url}/#device=pi-01").stdout)
    image = dom.one("img", data_snapshot="activity")
    assert image.attrs["src"].startswith("/api/snapshots/pi-01/activity.jpg")
    assert "person 0.91" in image.parent.text()
    assert dom.one("div", data_detections="activity").text() == "detections: person 52, car 3"
    assert "dropped 17" in dom.one("span", class_="sensor").text()
