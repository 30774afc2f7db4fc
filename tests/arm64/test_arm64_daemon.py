"""The daemon's device install on (emulated) aarch64: `edge-runtime check` detects the Raspberry Pi 4 from its
device tree and loads the bundle, a short `run` over the real broker predicts what the x86 daemon predicts, and
an ARM system whose /proc/cpuinfo lacks the CPU lines gets one clear line instead of a SIGSEGV."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from converter.cli import main as convert
from tests.support.arm64 import TIMING_NOTE, Guest, guest_root
from tests.support.broker import Collector
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config

pytestmark = [pytest.mark.arm64, pytest.mark.slow]
TOPIC = "sensors/pi-arm/imu"
SAMPLES = 150  # window 50, hop 10: 11 windows


@pytest.fixture(scope="module")
def pi_bundle(activity_sample, tmp_path_factory) -> Path:
    bundle = tmp_path_factory.mktemp("arm-bundle") / "activity.bundle"
    assert convert([str(activity_sample.onnx_path), "-o", str(bundle), "--target", "raspberry-pi-4", "--card",
                    str(activity_sample.card_path), "--calibration", str(activity_sample.calibration_path),
                    "--eval", str(activity_sample.eval_path), "--no-latency"]) == 0
    return bundle


def device_config(path: Path, bundle: Path, broker_url: str, device_id: str, board: str | None) -> Path:
    config = write_config(path, broker_url=broker_url, bundle=bundle, device_id=device_id,
                          source={"type": "mqtt", "topic": TOPIC})
    text = config.read_text().replace("board: x86_64\n", "" if board is None else f"board: {board}\n")
    config.write_text(text)  # no board: the daemon detects it
    return config


def test_check_detects_the_pi_and_loads_the_bundle(pi_bundle, tmp_path):
    config = device_config(tmp_path / "pi.yaml", pi_bundle, "mqtt://127.0.0.1:1", "pi-arm", board=None)
    guest = Guest(guest_root(tmp_path / "root", "raspberry-pi-4"))
    result = guest.run("-m", "edge_runtime.cli", "--log-level", "WARNING", "check", str(config))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert ("board raspberry-pi-4 (detected: compatible brcm,bcm2711 in /proc/device-tree/compatible; model "
            "'Raspberry Pi 4 Model B Rev 1.4')") in out
    assert "  aarch64, 4x Cortex-A72" in out and "temperature 48.7 C, throttling none" in out
    assert "backend onnxruntime: onnxruntime 1." in out and "backend tflite: ai_edge_litert" in out
    assert "golden output reproduced, backend onnxruntime:CPUExecutionProvider ok" in out
    assert "budget 512 MB" in out
    print(f"\n{out}")


@pytest.mark.parametrize("cpuinfo", ["", "processor\t: 0\nBogoMIPS\t: 108.00\n"])
def test_a_cpuinfo_without_the_arm_lines_is_one_line_not_a_segfault(pi_bundle, tmp_path, cpuinfo):
    config = device_config(tmp_path / "pi.yaml", pi_bundle, "mqtt://127.0.0.1:1", "pi-arm", board=None)
    guest = Guest(guest_root(tmp_path / "root", board_tree=None, cpuinfo=cpuinfo))
    check = guest.run("-m", "edge_runtime.cli", "check", str(config))
    assert check.returncode == 1, check.stderr[-3000:]  # not -11 (SIGSEGV)
    assert "onnxruntime and ai-edge-litert crash (SIGSEGV)" in check.stderr
    run = guest.run("-m", "edge_runtime.cli", "run", str(config))
    assert run.returncode == 1 and "onnxruntime and ai-edge-litert crash (SIGSEGV)" in run.stderr
    crash = guest.run("-c", "import onnxruntime")  # what the check prevents
    assert crash.returncode == -11


def publish_batches(port: int, rows: np.ndarray) -> None:
    """The rows as a sensor node sends them: batches of 50 samples at the card's 10 Hz, QoS 1."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="arm64-sensor")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for start in range(0, len(rows), 50):
            body = {"ts": 1000.0 + start / 10, "samples": rows[start:start + 50].tolist()}
            client.publish(TOPIC, json.dumps(body), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def predictions_from(daemon_python: list[str] | None, env: dict | None, bundle: Path, broker, tmp_path: Path,
                     device_id: str, board: str | None, rows: np.ndarray) -> tuple[list[dict], dict]:
    config = device_config(tmp_path / f"{device_id}.yaml", bundle, broker.url, device_id, board)
    with Collector(broker.port, f"edge/{device_id}/#") as collected:
        started = time.monotonic()
        daemon = DaemonProcess(config, python=daemon_python, env=env)
        try:
            assert wait_until(lambda: any(m.get("state") == "online" for m in messages(collected, "/status")), 300), \
                daemon.output()[-3000:]
            ready_s = time.monotonic() - started
            publish_batches(broker.port, rows)
            assert wait_until(lambda: len(messages(collected, "/predictions/activity")) == 11, 300), \
                daemon.output()[-3000:]
            assert wait_until(lambda: any(m.get("models", {}).get("activity", {}).get("predictions") == 11
                                          for m in messages(collected, "/stats")), 60)
        finally:
            daemon.terminate(60)
        status = next(m for m in messages(collected, "/status") if m.get("state") == "online")
        assert not messages(collected, "/errors"), daemon.output()[-3000:]
    if daemon_python is not None:
        print(f"\n{device_id}: online after {ready_s:.1f} s on emulated aarch64 ({TIMING_NOTE})")
    return messages(collected, "/predictions/activity"), status


def test_a_short_run_over_the_broker_predicts_what_x86_predicts(pi_bundle, activity_recording, broker, tmp_path):
    rows = np.loadtxt(activity_recording, delimiter=",", skiprows=1, usecols=range(1, 7), max_rows=SAMPLES)
    guest = Guest(guest_root(tmp_path / "root", "raspberry-pi-4"))
    on_arm, status = predictions_from(guest.python, guest.env, pi_bundle, broker, tmp_path, "pi-arm", None, rows)
    on_x86, _ = predictions_from(None, None, pi_bundle, broker, tmp_path, "pc-x86", "x86_64", rows)
    assert status["board"] == "raspberry-pi-4" and status["board_detection"]["named"] is False
    assert status["device"]["temperature_c"] == 48.7  # the recorded Pi's thermal zone, served by qemu -L
    assert status["device"]["throttling"]["source"] == "firmware get_throttled"
    assert len(on_arm) == len(on_x86) == 11
    assert [p["label"] for p in on_arm] == [p["label"] for p in on_x86]
    np.testing.assert_allclose([p["score"] for p in on_arm], [p["score"] for p in on_x86], rtol=1e-5, atol=1e-6)
