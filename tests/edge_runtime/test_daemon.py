"""The daemon end to end, as a child process, against a real mosquitto: every topic, bad input, lifecycle."""

from __future__ import annotations

import csv
import json
import math
import struct
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from tests.support.broker import Collector
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config

DEVICE = "dev-1"


def recorded_samples(recording, count: int) -> np.ndarray:
    with open(recording) as handle:
        rows = list(csv.reader(handle))[1 : count + 1]
    return np.asarray([[float(value) for value in row[1:7]] for row in rows], dtype=np.float32)


class Sensor:
    """A sensor node publishing JSON sample batches at 10 Hz timestamps (sent as fast as the test likes)."""

    def __init__(self, port: int, topic: str = "sensors/dev-1/imu"):
        self.topic = topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sensor-{time.monotonic_ns()}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.ts = 1_700_000_000.0

    def send_samples(self, values: np.ndarray, per_message: int = 10) -> None:
        for start in range(0, len(values), per_message):
            chunk = values[start : start + per_message]
            body = {"ts": self.ts, "samples": chunk.tolist()}
            self.ts += len(chunk) / 10.0
            self.send(json.dumps(body).encode())

    def send(self, payload: bytes, topic: str | None = None) -> None:
        self.client.publish(topic or self.topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def everything(broker):
    with Collector(broker.port, f"edge/{DEVICE}/#") as collector:
        yield collector


def start_mqtt_daemon(tmp_path, broker, bundle, **kwargs) -> DaemonProcess:
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=bundle,
                          source={"type": "mqtt", "topic": "sensors/dev-1/imu", "qos": 1}, **kwargs)
    return DaemonProcess(config)


def wait_online(collector, daemon: DaemonProcess, timeout: float = 30.0) -> dict:
    ok = wait_until(lambda: any(m["state"] == "online" for m in messages(collector, "/status")), timeout)
    assert ok, f"daemon never came online:\n{daemon.output()}"
    return next(m for m in messages(collector, "/status") if m["state"] == "online")


def test_predictions_status_stats_and_clean_stop(tmp_path, broker, everything, activity_bundle, activity_recording):
    daemon = start_mqtt_daemon(tmp_path, broker, activity_bundle)
    try:
        status = wait_online(everything, daemon)
        assert status["device_id"] == DEVICE and status["version"]
        (model,) = status["models"]
        assert model["name"] == "activity" and model["backend"]["active"] == "onnxruntime:CPUExecutionProvider"
        assert model["backend"]["degraded"] is False
        sensor = Sensor(broker.port)
        sensor.send_samples(recorded_samples(activity_recording, 200))  # 200 samples: windows of 50, hop 10 -> 16
        assert wait_until(lambda: len(messages(everything, "/predictions/activity")) >= 16, 20), daemon.output()
        predictions = messages(everything, "/predictions/activity")
        seqs = [p["seq"] for p in predictions]
        assert seqs == sorted(seqs) and len(set(seqs)) == 16 == seqs[-1] - seqs[0] + 1
        first = predictions[0]
        assert first["label"] in ("badminton", "running", "standing", "walking")
        assert 0 < first["score"] <= 1 and first["latency_ms"] >= 0
        assert first["ts"] == pytest.approx(1_700_000_000.0 + 4.9)  # newest sample of the first window
        assert predictions[1]["ts"] == pytest.approx(first["ts"] + 1.0)  # hop 10 at 10 Hz
        assert sum(p["label"] == "badminton" for p in predictions) >= 12  # the recording starts with badminton
        assert wait_until(lambda: any(s["models"]["activity"]["predictions"] >= 16
                                      for s in messages(everything, "/stats")), 10)
        stats = [s for s in messages(everything, "/stats") if s["models"]["activity"]["predictions"] >= 16][-1]
        numbers = stats["models"]["activity"]
        for key in ("throughput_per_s", "queue_depth", "invalid", "dropped", "backend", "degraded"):
            assert key in numbers
        assert set(numbers["latency_ms"]) == {"p50", "p95", "p99"} and numbers["latency_ms"]["p99"] > 0
        assert stats["device"]["rss_mb"] > 0 and "cpu_percent" in stats["device"]
        sensor.close()
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.output()
    assert wait_until(lambda: messages(everything, "/status")[-1]["state"] == "stopped", 5)
    with Collector(broker.port, f"edge/{DEVICE}/status") as late:  # the retained status says stopped
        assert late.wait_for(lambda received: bool(received), 5)
        topic, payload, retain = late.snapshot()[0]
        assert retain and json.loads(payload)["state"] == "stopped"


def test_bad_input_is_counted_and_reported_never_fatal(tmp_path, broker, everything, activity_bundle,
                                                       activity_recording):
    daemon = start_mqtt_daemon(tmp_path, broker, activity_bundle, extra={"max_message_bytes": 4096})
    try:
        wait_online(everything, daemon)
        sensor = Sensor(broker.port)
        sensor.send_samples(recorded_samples(activity_recording, 60))
        bad = {
            "malformed_json": b"{not json",
            "wrong_channel_count": json.dumps({"ts": sensor.ts + 1, "values": [1.0, 2.0]}).encode(),
            "non_finite": b'{"ts": 1700000100.0, "values": [1, 2, 3, NaN, 5, 6]}',
            "oversized": json.dumps({"ts": sensor.ts + 2, "samples": [[0.5] * 6] * 200}).encode(),
            "out_of_order": json.dumps({"ts": 1_600_000_000.0, "values": [0.0] * 6}).encode(),
        }
        for payload in bad.values():
            sensor.send(payload)
        sensor.send_samples(recorded_samples(activity_recording, 60))  # the stream goes on after the garbage
        expected = set(bad)
        assert wait_until(lambda: expected <= {e["reason"] for e in messages(everything, "/errors")}, 15), (
            messages(everything, "/errors"), daemon.output())
        errors = messages(everything, "/errors")
        assert all(e["model"] == "activity" and e["detail"] for e in errors)
        assert wait_until(lambda: any(set(s["models"]["activity"]["invalid_by_reason"]) >= expected
                                      for s in messages(everything, "/stats")), 10)
        assert wait_until(lambda: len(messages(everything, "/predictions/activity")) >= 8, 10)
        sensor.close()
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.output()


def test_raw_float32_rows(tmp_path, broker, everything, activity_bundle, activity_recording):
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=activity_bundle,
                          source={"type": "mqtt", "topic": "sensors/dev-1/raw", "format": "float32"})
    daemon = DaemonProcess(config)
    try:
        wait_online(everything, daemon)
        sensor = Sensor(broker.port, topic="sensors/dev-1/raw")
        values = recorded_samples(activity_recording, 50)
        sensor.send(struct.pack(f"<{values.size}f", *values.ravel()))
        sensor.send(b"\x00" * 10)  # not a whole number of rows
        assert wait_until(lambda: len(messages(everything, "/predictions/activity")) == 1, 10), daemon.output()
        assert wait_until(lambda: any(e["reason"] == "bad_length" for e in messages(everything, "/errors")), 10)
        sensor.close()
    finally:
        daemon.terminate()


def test_fallback_from_a_missing_accelerator_is_degraded_and_visible(tmp_path, broker, everything, activity_bundle):
    backends = [{"type": "onnxruntime", "providers": ["TensorrtExecutionProvider", "CPUExecutionProvider"]}]
    daemon = start_mqtt_daemon(tmp_path, broker, activity_bundle, model={"backends": backends})
    try:
        status = wait_online(everything, daemon)
        backend = status["models"][0]["backend"]
        assert backend["degraded"] is True and "TensorrtExecutionProvider" in backend["reason"]
        assert backend["active"] == "onnxruntime:CPUExecutionProvider"
        assert wait_until(lambda: bool(messages(everything, "/stats")), 10)
        model_stats = messages(everything, "/stats")[-1]["models"]["activity"]
        assert model_stats["degraded"] is True and "TensorrtExecutionProvider" in model_stats["degraded_reason"]
    finally:
        daemon.terminate()
    assert "TensorrtExecutionProvider" in daemon.output()  # the fallback is logged too


def test_last_will_says_offline_when_the_daemon_dies(tmp_path, broker, everything, activity_bundle):
    daemon = start_mqtt_daemon(tmp_path, broker, activity_bundle)
    try:
        wait_online(everything, daemon)
        daemon.kill()
        # keepalive 5 s: the broker must notice within 1.5 x keepalive (a killed process closes its socket at once)
        assert wait_until(lambda: messages(everything, "/status")[-1]["state"] == "offline", 7.5)
    finally:
        daemon.close()


def test_info_command(tmp_path, broker, everything, activity_bundle):
    from tests.support.control import ControlKey

    key = ControlKey(tmp_path / "keys")
    daemon = start_mqtt_daemon(tmp_path, broker, activity_bundle,
                               extra={"security": {"control_keys": [str(key.public)]}})
    try:
        wait_online(everything, daemon)
        sensor = Sensor(broker.port)
        sensor.send(key.command("info", {"request_id": "r1"}), topic=f"edge/{DEVICE}/cmd/info")
        assert wait_until(lambda: bool(messages(everything, "/cmd/info/result")), 10), daemon.output()
        result = messages(everything, "/cmd/info/result")[0]
        assert result["ok"] and result["request_id"] == "r1" and result["models"][0]["name"] == "activity"
        sensor.send(key.command("selfdestruct"), topic=f"edge/{DEVICE}/cmd/selfdestruct")
        assert wait_until(lambda: bool(messages(everything, "/cmd/selfdestruct/result")), 10)
        assert messages(everything, "/cmd/selfdestruct/result")[0]["ok"] is False
        sensor.close()
    finally:
        daemon.terminate()


def test_replay_source_runs_to_the_end(tmp_path, broker, everything, activity_bundle, activity_recording):
    """4,000 recorded samples, window 50, hop 10: exactly 396 predictions, none dropped, in order."""
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=activity_bundle,
                          source={"type": "replay", "path": str(activity_recording), "speed": 0},
                          model={"queue_size": 16})
    daemon = DaemonProcess(config, "--exit-when-done")
    assert daemon.wait(60) == 0, daemon.output()
    assert wait_until(lambda: len(messages(everything, "/predictions/activity")) >= 396, 10)
    predictions = messages(everything, "/predictions/activity")
    seqs = [p["seq"] for p in predictions]
    assert len(predictions) == 396 and seqs == list(range(seqs[0], seqs[0] + 396))
    labels = [p["label"] for p in predictions]
    runs = sum(1 for i, label in enumerate(labels) if i == 0 or labels[i - 1] != label)
    assert runs < 40  # the stream is long runs of one activity, and the model follows them
    assert math.isclose(sum(label == "running" for label in labels), 99, abs_tol=12)
