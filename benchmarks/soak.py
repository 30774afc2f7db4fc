"""Soak: the daemon under a steady sensor stream for a while, with hostile traffic on the side.

    python benchmarks/soak.py [--duration 120] [--rate-hz 200] [--hostile-per-s 20]

A local mosquitto; the activity sample model (int8, converted once into .cache); the daemon reads its sensor over
MQTT (one sample per message at `--rate-hz`, the card's 10 Hz model fed faster than real time) and, every second,
`--hostile-per-s` messages of the issue 13 kind: unsigned commands and deploy requests, deeply nested JSON and
309-digit timestamps on the sensor topic. Reported every 10 s and at the end:

- messages sent and predictions received, duplicates and gaps by `seq` (at-least-once: gaps must be 0);
- memory: the daemon's RSS at the first report and at the end (growth), its peak (VmHWM);
- latency drift: the daemon's own latency p95 (stats) in the first and the last minute of the run;
- refusals counted by the daemon (stats `control.refused`, model `invalid`).

Exit status 1 when a prediction is missing. The numbers of a run go into docs/reliability.md by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.broker import MosquittoBroker  # noqa: E402
from tests.support.daemon import DaemonProcess  # noqa: E402

DEVICE = "soak-01"
HOSTILE = [
    (f"edge/{DEVICE}/cmd/reload", b'{"bundle": "/tmp/evil.bundle"}'),
    (f"edge/{DEVICE}/deploy/request", b'{"deployment_id": "evil", "bundle_sha256": "00"}'),
    ("sensors/soak/imu", b"[" * 50_000 + b"]" * 50_000),
    ("sensors/soak/imu", b'{"ts": 1' + b"0" * 309 + b', "values": [1, 2, 3, 4, 5, 6]}'),
]


def activity_bundle(cache: Path) -> Path:
    """The activity sample converted for this machine, once (reused from .cache)."""
    bundle = cache / "soak-activity.bundle"
    if not bundle.exists():
        from converter.cli import main as convert
        from sample_models import build_sample

        sample = build_sample("activity")
        cache.mkdir(parents=True, exist_ok=True)
        code = convert([str(sample.onnx_path), "-o", str(bundle), "--target", "x86_64", "--card",
                        str(sample.card_path), "--calibration", str(sample.calibration_path), "--eval",
                        str(sample.eval_path), "--no-latency"])
        if code != 0:
            raise SystemExit("soak: could not convert the activity sample")
    return bundle


class Received:
    def __init__(self, port: int):
        self.lock = threading.Lock()
        self.seqs: list[int] = []
        self.stats: list[dict] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-collector")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda client, *args: client.subscribe(f"edge/{DEVICE}/#", qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            if "/predictions/" in message.topic:
                self.seqs.append(json.loads(message.payload)["seq"])
            elif message.topic.endswith("/stats"):
                self.stats.append(json.loads(message.payload))

    def snapshot(self) -> tuple[list[int], list[dict]]:
        with self.lock:
            return list(self.seqs), list(self.stats)


def rss_mb(pid: int, field: str = "VmRSS:") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of steady stream (default 120)")
    parser.add_argument("--rate-hz", type=float, default=200.0, help="sensor messages per second (default 200)")
    parser.add_argument("--hostile-per-s", type=int, default=20, help="hostile messages per second (default 20)")
    args = parser.parse_args(argv)
    bundle = activity_bundle(ROOT / ".cache" / "soak")
    with tempfile.TemporaryDirectory(prefix="soak-") as folder, MosquittoBroker() as broker:
        workdir = Path(folder)
        config = workdir / "daemon.yaml"
        config.write_text(yaml.safe_dump({
            "device_id": DEVICE, "broker": {"url": broker.url}, "board": "x86_64",
            "spool": {"path": str(workdir / "spool.sqlite")}, "publish": {"stats_interval_s": 5},
            "models": [{"bundle": str(bundle), "source": {"type": "mqtt", "topic": "sensors/soak/imu", "qos": 1}}],
        }))
        received = Received(broker.port)
        daemon = DaemonProcess(config)
        sensor = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-sensor")
        sensor.connect("127.0.0.1", broker.port)
        sensor.loop_start()
        try:
            deadline = time.monotonic() + 30
            while "running 1 model" not in daemon.output() and time.monotonic() < deadline:
                time.sleep(0.1)
            sent = hostile = 0
            start = time.monotonic()
            first_rss = None
            next_report = start + 10
            period = 1.0 / args.rate_hz
            while time.monotonic() - start < args.duration:
                tick = time.monotonic()
                values = [float((sent * 7 + channel) % 13) - 6.0 for channel in range(6)]
                sensor.publish("sensors/soak/imu", json.dumps({"ts": 1e9 + sent * 0.1, "values": values}), qos=1)
                sent += 1
                if args.hostile_per_s and sent % max(1, int(args.rate_hz // args.hostile_per_s)) == 0:
                    topic, payload = HOSTILE[hostile % len(HOSTILE)]
                    sensor.publish(topic, payload, qos=0)
                    hostile += 1
                if tick >= next_report:
                    seqs, _ = received.snapshot()
                    rss = rss_mb(daemon.process.pid)
                    first_rss = first_rss if first_rss is not None else rss
                    print(f"{tick - start:5.0f} s  sent {sent:7d}  predictions {len(seqs):6d}  rss {rss:6.1f} MB",
                          flush=True)
                    next_report += 10
                time.sleep(max(0.0, period - (time.monotonic() - tick)))
            expected = (sent - 50) // 10 + 1  # window 50, hop 10
            deadline = time.monotonic() + 30
            while len(set(received.snapshot()[0])) < expected and time.monotonic() < deadline:
                time.sleep(0.2)
            end_rss, peak = rss_mb(daemon.process.pid), rss_mb(daemon.process.pid, "VmHWM:")
        finally:
            daemon.terminate()
            sensor.loop_stop()
            received.client.loop_stop()
        seqs, stats = received.snapshot()
    unique = sorted(set(seqs))
    gaps = (unique[-1] - unique[0] + 1 - len(unique)) if unique else 0
    minute = max(1, int(60 / 5))
    p95 = [s["models"]["activity"]["latency_ms"]["p95"] for s in stats if s.get("models", {}).get("activity")]
    control = stats[-1].get("control", {}) if stats else {}
    invalid = stats[-1]["models"]["activity"].get("invalid_by_reason", {}) if stats else {}
    print(f"\nsoak of {args.duration:.0f} s at {args.rate_hz:g} msg/s, {args.hostile_per_s} hostile msg/s")
    print(f"sent {sent} sensor + {hostile} hostile messages; expected {expected} predictions, received "
          f"{len(seqs)} ({len(unique)} unique, {len(seqs) - len(unique)} duplicates, {gaps} gaps)")
    print(f"daemon RSS {first_rss:.1f} MB at 10 s -> {end_rss:.1f} MB at the end (peak {peak:.1f} MB)")
    if p95:
        print(f"latency p95 (daemon stats): first minute {sum(p95[:minute]) / len(p95[:minute]):.1f} ms, "
              f"last minute {sum(p95[-minute:]) / len(p95[-minute:]):.1f} ms")
    print(f"refused by the daemon: control {control.get('refused', {})}, sensor input {invalid}")
    missing = expected - len(unique)
    return 1 if gaps or missing > 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
