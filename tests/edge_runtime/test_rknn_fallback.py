"""A real rk3588 bundle (CPU int8 ONNX + a .rknn built by rknn-toolkit2) in the daemon on this machine, which has no
NPU and no rknn-toolkit-lite2: the model runs on the bundle's ONNX, and status, stats and the log say why
(`rknn` tier: the bundle needs `make toolchain-rknn`)."""

from __future__ import annotations

import csv
import json

import paho.mqtt.client as mqtt
import pytest

from converter.cli import main as convert
from edge_runtime.bundle import read_bundle
from tests.support.broker import Collector
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config
from tests.support.rknn_models import require_toolchain

pytestmark = [pytest.mark.rknn, pytest.mark.slow]
DEVICE = "rk-01"
SENSOR_TOPIC = "sensors/rk-01/imu"


@pytest.fixture(scope="module")
def rk3588_bundle(activity_sample, tmp_path_factory):
    require_toolchain()
    out = tmp_path_factory.mktemp("rk3588") / "activity.bundle"
    assert convert([str(activity_sample.onnx_path), "-o", str(out), "--target", "rk3588", "--card",
                    str(activity_sample.card_path), "--calibration", str(activity_sample.calibration_path),
                    "--eval", str(activity_sample.eval_path), "--no-latency"]) == 0
    assert [entry.format for entry in read_bundle(out).manifest.accelerated] == ["rknn"]
    return out


def publish_recording(port: int, recording, count: int) -> None:
    """The first `count` samples of the recording as JSON batches of 10 at 10 Hz timestamps, as a sensor node sends."""
    with open(recording) as handle:
        rows = [[float(value) for value in row[1:7]] for row in list(csv.reader(handle))[1 : count + 1]]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="rk-sensor")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for start in range(0, len(rows), 10):
            body = {"ts": 1_700_000_000.0 + start / 10, "samples": rows[start : start + 10]}
            client.publish(SENSOR_TOPIC, json.dumps(body), qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_daemon_falls_back_from_the_npu_to_the_bundles_onnx_visibly(tmp_path, broker, rk3588_bundle,
                                                                         activity_recording):
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=rk3588_bundle, device_id=DEVICE,
                          source={"type": "mqtt", "topic": SENSOR_TOPIC, "qos": 1}, extra={"board": "rk3588"})
    with Collector(broker.port, f"edge/{DEVICE}/#") as collector:
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: any(m["state"] == "online" for m in messages(collector, "/status")), 30), \
                daemon.output()
            publish_recording(broker.port, activity_recording, 200)  # windows of 50, hop 10: 16 predictions
            assert wait_until(lambda: len(messages(collector, "/predictions/activity")) >= 16, 20), daemon.output()
            assert wait_until(lambda: bool(messages(collector, "/stats")), 10)
        finally:
            daemon.terminate()
        status = next(m for m in messages(collector, "/status") if m["state"] == "online")
        stats = messages(collector, "/stats")[-1]["models"]["activity"]
    backend = status["models"][0]["backend"]
    assert backend["active"] == "onnxruntime:CPUExecutionProvider" and backend["degraded"] is True
    assert backend["reason"].startswith("rknn unavailable (rknn-toolkit-lite2 is not installed")
    assert backend["attempts"][0].startswith("rknn: unavailable")
    assert stats["degraded"] is True and "rknn-toolkit-lite2" in stats["degraded_reason"]
    assert "backend fallback: rknn unavailable" in daemon.output()
