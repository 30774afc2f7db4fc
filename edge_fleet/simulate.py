"""`edge-fleet simulate`: N simulated daemons in one process, speaking the daemon's topics (docs/fleet-protocol.md).

For load tests and demos of `watch` and `serve` without a thousand boards. Topics, the status document, the last
will and the other documents come from the contract (edge_runtime/contract), so they are the daemon's. Each
device has its own MQTT connection, because the last will is per connection: kill the process (SIGKILL) and the
broker publishes `offline` for every device, exactly as when boards lose power. SIGTERM (or the end of
`--duration`) is the clean exit: every device publishes `stopped`, then disconnects.

All devices run on one `ClientLoop` thread (epoll, not one thread and `select()` per client, which stops at
file descriptor 1023), so 1,000 devices at 1 Hz use a fraction of one core.

Per device and tick (`--rate-hz`): a prediction at QoS 1 with a `seq` that counts from 1 (what a loss test
counts), and `stats` at QoS 0 with plausible numbers for its board. Now and then `drift/<model>`: most devices stay
`ok`, about 2% drift after a while, about 2% run a degraded backend. Numbers are random but reproducible
(`--seed`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import random
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_fleet.mqtt_loop import ClientLoop, fast_client
from edge_runtime import __version__
from edge_runtime.contract import (
    DeviceTopics,
    DriftDocument,
    PredictionDocument,
    StatsDocument,
    offline_will,
    parse_broker_url,
    status_document,
)
from edge_runtime.mqtt_client import ClientSettings

log = logging.getLogger("edge_fleet.simulate")

MODEL = "activity"
LABELS = ("walking", "running", "standing", "badminton")
CHANNELS = ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
BOARDS = {  # board -> (latency p50 in ms, temperature baseline)
    "raspberry-pi-4": (3.1, 52.0),
    "raspberry-pi-5": (1.4, 48.0),
    "jetson-orin": (0.7, 44.0),
}
DRIFT_EVERY_S = 30.0
STOP_TIMEOUT_S = 5.0


class SimDevice:
    """One simulated daemon: its own connection, retained status with a last will, timers on the loop."""

    def __init__(self, sim: Simulator, index: int, device_id: str):
        self.sim = sim
        self.device_id = device_id
        rng = self.rng = random.Random(f"{sim.seed}:{device_id}")
        self.board = list(BOARDS)[index % len(BOARDS)]
        self.degraded = rng.random() < 0.02
        self.drift_after = sim.started + rng.uniform(10, 90) if rng.random() < 0.02 else None
        self.seq = 0
        self.invalid = 0
        self.stats_sent = 0
        self.drift_sent = 0
        self.ticking = False
        self.drift_state = "ok"
        topics = DeviceTopics(sim.prefix, device_id)
        self.topic_status, self.topic_stats = topics.status, topics.stats
        self.topic_prediction, self.topic_drift = topics.predictions(MODEL), topics.drift(MODEL)
        # the daemon's client id and protocol (MQTT 3.1.1, clean session)
        client = self.client = fast_client(ClientSettings(sim.address, f"edge-runtime-{device_id}",
                                                          keepalive_s=sim.keepalive))
        client.max_inflight_messages_set(1000)  # `stopped` must never wait behind a full window at exit
        client.will_set(self.topic_status, json.dumps(offline_will(device_id, sim.group)), 1, True)
        client.on_connect = self._on_connect

    # -- messages -----------------------------------------------------------------------------------------------
    def status(self, state: str) -> bytes:
        backend = ({"active": "onnxruntime:CPUExecutionProvider", "degraded": True,
                    "reason": "TensorrtExecutionProvider: libnvinfer.so.8 not found"} if self.degraded else
                   {"active": "onnxruntime:CPUExecutionProvider", "degraded": False, "reason": None})
        return json.dumps(status_document(
            state, device_id=self.device_id, group=self.sim.group, version=__version__, board=self.board,
            simulated=True,
            models=[{"name": MODEL, "version": self.sim.model_version, "model_sha256": self.sim.model_sha256,
                     "precision": "int8", "backend": backend, "drift": "enabled"}],
        )).encode()

    def stats(self, now: float) -> bytes:
        rng, rate = self.rng, self.sim.rate_hz
        p50 = BOARDS[self.board][0] * (3.0 if self.degraded else 1.0) * rng.uniform(0.9, 1.1)
        if rng.random() < 0.01:
            self.invalid += 1
        document: StatsDocument = {
            "ts": now, "device_id": self.device_id, "interval_s": 1.0 / rate,
            "models": {MODEL: {
                "throughput_per_s": round(rate * rng.uniform(0.97, 1.03), 3),
                "latency_ms": {"p50": round(p50, 3), "p95": round(p50 * 1.6, 3), "p99": round(p50 * 2.2, 3)},
                "queue_depth": rng.randint(0, 2), "invalid": self.invalid, "dropped": 0,
                "backend": "onnxruntime:CPUExecutionProvider", "degraded": self.degraded,
                "degraded_reason": "TensorrtExecutionProvider: libnvinfer.so.8 not found" if self.degraded else None,
                "drift": {"state": self.drift_state, "top_channels": self._top_channels()}}},
            "device": {"cpu_percent": round(rng.uniform(15, 45), 1),
                       "temperature_c": round(BOARDS[self.board][1] + rng.uniform(-2, 6), 1),
                       "rss_mb": round(rng.uniform(90, 110), 1)},
        }
        return json.dumps(document).encode()

    def prediction(self, now: float) -> bytes:
        self.seq += 1
        label = self.rng.randrange(len(LABELS))
        document: PredictionDocument = {
            "seq": self.seq, "ts": now, "model": MODEL, "label": LABELS[label], "class": label,
            "score": round(self.rng.uniform(0.6, 0.99), 3),
            "latency_ms": round(BOARDS[self.board][0] * self.rng.uniform(0.9, 1.2), 3)}
        return json.dumps(document).encode()

    def drift(self) -> bytes:
        top = self._top_channels()
        channels = {name: {"psi": round(0.4 if name in top else self.rng.uniform(0, 0.05), 4),
                           "level": "drift" if name in top else "ok"} for name in CHANNELS}
        document: DriftDocument = {
            "state": self.drift_state, "window": {"size": 600, "filled": 600},
            "channels": channels, "top_channels": top, "missing_share": 0.0,
            "reasons": [f"{name} psi 0.4 >= 0.25" for name in top]}
        return json.dumps(document).encode()

    def _top_channels(self) -> list[str]:
        return ["acc_z", "gyro_x"] if self.drift_state == "drift" else []

    # -- timers (loop thread) ------------------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            return
        client.publish(self.topic_status, self.status("online"), qos=1, retain=True)
        if not self.ticking:
            self.ticking = True
            loop, period = self.sim.loop, 1.0 / self.sim.rate_hz
            loop.call_later(self.rng.uniform(0, period), self._tick)
            loop.call_later(self.rng.uniform(0, DRIFT_EVERY_S), self._drift_tick)

    def _tick(self) -> None:
        if self.sim.stopping:
            return
        now = time.time()
        # QoS 1 while disconnected: paho keeps it and sends it after the reconnect, like the daemon's spool
        self.client.publish(self.topic_prediction, self.prediction(now), qos=1)
        if self.client.is_connected():
            self.client.publish(self.topic_stats, self.stats(now), qos=0)
            self.stats_sent += 1
        self.sim.loop.call_later(1.0 / self.sim.rate_hz, self._tick)

    def _drift_tick(self) -> None:
        if self.sim.stopping:
            return
        state = "drift" if self.drift_after is not None and time.monotonic() >= self.drift_after else "ok"
        changed, self.drift_state = state != self.drift_state, state
        if self.client.is_connected():
            self.client.publish(self.topic_drift, self.drift(), qos=1)
            self.drift_sent += 1
        self.sim.loop.call_later(1.0 if changed else DRIFT_EVERY_S, self._drift_tick)

    def stop(self) -> None:
        """Publish `stopped` (retained) and disconnect cleanly, so the broker does not publish the will."""
        if self.client.is_connected():
            self.client.publish(self.topic_status, self.status("stopped"), qos=1, retain=True)
        self.sim.loop.remove(self.client, disconnect=True)


class Simulator:
    def __init__(self, broker_url: str, devices: int, *, rate_hz: float = 1.0, keepalive: int = 5,
                 prefix: str = "edge", id_prefix: str = "sim", group: str | None = None, seed: int = 0,
                 connect_rate: float = 1000.0):
        if devices < 1 or rate_hz <= 0:
            raise ValueError("--devices must be at least 1 and --rate-hz above 0")
        self.address = parse_broker_url(broker_url)
        self.host, self.port, self.tls = self.address.host, self.address.port, self.address.tls
        self.rate_hz, self.keepalive, self.prefix, self.group, self.seed = rate_hz, keepalive, prefix, group, seed
        self.connect_rate = connect_rate
        self.started = time.monotonic()
        self.stopping = False
        self.model_version = "1.0.0"
        self.model_sha256 = hashlib.sha256(f"sim-model-{seed}".encode()).hexdigest()
        self.loop = ClientLoop(name="simulate", reconnect_min_s=0.5, reconnect_max_s=10.0, connect_timeout_s=1.0)
        width = max(4, len(str(devices)))
        self.devices = [SimDevice(self, index, f"{id_prefix}-{index + 1:0{width}d}") for index in range(devices)]

    def start(self) -> None:
        for index, device in enumerate(self.devices):  # TLS (mqtts://) is configured by the client factory
            self.loop.add(device.client, self.host, self.port, self.keepalive, delay=index / self.connect_rate)
        self.loop.start()

    def connected(self) -> int:
        return sum(device.client.is_connected() for device in self.devices)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Every device publishes `stopped` and disconnects; then the loop ends."""
        done = threading.Event()

        def stop_all() -> None:
            self.stopping = True
            for device in self.devices:
                device.stop()
            done.set()

        self.loop.call_soon(stop_all)
        done.wait(timeout)
        self.loop.stop(timeout)

    def report(self) -> dict:
        """What was published, per device: a loss test compares the predictions' `seq` with what arrived."""
        return {
            "devices": len(self.devices), "rate_hz": self.rate_hz,
            "predictions": sum(device.seq for device in self.devices),
            "stats": sum(device.stats_sent for device in self.devices),
            "drift": sum(device.drift_sent for device in self.devices),
            "seq": {device.device_id: device.seq for device in self.devices},
            "cpu_s": round(resource.getrusage(resource.RUSAGE_SELF).ru_utime
                           + resource.getrusage(resource.RUSAGE_SELF).ru_stime, 2),
        }


def raise_file_limit(needed: int) -> None:
    """One socket per device: lift the soft limit on open files towards the hard one if it is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning("open files limited to %d: fewer than %d devices will connect", target, needed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, help="mqtt://host:port")
    parser.add_argument("--devices", type=int, required=True, help="how many simulated devices")
    parser.add_argument("--rate-hz", type=float, default=1.0, help="predictions and stats per device per second")
    parser.add_argument("--duration", type=float, default=None, help="seconds, then a clean stop (default: until "
                                                                     "SIGTERM or Ctrl-C)")
    parser.add_argument("--keepalive", type=int, default=5, help="MQTT keepalive in seconds")
    parser.add_argument("--prefix", default="edge", help="topic prefix")
    parser.add_argument("--id-prefix", default="sim", help="device ids are <id-prefix>-0001, ...")
    parser.add_argument("--group", default=None, help="the group every simulated device reports")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the simulated numbers")
    parser.add_argument("--connect-rate", type=float, default=1000.0, help="new connections per second at start")
    parser.add_argument("--report", type=Path, default=None,
                        help="write what was published (per-device prediction seq) as JSON here at exit")


def main_simulate(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    raise_file_limit(args.devices + 64)
    sim = Simulator(args.broker, args.devices, rate_hz=args.rate_hz, keepalive=args.keepalive, prefix=args.prefix,
                    id_prefix=args.id_prefix, group=args.group, seed=args.seed, connect_rate=args.connect_rate)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    sim.start()
    log.info("simulating %d devices on %s at %g Hz", args.devices, args.broker, args.rate_hz)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    reported = 0
    while not stop.wait(1.0):
        connected = sim.connected()
        if connected != reported and (connected == args.devices or time.monotonic() - sim.started > 5):
            log.info("%d of %d devices connected", connected, args.devices)
            reported = connected
        if deadline is not None and time.monotonic() >= deadline:
            break
    sim.stop()
    report = sim.report()
    log.info("stopped: %d predictions, %d stats, %d drift messages published; %.1f s CPU", report["predictions"],
             report["stats"], report["drift"], report["cpu_s"])
    if args.report:
        args.report.write_text(json.dumps(report))
    return 0
