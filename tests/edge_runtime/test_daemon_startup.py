"""Daemon start and stop edge cases: a failed start with two models, topic-unsafe model names, the signal flag
and `wait`, one stop deadline that never closes the spool under a live worker, and `stats` during start."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import zipfile
from types import SimpleNamespace

import pytest
import yaml

from edge_runtime import daemon as daemon_module
from edge_runtime.config import DaemonConfig
from edge_runtime.daemon import Daemon
from edge_runtime.metrics import DeviceStats, ModelStats
from edge_runtime.model_worker import ModelWorker
from tests.support.broker import Collector

TIMEOUT = 10.0


def daemon_config(tmp_path, **extra) -> DaemonConfig:
    return DaemonConfig.model_validate({
        "device_id": "dev-1", "broker": "mqtt://127.0.0.1:1", "board": "x86_64",
        "spool": {"path": str(tmp_path / "spool.sqlite")},
        "models": [{"bundle": str(tmp_path / "none.bundle"), "source": {"type": "mqtt", "topic": "x"}}],
        **extra,
    })


def write_yaml(path, broker_url: str, models: list[dict]):
    document = {
        "device_id": "dev-1",
        "broker": {"url": broker_url, "keepalive_s": 5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "board": "x86_64",
        "spool": {"path": str(path.parent / "spool.sqlite")},
        "models": models,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run_cli(config, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", "run", str(config)], capture_output=True,
                          text=True, timeout=timeout)


# -- finding 6: a failed start with two models -----------------------------------------------------------------------
def test_second_bundle_missing_exits_1_with_one_error_line_and_no_traceback(tmp_path, activity_bundle):
    missing = tmp_path / "missing.bundle"
    config = write_yaml(tmp_path / "daemon.yaml", "mqtt://127.0.0.1:1", [
        {"bundle": str(activity_bundle), "name": "first", "source": {"type": "mqtt", "topic": "sensors/a"}},
        {"bundle": str(missing), "name": "second", "source": {"type": "mqtt", "topic": "sensors/b"}},
    ])
    result = run_cli(config)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("edge-runtime: error: ")]
    assert len(errors) == 1 and str(missing) in errors[0], result.stderr


class FakeWorker:
    """A worker whose stop uses up the time it is given (on a fake clock) and may stay alive."""

    def __init__(self, name: str, clock: list[float], stays_alive: bool):
        self.name, self.clock, self.stays_alive = name, clock, stays_alive
        self.timeouts: list[float] = []

    def stop(self, *, drain: bool = True, timeout: float = 10.0) -> None:
        self.timeouts.append(timeout)
        self.clock[0] += timeout

    @property
    def alive(self) -> bool:
        return self.stays_alive


class FakeSpool:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_stop_has_one_deadline_and_keeps_the_spool_open_under_a_live_worker(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(daemon_module, "time", SimpleNamespace(monotonic=lambda: clock[0], time=lambda: clock[0]))
    daemon = Daemon(daemon_config(tmp_path))
    slow, other = FakeWorker("slow", clock, stays_alive=True), FakeWorker("other", clock, stays_alive=False)
    daemon.models.workers.update({"slow": slow, "other": other})
    daemon.spool = FakeSpool()
    daemon.stop(drain_timeout=4.0)
    assert slow.timeouts == [4.0]
    assert other.timeouts == [0.0], "each worker got the whole drain timeout"
    assert not daemon.spool.closed, "the spool was closed under a running worker"


def test_stop_closes_the_spool_once_every_worker_ended(tmp_path):
    daemon = Daemon(daemon_config(tmp_path))
    daemon.models.workers["a"] = FakeWorker("a", [0.0], stays_alive=False)
    daemon.spool = FakeSpool()
    daemon.stop(drain_timeout=1.0)
    assert daemon.spool.closed


def test_stop_and_stats_of_a_daemon_that_never_started(tmp_path):
    daemon = Daemon(daemon_config(tmp_path))
    assert daemon.stats()["errors_suppressed"] == 0
    daemon.stop(drain_timeout=1.0)


# -- finding 8: model names become topic levels ----------------------------------------------------------------------
def renamed_bundle(original, path, name: str):
    """A copy of a bundle whose manifest says `name` (an unsigned bundle: the manifest is not checksummed)."""
    with zipfile.ZipFile(original) as source, zipfile.ZipFile(path, "w") as copy:
        for info in source.infolist():
            data = source.read(info.filename)
            if info.filename == "manifest.json":
                manifest = json.loads(data)
                manifest["name"] = name
                data = json.dumps(manifest).encode()
            copy.writestr(info, data)
    return path


@pytest.mark.parametrize("name", ["bad/name", "+", "has space"])
def test_topic_unsafe_model_name_is_refused_before_anything_is_published(tmp_path, broker, activity_bundle, name):
    bundle = renamed_bundle(activity_bundle, tmp_path / "renamed.bundle", name)
    config = write_yaml(tmp_path / "daemon.yaml", broker.url, [
        {"bundle": str(bundle), "source": {"type": "mqtt", "topic": "sensors/a"}},  # no `name`: the manifest's
    ])
    with Collector(broker.port, "#") as everything:
        try:
            result = run_cli(config, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the daemon ran with the model name {name!r}")
        assert everything.sync()  # whatever the daemon published before it exited has arrived by now
        published = everything.snapshot()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("edge-runtime: error: ")]
    assert len(errors) == 1 and repr(name) in errors[0] and "topic" in errors[0], result.stderr
    assert published == []


# -- finding 7: the signal handler only sets a flag; wait polls it ---------------------------------------------------
def test_wait_returns_when_stop_requested_is_set(tmp_path):
    daemon = Daemon(daemon_config(tmp_path))
    thread = threading.Thread(target=daemon.wait, daemon=True)
    thread.start()
    daemon.stop_requested = True  # what the signal handler does
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "wait() did not notice stop_requested"


def test_wait_pings_the_watchdog_while_polling(tmp_path, monkeypatch):
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(TIMEOUT)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        monkeypatch.setenv("WATCHDOG_USEC", "200000")
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        daemon = Daemon(daemon_config(tmp_path))
        thread = threading.Thread(target=daemon.wait, daemon=True)
        thread.start()
        try:
            assert [sock.recv(100).decode() for _ in range(2)] == ["WATCHDOG=1", "WATCHDOG=1"]
        finally:
            daemon.request_stop()
            thread.join(TIMEOUT)
    assert not thread.is_alive()


class SignalledDaemon:
    """Stands in for Daemon in cmd_run: its start() is interrupted by SIGTERM, i.e. runs the installed handler.

    It has no request_stop() and no Event: a handler may only set `stop_requested`."""

    instances: list[SignalledDaemon] = []

    def __init__(self, config):
        self.stop_requested = False
        self.calls: list[str] = []
        SignalledDaemon.instances.append(self)

    def start(self) -> None:
        self.calls.append("start")
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, None)

    def wait(self) -> None:
        self.calls.append(f"wait stop_requested={self.stop_requested}")

    def stop(self, drain_timeout: float = 10.0) -> None:
        self.calls.append("stop")


@pytest.fixture
def restore_process_state():
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    interval = sys.getswitchinterval()
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    sys.setswitchinterval(interval)


def test_signal_handler_only_sets_stop_requested(monkeypatch, restore_process_state):
    from edge_runtime import cli, config

    monkeypatch.setattr(config, "load_config", lambda path: SimpleNamespace())
    monkeypatch.setattr(daemon_module, "Daemon", SignalledDaemon)
    SignalledDaemon.instances.clear()
    assert cli.main(["run", "unused.yaml"]) == 0
    (fake,) = SignalledDaemon.instances
    assert fake.calls == ["start", "wait stop_requested=True", "stop"]


# -- findings 9c and 10: stats --------------------------------------------------------------------------------------
def test_model_stats_snapshot_without_advance_keeps_the_interval():
    stats = ModelStats()
    stats.record_batch(10, 1.0, [1.0] * 10)
    assert stats.snapshot(advance=False)["throughput_per_s"] > 0
    assert stats.snapshot(advance=False)["throughput_per_s"] > 0
    assert stats.snapshot()["throughput_per_s"] > 0, "a look in between reset the throughput counter"
    assert stats.snapshot()["throughput_per_s"] == 0


def test_device_stats_snapshot_without_advance_keeps_the_cpu_reference(monkeypatch):
    readings = iter([(100, 50), (200, 100), (300, 100), (400, 200)])  # (total, idle) jiffies
    monkeypatch.setattr(DeviceStats, "_cpu_times", staticmethod(lambda: next(readings)))
    device = DeviceStats(None)
    assert device.snapshot(advance=False)["cpu_percent"] == 50.0
    assert device.snapshot()["cpu_percent"] == 75.0  # since the first reading, not since the look in between
    assert device.snapshot()["cpu_percent"] == 0.0


class StatsWorker:
    health = ModelWorker.health  # the real health report, over the fake's attributes
    stream_state = None  # not a recurrent model
    decoder = None  # not a detector

    def __init__(self, stats):
        self.stats = stats
        self.queue_depth = 0
        self.model = SimpleNamespace(choice=SimpleNamespace(active="fake:cpu", degraded=False, reason=None))
        self.config = SimpleNamespace(source=SimpleNamespace(type="mqtt"))
        self.drift = SimpleNamespace(summary=lambda: {"state": None, "unavailable": "fake"})


class GrowingStats(ModelStats):
    """Its snapshot adds a model to the daemon, as start() filling workers and sources concurrently would."""

    def __init__(self, daemon: Daemon):
        super().__init__()
        self.daemon = daemon

    def snapshot(self, advance: bool = True) -> dict:
        index = len(self.daemon.workers)
        self.daemon.workers[f"m{index}"] = StatsWorker(ModelStats())
        self.daemon.sources[f"m{index}"] = SimpleNamespace(finished=False)
        return super().snapshot(advance)


def test_stats_while_start_still_adds_models_and_sources(tmp_path):
    daemon = Daemon(daemon_config(tmp_path))
    daemon.workers["m0"] = StatsWorker(GrowingStats(daemon))
    daemon.sources["m0"] = SimpleNamespace(finished=True)
    stats = daemon.stats()
    assert stats["models"]["m0"]["source_finished"] is True


def test_daemon_stats_without_advance_keeps_the_throughput_interval(tmp_path):
    daemon = Daemon(daemon_config(tmp_path))
    model_stats = ModelStats()
    daemon.workers["m"] = StatsWorker(model_stats)
    model_stats.record_batch(5, 1.0, [1.0] * 5)
    assert daemon.stats(advance=False)["models"]["m"]["throughput_per_s"] > 0
    assert daemon.stats()["models"]["m"]["throughput_per_s"] > 0
    assert daemon.stats()["models"]["m"]["throughput_per_s"] == 0
    json.dumps(daemon.stats(advance=False))
