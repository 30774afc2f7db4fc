"""Benchmark: the daemon end to end against a bare `session.run` loop over the same windows, in one run.

    python benchmarks/daemon.py [--write docs/benchmarks.md]

Model: the `activity_wide` sample (a 1-D CNN on BasicMotions, about 1 ms per window in fp32 on one core),
converted with `--quantize none` so that inference really costs about 1 ms. A local mosquitto carries the
sensor messages in and the predictions out. Measured:
- throughput: bare loop (batch 1, and batched like the daemon) vs the daemon with samples arriving in batches
  of 100 over MQTT (sensor publish of the first sample to the last prediction received);
- latency the daemon adds at p50/p99: a paced stream (one hop of samples per message), from the publish of
  the message that completes a window to the prediction arriving, minus the bare batch-1 inference time;
- resident memory of the daemon vs a bare Python process holding the same onnxruntime session;
- cold start: process start to the first prediction.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.convert import _cpu_name, write_section  # noqa: E402
from converter.cli import main as convert  # noqa: E402
from edge_runtime.bundle import read_bundle  # noqa: E402
from edge_runtime.card import ModelCard  # noqa: E402
from edge_runtime.mqtt_client import no_delay  # noqa: E402
from edge_runtime.stream import SampleBlock  # noqa: E402
from edge_runtime.window import Preprocessor, SlidingWindow  # noqa: E402
from sample_models import build_sample  # noqa: E402
from sample_models.recording import write_activity_recording  # noqa: E402
from tests.support.broker import MosquittoBroker  # noqa: E402

MARK = ("<!-- bench:daemon:start -->", "<!-- bench:daemon:end -->")
DEVICE = "bench-01"
PACED_WINDOWS = 2000


def recorded(path: Path, repeat: int) -> np.ndarray:
    with path.open() as handle:
        rows = [[float(value) for value in row[1:7]] for row in list(csv.reader(handle))[1:]]
    return np.tile(np.asarray(rows, dtype=np.float32), (repeat, 1))


def model_windows(bundle: Path, samples: np.ndarray) -> np.ndarray:
    """The windows the daemon will cut, preprocessed exactly as it does: what the bare loop runs on."""
    card = ModelCard.model_validate(read_bundle(bundle).manifest.card)
    window = SlidingWindow(card.input.window, card.input.hop, card.input.channels)
    ts = np.arange(len(samples)) / card.input.rate_hz
    cut = np.stack([w for _, w in window.push(SampleBlock(ts, samples))])
    return Preprocessor(card).time_series(cut)


def bare_loop(bundle: Path, windows: np.ndarray, batch: int, threads: int) -> tuple[float, list[float]]:
    """Windows per second and per-run latencies (ms) of a plain session.run loop."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(read_bundle(bundle).model_bytes(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(10):
        session.run(None, {name: windows[:batch]})
    latencies = []
    started = time.perf_counter()
    for start in range(0, len(windows), batch):
        tick = time.perf_counter()
        session.run(None, {name: windows[start : start + batch]})
        latencies.append((time.perf_counter() - tick) * 1e3)
    return len(windows) / (time.perf_counter() - started), latencies


def bare_rss_mb(bundle: Path, threads: int) -> float:
    """VmRSS of a bare Python process that holds the same session and has run it."""
    code = (
        "import onnxruntime as ort, numpy as np, sys\n"
        "from edge_runtime.bundle import read_bundle\n"
        f"o = ort.SessionOptions(); o.intra_op_num_threads = {threads}\n"
        f"b = read_bundle({str(bundle)!r})\n"
        "s = ort.InferenceSession(b.model_bytes(), o, providers=['CPUExecutionProvider'])\n"
        "x = b.golden()[0]\n"
        "for _ in range(50): s.run(None, x)\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(output.stdout.strip().splitlines()[-1]) / 1024


class Watcher:
    """Subscribes to the device's predictions and records arrival times."""

    def __init__(self, port: int):
        self.arrivals: list[tuple[float, dict]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-watcher")
        self.client.on_message = self._on_message
        self.client.on_socket_open = no_delay
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"edge/{DEVICE}/predictions/#", qos=1)
        self.client.subscribe(f"edge/{DEVICE}/status", qos=1)
        self.client.loop_start()
        self.online = threading.Event()

    def _on_message(self, client, userdata, message) -> None:
        now = time.perf_counter()
        body = json.loads(message.payload)
        if message.topic.endswith("/status"):
            if body.get("state") == "online":
                self.online.set()
            return
        with self.lock:
            self.arrivals.append((now, body))

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_daemon(workdir: Path, port: int, bundle: Path, source: dict, threads: int, name: str):
    config = workdir / f"{name}.yaml"
    document = {
        "device_id": DEVICE,
        "broker": f"mqtt://127.0.0.1:{port}",
        "board": "x86_64",
        "spool": {"path": str(workdir / f"{name}.sqlite")},
        "publish": {"stats_interval_s": 60},
        "models": [{"bundle": str(bundle), "source": source, "queue_size": 100000, "max_batch": 32,
                    "backends": [{"type": "onnxruntime", "threads": threads}]}],
    }
    config.write_text(yaml.safe_dump(document))
    return subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "--log-level", "WARNING", "run", str(config)],
                            cwd=ROOT)


def rss_of(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return False


def publish_blocks(client: mqtt.Client, samples: np.ndarray, per_message: int, pace_s: float = 0.0,
                   sent_at: list[float] | None = None) -> None:
    ts = 1_700_000_000.0
    for start in range(0, len(samples), per_message):
        chunk = samples[start : start + per_message]
        payload = json.dumps({"ts": ts, "samples": chunk.tolist()}).encode()
        ts += len(chunk) / 10.0
        if sent_at is not None:
            sent_at.append(time.perf_counter())
        client.publish("bench/imu", payload, qos=0)
        if pace_s:
            time.sleep(pace_s)


def daemon_runs(broker: MosquittoBroker, workdir: Path, bundle: Path, samples: np.ndarray, windows: int,
                threads: int, recording: Path) -> dict:
    results: dict = {}
    sensor = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sensor")
    sensor.on_socket_open = no_delay
    sensor.connect("127.0.0.1", broker.port)
    sensor.loop_start()

    # cold start: process start -> first prediction (a replay source feeds it from the first instant)
    watcher = Watcher(broker.port)
    started = time.perf_counter()
    process = start_daemon(workdir, broker.port, bundle, {"type": "replay", "path": str(recording), "speed": 0},
                           threads, "cold")
    wait(lambda: watcher.count() > 0, 60)
    results["cold_start_s"] = watcher.arrivals[0][0] - started
    process.terminate()
    process.wait(30)
    watcher.close()

    # throughput: samples arrive in batches of 100 per message, as fast as MQTT takes them
    watcher = Watcher(broker.port)
    process = start_daemon(workdir, broker.port, bundle, {"type": "mqtt", "topic": "bench/imu"}, threads, "load")
    watcher.online.wait(60)
    time.sleep(0.5)
    first_sent = time.perf_counter()
    publish_blocks(sensor, samples, 100)
    wait(lambda: watcher.count() >= windows, 300)
    results["daemon_windows_per_s"] = watcher.count() / (watcher.arrivals[-1][0] - first_sent)
    results["daemon_predictions"] = watcher.count()
    results["daemon_rss_mb"] = rss_of(process.pid)
    process.terminate()
    process.wait(30)
    watcher.close()

    # added latency: one hop (10 samples) per message, paced well below capacity; the daemon, then the bare script
    for label, command in (
        ("daemon", None),
        ("bare", [sys.executable, str(ROOT / "benchmarks" / "bare_mqtt_script.py"), str(bundle), str(broker.port)]),
    ):
        watcher = Watcher(broker.port)
        if command is None:
            process = start_daemon(workdir, broker.port, bundle, {"type": "mqtt", "topic": "bench/imu"}, threads,
                                   "paced")
        else:
            process = subprocess.Popen(command, cwd=ROOT)
        watcher.online.wait(60)
        time.sleep(0.5)
        sent_at: list[float] = []
        publish_blocks(sensor, samples[: 50 + 10 * PACED_WINDOWS], 10, pace_s=0.01, sent_at=sent_at)
        wait(lambda w=watcher: w.count() >= PACED_WINDOWS + 1, 120)
        # the prediction with index k completes with message 4 + k (window 50 = 5 messages of 10 samples)
        seq0 = watcher.arrivals[0][1]["seq"]
        results[f"{label}_end_to_end_ms"] = [
            (arrived - sent_at[4 + body["seq"] - seq0]) * 1e3
            for arrived, body in watcher.arrivals
            if 4 + body["seq"] - seq0 < len(sent_at)
        ]
        if label == "daemon":
            results["reported_latency_ms"] = [body["latency_ms"] for _, body in watcher.arrivals]
        process.terminate()
        process.wait(30)
        watcher.close()
    sensor.disconnect()
    sensor.loop_stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=10, help="times the 4,000-sample recording is streamed")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args(argv)
    sys.setswitchinterval(0.001)  # the measuring threads (sensor, watcher) must not add GIL waits of their own

    sample = build_sample("activity_wide")
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as folder:
        workdir = Path(folder)
        bundle = workdir / "activity_wide.bundle"
        assert convert([str(sample.onnx_path), "-o", str(bundle), "--target", "x86_64", "--card",
                        str(sample.card_path), "--eval", str(sample.eval_path), "--quantize", "none",
                        "--no-latency", "--json"]) == 0
        recording = write_activity_recording(workdir / "recording.csv")
        samples = recorded(recording, args.repeat)
        windows = model_windows(bundle, samples)
        bare1, latencies1 = bare_loop(bundle, windows, 1, args.threads)
        bare32, _ = bare_loop(bundle, windows, 32, args.threads)
        bare_rss = bare_rss_mb(bundle, args.threads)
        # set_tcp_nodelay: without it mosquitto's small packets (PUBACKs, forwarded messages) wait for Nagle's
        # algorithm and the receiver's delayed ACK, which adds tens of milliseconds on an idle stream.
        with MosquittoBroker(extra_config=["set_tcp_nodelay true"]) as broker:
            daemon = daemon_runs(broker, workdir, bundle, samples, len(windows), args.threads, recording)

    inference_p50 = float(np.median(latencies1))
    reported = np.asarray(daemon["reported_latency_ms"])
    e2e = np.asarray(daemon["daemon_end_to_end_ms"])
    bare_e2e = np.asarray(daemon["bare_end_to_end_ms"])
    added = e2e - inference_p50
    rows = [
        ("model", f"activity_wide fp32, {len(windows)} windows of 50x6, {args.threads} thread(s)"),
        ("bare session.run, batch 1", f"{bare1:,.0f} windows/s ({inference_p50:.3f} ms per window p50)"),
        ("bare session.run, batch 32", f"{bare32:,.0f} windows/s"),
        ("daemon over MQTT (100 samples per message)",
         f"{daemon['daemon_windows_per_s']:,.0f} windows/s = {daemon['daemon_windows_per_s'] / bare1:.2f}x bare "
         f"batch 1, {daemon['daemon_windows_per_s'] / bare32:.2f}x bare batch 32 "
         f"({daemon['daemon_predictions']} predictions, none dropped)"),
        ("daemon end to end, paced stream (sensor publish -> prediction received)",
         f"p50 {np.percentile(e2e, 50):.3f} ms, p99 {np.percentile(e2e, 99):.3f} ms"),
        ("hand-written MQTT script (subscribe, session.run, publish; no spool), same paced stream",
         f"p50 {np.percentile(bare_e2e, 50):.3f} ms, p99 {np.percentile(bare_e2e, 99):.3f} ms"),
        ("daemon's own latency (window complete -> prediction spooled), paced",
         f"p50 {np.percentile(reported, 50):.3f} ms, p99 {np.percentile(reported, 99):.3f} ms"),
        ("latency added by the daemon (end to end minus bare inference p50)",
         f"p50 {np.percentile(added, 50):.3f} ms, p99 {np.percentile(added, 99):.3f} ms"),
        ("daemon end to end minus the hand-written script (what the spool, checks and stats cost)",
         f"p50 {np.percentile(e2e, 50) - np.percentile(bare_e2e, 50):+.3f} ms, "
         f"p99 {np.percentile(e2e, 99) - np.percentile(bare_e2e, 99):+.3f} ms"),
        ("resident memory", f"daemon {daemon['daemon_rss_mb']:.1f} MB vs bare process {bare_rss:.1f} MB "
                            f"(+{daemon['daemon_rss_mb'] - bare_rss:.1f} MB)"),
        ("cold start (process start -> first prediction)", f"{daemon['cold_start_s']:.2f} s"),
    ]
    command = "python benchmarks/daemon.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        f"Command: `{command.strip()}`  ",
        f"Date: {datetime.date.today().isoformat()}; machine: {_cpu_name()}, {platform.machine()}, "
        f"onnxruntime {ort.__version__}, mosquitto on loopback.",
        "",
        "| measure | result |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, text, MARK, "Daemon (`benchmarks/daemon.py`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
