"""The sensor-node example reads a (file-backed) IIO device and feeds the daemon over MQTT at the card's 10 Hz."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.broker import Collector
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config

NODES = Path(__file__).resolve().parents[2] / "firmware_examples" / "sensor-nodes"
SCRIPT = NODES / "linux-iio" / "iio_mqtt_publisher.py"
CHANNELS = ["in_accel_x_raw", "in_accel_y_raw", "in_accel_z_raw", "in_anglvel_x_raw", "in_anglvel_y_raw",
            "in_anglvel_z_raw"]


def fake_iio(root: Path) -> None:
    """The files the kernel's IIO driver for an MPU-6050 shows: raw counts and per-type scales."""
    device = root / "iio:device0"
    device.mkdir(parents=True)
    (device / "name").write_text("mpu6050\n")
    (device / "in_accel_scale").write_text("0.000598\n")
    (device / "in_anglvel_scale").write_text("0.000133\n")
    for index, channel in enumerate(CHANNELS):
        (device / channel).write_text(f"{1000 * (index + 1)}\n")


def test_sensor_node_feeds_the_daemon(tmp_path, broker, activity_bundle):
    fake_iio(tmp_path / "iio")
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=activity_bundle,
                          source={"type": "mqtt", "topic": "sensors/dev-1/imu"})
    with Collector(broker.port, "#") as everything:
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: any(m.get("state") == "online" for m in messages(everything, "/status")), 30)
            node = subprocess.run(
                [sys.executable, str(SCRIPT), "--port", str(broker.port), "--topic", "sensors/dev-1/imu", "--device",
                 "mpu6050", "--channels", ",".join(CHANNELS), "--rate", "10", "--batch", "10", "--count", "50",
                 "--root", str(tmp_path / "iio")],
                capture_output=True, text=True, timeout=60,
            )
            assert node.returncode == 0, node.stderr
            assert wait_until(lambda: len(messages(everything, "/predictions/activity")) == 1, 20), daemon.output()
            assert not messages(everything, "/errors")
        finally:
            daemon.terminate()
    batches = [json.loads(payload) for topic, payload, _ in everything.snapshot() if topic == "sensors/dev-1/imu"]
    assert len(batches) == 5 and all(len(batch["samples"]) == 10 for batch in batches)
    first = batches[0]["samples"][0]
    assert first[0] == 1000 * 0.000598 and first[3] == 4000 * 0.000133  # (raw + offset) * scale, per type
