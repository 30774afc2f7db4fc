"""`make demo`: the main job on embedded defaults, start to finish on one machine.

1. train (once, cached) the activity model on BasicMotions, a real smartwatch IMU data set that sktime ships;
2. convert it with edge-convert for this machine's board and show the report;
3. start a local MQTT broker: mosquitto when it is installed, else the pure-Python amqtt broker;
4. run the edge-runtime daemon on the held-out recordings replayed as a live sensor stream (long runs of one
   activity, as a real wearer produces them; from sample 3,000 on, gyro_x gets a 1 sd offset, a sensor fault),
   and show the predictions arriving, the device's status and stats, and the drift state going from ok to drift.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the broker did not open port {port}")


def start_broker(kind: str, port: int, workdir: Path) -> tuple[subprocess.Popen, str]:
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if kind == "mosquitto" or (kind == "auto" and mosquitto):
        if not mosquitto:
            raise SystemExit("mosquitto is not installed (apt-get install mosquitto), try --broker embedded")
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        process = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name = "mosquitto"
    else:
        process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "embedded_broker.py"), str(port)])
        name = "amqtt (embedded)"
    wait_for_port(port)
    return process, name


def with_sensor_fault(recording: Path, target: Path, start: int) -> Path:
    """The recording with gyro_x offset by one standard deviation (of the whole recording) from `start` on."""
    lines = recording.read_text().splitlines()
    header, rows = lines[0], [line.split(",") for line in lines[1:]]
    column = header.split(",").index("gyro_x")
    values = [float(row[column]) for row in rows]
    mean = sum(values) / len(values)
    std = (sum((value - mean) ** 2 for value in values) / len(values)) ** 0.5
    for row in rows[start:]:
        row[column] = f"{float(row[column]) + std:.6g}"
    target.write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n")
    return target


def board_for_host() -> str:
    return "x86_64" if platform.machine() == "x86_64" else "generic-arm64"


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(str(part) for part in cmd), flush=True)
    subprocess.run([str(part) for part in cmd], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cache" / "demo")
    parser.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto")
    parser.add_argument("--speed", type=float, default=40.0, help="replay speed (x real time)")
    parser.add_argument("--fault-at", type=int, default=3000,
                        help="sample from which the replay adds a 1 sd offset to gyro_x (-1: no fault)")
    args = parser.parse_args()
    args.fault_at = None if args.fault_at < 0 else args.fault_at
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    run([sys.executable, "-m", "sample_models", "activity", workdir, "--recording"])
    bundle = workdir / "activity.bundle"
    run([BIN / "edge-convert", workdir / "activity.onnx", "-o", bundle, "--target", board_for_host(), "--card",
         workdir / "activity.card.yaml", "--calibration", workdir / "activity.calibration.npz", "--eval",
         workdir / "activity.eval.npz"])

    recording = workdir / "activity.recording.csv"
    true_labels = [line.rsplit(",", 1)[1] for line in recording.read_text().splitlines()[1:]]
    if args.fault_at is not None:
        recording = with_sensor_fault(recording, workdir / "activity.replayed.csv", args.fault_at)
        print(f"\nfrom sample {args.fault_at} on, the replay adds 1 sd to gyro_x: a sensor fault for drift to find")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="edge-demo-") as scratch:
        broker, broker_name = start_broker(args.broker, port, Path(scratch))
        config = workdir / "demo.yaml"
        config.write_text(
            f"device_id: demo-01\nbroker: mqtt://127.0.0.1:{port}\nboard: {board_for_host()}\n"
            f"spool: {{path: {Path(scratch) / 'spool.sqlite'}}}\n"
            f"publish: {{stats_interval_s: 2}}\n"
            f"models:\n  - bundle: {bundle}\n"
            f"    source: {{type: replay, path: {recording}, speed: {args.speed}}}\n"
            f"    drift: {{interval_s: 2}}\n"
        )
        print(f"\nbroker: {broker_name} on 127.0.0.1:{port}; daemon config: {config}\n", flush=True)
        received: list[dict] = []
        lock = threading.Lock()
        first_seq: list[int] = []

        def truth_for(body: dict) -> str:
            # the k-th prediction ends at sample 49 + 10k of the recording (window 50, hop 10)
            k = body["seq"] - first_seq[0]
            return true_labels[min(49 + 10 * k, len(true_labels) - 1)]

        def on_message(client, userdata, message) -> None:
            topic = message.topic
            try:
                body = json.loads(message.payload)
            except ValueError:
                return
            if "/predictions/" in topic:
                with lock:
                    first_seq[:] = first_seq or [body["seq"]]
                    received.append(body)
                    count = len(received)
                truth = truth_for(body)
                if count % 5 == 1:
                    mark = "ok" if body["label"] == truth else "  "
                    print(f"  prediction seq {body['seq']:>3}: {body['label']:<10} {body['score']:.3f}  "
                          f"(wearer: {truth:<9}) {mark}  latency {body['latency_ms']:.2f} ms", flush=True)
            elif topic.endswith("/status"):
                models = ", ".join(f"{m['name']} on {m['backend']['active']}" for m in body.get("models", []))
                print(f"status: {body['state']} ({models})", flush=True)
            elif "/drift/" in topic:
                top = ", ".join(body.get("top_channels", [])[:2]) or "-"
                reason = (body.get("reasons") or [""])[0]
                print(f"drift: {body['state']:<7} (window {body['window']['filled']}/{body['window']['size']} samples; "
                      f"most changed: {top}) {reason}", flush=True)
            elif topic.endswith("/stats"):
                for name, model in body["models"].items():
                    latency = model["latency_ms"]
                    print(f"stats: {name} {model['predictions']} predictions, {model['throughput_per_s']}/s, "
                          f"latency p50 {latency['p50']} ms p99 {latency['p99']} ms, invalid {model['invalid']}, "
                          f"degraded {model['degraded']}, rss {body['device']['rss_mb']} MB", flush=True)

        watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-watcher")
        watcher.on_message = on_message
        watcher.connect("127.0.0.1", port)
        watcher.subscribe("edge/demo-01/#", qos=1)
        watcher.loop_start()
        daemon = subprocess.Popen([BIN / "edge-runtime", "--log-level", "WARNING", "run", config, "--exit-when-done"],
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            code = daemon.wait(timeout=600)
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(30)
            time.sleep(0.5)
            watcher.loop_stop()
            broker.terminate()
            broker.wait(10)
        correct = sum(1 for body in received if body["label"] == truth_for(body))
        print(f"\n{len(received)} predictions over MQTT; {correct} match what the wearer was doing "
              f"({100 * correct / max(len(received), 1):.1f}%, windows that straddle two activities included)")
        return code


if __name__ == "__main__":
    raise SystemExit(main())
