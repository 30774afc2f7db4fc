"""Run the real `edge-runtime` daemon as a child process, with a config written for the test."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml


def write_config(
    path: Path,
    *,
    broker_url: str,
    bundle: Path,
    source: dict,
    device_id: str = "dev-1",
    spool: Path | None = None,
    extra: dict | None = None,
    model: dict | None = None,
) -> Path:
    document = {
        "device_id": device_id,
        "broker": {"url": broker_url, "keepalive_s": 5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        "board": "x86_64",
        "spool": {"path": str(spool or path.parent / "spool.sqlite")},
        "publish": {"stats_interval_s": 0.5, "errors_per_second": 100},
        "models": [{"bundle": str(bundle), "source": source, **(model or {})}],
    }
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            document[key].update(value)
        else:
            document[key] = value
    path.write_text(yaml.dump(document, Dumper=_PlainDumper, sort_keys=False))
    return path


class _PlainDumper(yaml.SafeDumper):
    """Writes a value used twice (one source dict for two models) out twice: the daemon refuses YAML aliases."""

    def ignore_aliases(self, data) -> bool:
        return True


class DaemonProcess:
    """`python -m edge_runtime.cli run CONFIG` with its log in a file, stopped at exit whatever happens.

    `python` replaces this interpreter (tests/arm64 passes the emulated aarch64 one), with its `env`.
    """

    def __init__(self, config: Path, *args: str, python: list[str] | None = None, env: dict[str, str] | None = None):
        self.config = config
        self.log = config.with_suffix(".log")
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in wait()/close()
        self.process = subprocess.Popen(
            [*(python or [sys.executable]), "-m", "edge_runtime.cli", "--log-level", "INFO", "run", str(config), *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def terminate(self, timeout: float = 20.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.wait(5)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self._log_file.close()


def messages(collector, suffix: str) -> list[dict]:
    """JSON bodies of the collected messages whose topic ends with `suffix`."""
    found = []
    for topic, payload, _retain in collector.snapshot():
        if topic.endswith(suffix):
            with contextlib.suppress(ValueError):
                found.append(json.loads(payload))
    return found


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
