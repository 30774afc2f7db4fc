"""Benchmark: how much fleet traffic one monitor process ingests, what a second one on a shared subscription adds,
and 1,000 simulated devices at 1 Hz with nothing lost.

    python benchmarks/fleet.py [--messages 200000] [--sim-devices 1000] [--sim-seconds 60] [--write docs/benchmarks.md]

A local mosquitto (`max_queued_messages` unlimited, `max_inflight_messages` unlimited, `set_tcp_nodelay true`).
Every monitor is a separate process running the product's path: `FleetMonitor` (MQTT v5, QoS 1) into
`FleetState.ingest`. A separate publisher process sends N `stats` messages (daemon-shaped, about 600 bytes) at
QoS 1 from many device ids with a raw-socket MQTT client, fast enough that the monitors are the bottleneck.
Rates are N / (last message ingested - first message ingested) over all monitors; every run checks that exactly
N stats messages were ingested (nothing lost, nothing twice) and that every monitor knows every device from the
retained statuses. Two ways to feed the monitors:
- live: the publisher runs while the monitors ingest (publisher, broker and monitors share the machine's cores);
- backlog: the monitors are paused (SIGSTOP) while the broker queues all N messages, then resumed; this measures
  what the monitors drain with only the broker beside them.
Then `edge-fleet simulate` runs N devices at 1 Hz for S seconds while a subscriber counts every prediction's
`seq` per device (QoS 1) and a monitor watches the statuses.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MARK = ("<!-- bench:fleet:start -->", "<!-- bench:fleet:end -->")
TITLE = "Fleet (`benchmarks/fleet.py`)"
BROKER_CONFIG = ["max_queued_messages 100000000", "max_inflight_messages 0", "set_tcp_nodelay true"]
SHARE_GROUP = "bench"


# -- the publisher process: raw MQTT 3.1.1, QoS 1, a window of unacknowledged messages -----------------------------
def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def _string(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _publish_packet(topic: bytes, payload: bytes, packet_id: int, retain: bool = False) -> bytes:
    body = _string(topic) + struct.pack("!H", packet_id) + payload
    return bytes([0x32 | (1 if retain else 0)]) + _remaining_length(len(body)) + body


def stats_payload(device: str, n: int) -> bytes:
    """A `stats` message shaped like the daemon's."""
    return json.dumps({
        "ts": time.time(), "device_id": device, "interval_s": 10, "uptime_s": 1000.0 + n,
        "models": {"activity": {
            "throughput_per_s": 9.5 + n % 7, "windows": n, "predictions": n, "batches": n // 2,
            "latency_ms": {"p50": 1.12, "p95": 2.5, "p99": 3.01}, "inference_ms": {"p50": 0.5, "p95": 0.7, "p99": 0.9},
            "invalid": 0, "invalid_by_reason": {}, "dropped": 0, "queue_depth": n % 3, "backend": "onnxruntime",
            "degraded": False, "degraded_reason": None, "source": "iio", "source_finished": False,
            "drift": {"state": "ok", "top_channels": [], "reasons": []}}},
        "device": {"cpu_percent": 23.5, "load_1m": 0.41, "temperature_c": 51.2, "rss_mb": 98.4},
        "mqtt": {}, "errors_suppressed": 0}).encode()


def blast(port: int, messages: int, devices: int, window: int = 2000) -> float:
    """Publish `messages` stats messages round-robin over `devices` ids at QoS 1; seconds until all acked."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = _string(b"MQTT") + bytes([4, 2]) + struct.pack("!H", 60) + _string(f"blast-{os.getpid()}".encode())
    sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
    connack = sock.recv(4)
    if connack[:2] != b"\x20\x02" or connack[3] != 0:
        raise RuntimeError(f"the broker refused the publisher: {connack!r}")
    topics = [f"edge/bench-{i:05d}/stats".encode() for i in range(devices)]
    payloads = [stats_payload(f"bench-{i:05d}", i) for i in range(min(devices, 500))]
    sent = acked = 0
    pending = b""
    started = time.perf_counter()
    while acked < messages:
        batch = []
        while sent < messages and sent - acked < window and len(batch) < 256:
            batch.append(_publish_packet(topics[sent % devices], payloads[sent % len(payloads)], sent % 65535 + 1))
            sent += 1
        if batch:
            sock.sendall(b"".join(batch))
        if sent - acked >= window or sent >= messages:
            data = sock.recv(1 << 16)
            if not data:
                raise RuntimeError("the broker closed the publisher's connection")
            pending += data
            complete = len(pending) // 4  # PUBACKs are 4 bytes each
            acked += complete
            pending = pending[complete * 4:]
    elapsed = time.perf_counter() - started
    sock.sendall(b"\xe0\x00")
    sock.close()
    return elapsed


def publish_statuses(port: int, devices: int) -> None:
    """Retained `online` statuses, so each monitor must know every device (status is never shared)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-status-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(f"edge/bench-{i:05d}/status", json.dumps({
        "state": "online", "schema": 1, "device_id": f"bench-{i:05d}", "ts": time.time(), "board": "raspberry-pi-4",
        "models": [{"name": "activity", "version": "1.0.0", "precision": "int8",
                    "backend": {"active": "onnxruntime", "degraded": False}}]}), qos=1, retain=True)
        for i in range(devices)]
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


# -- the monitor process ---------------------------------------------------------------------------------------------
def monitor_process(broker: str, share_group: str | None) -> int:
    """Ingest until SIGTERM; progress lines `count N` on stdout, then one JSON line with the totals."""
    from edge_fleet.monitor import FleetMonitor
    from edge_fleet.state import FleetState

    state = FleetState()
    seen: dict[str, float] = {"count": 0, "first": 0.0, "last": 0.0}
    clock = time.monotonic

    def on_change(device: str, what: str) -> None:
        if what == "stats":
            now = clock()
            if not seen["count"]:
                seen["first"] = now
                times = os.times()
                seen["cpu_at_first"] = times.user + times.system
            seen["count"] += 1
            seen["last"] = now

    state.add_listener(on_change)
    monitor = FleetMonitor(broker, state, share_group=share_group)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    monitor.start()
    if not monitor.wait_ready(10):
        print("error: not subscribed", flush=True)
        return 1
    print("ready", flush=True)
    reported = -1
    while not stop.wait(0.05):
        if seen["count"] != reported:
            reported = seen["count"]
            print(f"count {reported}", flush=True)
    monitor.stop()
    usage = os.times()  # CPU from the first stats message on: what ingesting cost, not the imports
    cpu_s = usage.user + usage.system - seen.pop("cpu_at_first", 0.0)
    print(json.dumps({**seen, "devices": len(state), "online": sum(d.online for d in state.devices()),
                      "garbage": state.snapshot()["garbage"], "cpu_s": cpu_s}), flush=True)
    return 0


class MonitorProcess:
    def __init__(self, broker: str, share_group: str | None):
        command = [sys.executable, __file__, "_monitor", "--broker", broker]
        if share_group:
            command += ["--share-group", share_group]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.count = 0
        self.result: dict | None = None
        first = self.process.stdout.readline().strip()
        if first != "ready":
            raise RuntimeError(f"monitor did not start: {first}")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith("count "):
                self.count = int(line.split()[1])
            elif line.startswith("{"):
                self.result = json.loads(line)

    def finish(self) -> dict:
        self.process.send_signal(signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self._reader.join(10)
        if self.result is None:
            raise RuntimeError("monitor ended without a result")
        return self.result


def ingest_run(messages: int, devices: int, monitors: int, backlog: bool) -> dict:
    """One broker, `monitors` monitor processes (shared when more than one), N stats messages."""
    from tests.support.broker import MosquittoBroker

    with MosquittoBroker(extra_config=BROKER_CONFIG) as broker:
        publish_statuses(broker.port, devices)
        group = SHARE_GROUP if monitors > 1 else None
        procs = [MonitorProcess(broker.url, group) for _ in range(monitors)]
        try:
            if backlog:
                for proc in procs:
                    proc.process.send_signal(signal.SIGSTOP)
            publisher = subprocess.run([sys.executable, __file__, "_blast", "--port", str(broker.port),
                                        "--messages", str(messages), "--devices", str(devices)],
                                       capture_output=True, text=True, check=True)
            publish_s = float(publisher.stdout.strip())
            for proc in procs:
                proc.process.send_signal(signal.SIGCONT)
            deadline = time.monotonic() + max(120.0, messages / 2000)
            while sum(proc.count for proc in procs) < messages and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # a duplicate would show up now
            results = [proc.finish() for proc in procs]
        finally:
            for proc in procs:
                if proc.process.poll() is None:
                    proc.process.kill()
    received = sum(result["count"] for result in results)
    span = max(r["last"] for r in results) - min(r["first"] for r in results)
    return {"monitors": monitors, "backlog": backlog, "received": received, "sent": messages,
            "rate": received / span if span > 0 else 0.0, "split": [r["count"] for r in results],
            "devices_known": [r["devices"] for r in results], "publish_rate": messages / publish_s,
            "monitor_cpu_per_msg_us": sum(r["cpu_s"] for r in results) / max(received, 1) * 1e6}


# -- 1,000 simulated devices ---------------------------------------------------------------------------------------
def simulate_run(devices: int, seconds: float, rate_hz: float) -> dict:
    import paho.mqtt.client as mqtt

    from edge_fleet.monitor import FleetMonitor, wait_for
    from edge_fleet.mqtt_loop import ClientLoop, FastClient
    from edge_fleet.state import FleetState
    from tests.support.broker import MosquittoBroker

    seqs: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def on_message(client, userdata, message) -> None:
        device = message.topic.split("/", 2)[1]
        seq = json.loads(message.payload)["seq"]
        with lock:
            seqs[device].append(seq)

    with MosquittoBroker(extra_config=BROKER_CONFIG) as broker, tempfile.TemporaryDirectory() as tmp:
        loop = ClientLoop(name="bench-collector")
        collector = FastClient(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-collector", protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        collector.on_connect = lambda c, *a: c.subscribe("edge/+/predictions/+", qos=1)
        collector.on_subscribe = lambda *a: subscribed.set()
        collector.on_message = on_message
        loop.add(collector, "127.0.0.1", broker.port)
        loop.start()
        state = FleetState()
        monitor = FleetMonitor(broker.url, state)
        monitor.start()
        if not (subscribed.wait(10) and monitor.wait_ready(10)):
            raise RuntimeError("collector or monitor could not subscribe")
        report_path = Path(tmp) / "report.json"
        started = time.monotonic()
        sim = subprocess.Popen([sys.executable, "-m", "edge_fleet.cli", "simulate", "--broker", broker.url,
                                "--devices", str(devices), "--rate-hz", str(rate_hz), "--duration", str(seconds),
                                "--report", str(report_path)], stderr=subprocess.DEVNULL)
        wait_for(lambda: sum(d.online for d in state.devices()) == devices, 60, 0.05)
        all_online_s = time.monotonic() - started
        online_peak = sum(d.online for d in state.devices())
        broker_cpu_before = _process_cpu_s(broker._process.pid)
        sim.wait(seconds + 120)
        broker_cpu = _process_cpu_s(broker._process.pid) - broker_cpu_before
        report = json.loads(report_path.read_text())
        wait_for(lambda: sum(len(v) for v in seqs.values()) >= report["predictions"], 30, 0.1)
        wait_for(lambda: sum(d.state == "stopped" for d in state.devices()) == devices, 30, 0.1)
        stopped = sum(d.state == "stopped" for d in state.devices())
        stats_received = monitor.stats()["received"]["stats"]
        monitor.stop()
        loop.stop()
    missing = duplicates = 0
    for device, last in report["seq"].items():
        got = seqs.get(device, [])
        missing += last - len(set(got) & set(range(1, last + 1)))
        duplicates += len(got) - len(set(got))
    return {"devices": devices, "seconds": seconds, "rate_hz": rate_hz, "published": report["predictions"],
            "received": sum(len(v) for v in seqs.values()), "missing": missing, "duplicates": duplicates,
            "all_online_s": all_online_s, "online_peak": online_peak, "stopped": stopped,
            "stats_published": report["stats"], "stats_received": stats_received,
            "sim_cpu_percent": 100 * report["cpu_s"] / (seconds + all_online_s),
            "broker_cpu_percent": 100 * broker_cpu / seconds}


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- report ---------------------------------------------------------------------------------------------------------
def _median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda run: run["rate"])[len(runs) // 2]


def render(ingest: dict[tuple[int, bool], list[dict]], sim: dict, command: str) -> str:
    import paho.mqtt

    from benchmarks.convert import _cpu_name

    version = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    rows = []
    for backlog in (False, True):
        one, two = _median_run(ingest[(1, backlog)]), _median_run(ingest[(2, backlog)])
        mode = "backlog (monitors paused while the broker queues)" if backlog else "live (publisher running)"
        exact = all(run["received"] == run["sent"] for key in ((1, backlog), (2, backlog)) for run in ingest[key])
        known = all(min(run["devices_known"]) == max(run["devices_known"]) for run in ingest[(2, backlog)])
        rates = ", ".join(f"{run['rate']:,.0f}" for run in ingest[(1, backlog)])
        rows.append((f"one monitor process, {mode}",
                     f"**{one['rate']:,.0f} msg/s** (runs: {rates}); {one['received']:,} of {one['sent']:,} "
                     f"ingested; {one['monitor_cpu_per_msg_us']:.0f} µs CPU per message"))
        rates = ", ".join(f"{run['rate']:,.0f}" for run in ingest[(2, backlog)])
        rows.append((f"two monitor processes, shared subscription, {mode}",
                     f"**{two['rate']:,.0f} msg/s = {two['rate'] / one['rate']:.2f}x one** (runs: {rates}); split "
                     f"{two['split'][0]:,} + {two['split'][1]:,}; each knows {two['devices_known'][0]:,} devices; "
                     f"every run exactly once: {'yes' if exact and known else 'NO'}"))
    rows.append(("publisher (raw socket, QoS 1, separate process)",
                 f"{statistics.median(r['publish_rate'] for runs in ingest.values() for r in runs):,.0f} msg/s"))
    lost = "none lost" if sim["missing"] == 0 else f"**{sim['missing']} lost**"
    rows += [
        (f"`edge-fleet simulate` {sim['devices']:,} devices at {sim['rate_hz']:g} Hz for {sim['seconds']:.0f} s "
         "(own connection each)",
         f"{sim['published']:,} predictions at QoS 1 published, {sim['received']:,} received, {lost}, "
         f"{sim['duplicates']} duplicates (counted per device by `seq`)"),
        ("... all devices online at the monitor", f"{sim['all_online_s']:.1f} s after the simulator started "
                                                  f"({sim['online_peak']:,} online)"),
        ("... clean stop (SIGTERM path)", f"{sim['stopped']:,} of {sim['devices']:,} devices `stopped`"),
        ("... stats", f"{sim['stats_published']:,} published at QoS 0, {sim['stats_received']:,} ingested"),
        ("... CPU", f"simulator {sim['sim_cpu_percent']:.0f}% of one core, mosquitto "
                    f"{sim['broker_cpu_percent']:.0f}%"),
    ]
    lines = [
        f"Command: `{command}`  ",
        f"Date: {datetime.date.today().isoformat()}; machine: {_cpu_name()}, {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()}, paho-mqtt {paho.mqtt.__version__}, {version} "
        f"on loopback. Rates: median of the runs; stats messages of about "
        f"{len(stats_payload('bench-00000', 1))} bytes.",
        "",
        "| measure | result |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="internal")
    monitor = sub.add_parser("_monitor")
    monitor.add_argument("--broker", required=True)
    monitor.add_argument("--share-group", default=None)
    publisher = sub.add_parser("_blast")
    publisher.add_argument("--port", type=int, required=True)
    publisher.add_argument("--messages", type=int, required=True)
    publisher.add_argument("--devices", type=int, required=True)
    parser.add_argument("--messages", type=int, default=200_000, help="stats messages per ingest run")
    parser.add_argument("--devices", type=int, default=1000, help="device ids the stats come from")
    parser.add_argument("--repeat", type=int, default=3, help="runs per ingest configuration")
    parser.add_argument("--sim-devices", type=int, default=1000)
    parser.add_argument("--sim-seconds", type=float, default=60.0)
    parser.add_argument("--sim-rate-hz", type=float, default=1.0)
    parser.add_argument("--write", type=Path, help="replace the fleet section of this markdown file")
    args = parser.parse_args(argv)
    if args.internal == "_monitor":
        return monitor_process(args.broker, args.share_group)
    if args.internal == "_blast":
        print(blast(args.port, args.messages, args.devices))
        return 0
    ingest: dict[tuple[int, bool], list[dict]] = defaultdict(list)
    for run in range(args.repeat):
        for backlog in (False, True):
            for monitors in (1, 2):
                result = ingest_run(args.messages, args.devices, monitors, backlog)
                ingest[(monitors, backlog)].append(result)
                print(f"run {run + 1}: {monitors} monitor(s), {'backlog' if backlog else 'live'}: "
                      f"{result['rate']:,.0f} msg/s, {result['received']:,}/{result['sent']:,}, "
                      f"split {result['split']}", file=sys.stderr)
    sim = simulate_run(args.sim_devices, args.sim_seconds, args.sim_rate_hz)
    print(f"simulate: {sim}", file=sys.stderr)
    command = "python benchmarks/fleet.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(ingest, sim, command.strip())
    print(text)
    if args.write:
        from benchmarks.convert import write_section

        write_section(args.write, text, MARK, TITLE)
    failed = [run for runs in ingest.values() for run in runs if run["received"] != run["sent"]]
    return 1 if failed or sim["missing"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
