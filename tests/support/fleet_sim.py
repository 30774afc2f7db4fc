"""`edge-fleet simulate` as a child process for tests, and a monitor that is stopped whatever happens."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edge_fleet.monitor import FleetMonitor
from edge_fleet.state import FleetState


class SimulatorProcess:
    """`python -m edge_fleet.cli simulate ...`, its log in a temp file, killed at `close()`."""

    def __init__(self, broker_url: str, devices: int, *args: str, report: Path | None = None):
        self.log = Path(tempfile.mkstemp(prefix="simulate-", suffix=".log")[1])
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in close()
        command = [sys.executable, "-m", "edge_fleet.cli", "simulate", "--broker", broker_url,
                   "--devices", str(devices), *args]
        if report is not None:
            command += ["--report", str(report)]
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: no clean disconnect, so the broker publishes every device's last will."""
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log_file.close()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def running_monitor(broker_url: str, share_group: str | None = None, prefix: str = "edge",
                    stale_after_s: float | None = None) -> Iterator[tuple[FleetMonitor, FleetState]]:
    """A started, subscribed monitor and its state."""
    state = FleetState(prefix=prefix, stale_after_s=stale_after_s)
    monitor = FleetMonitor(broker_url, state, share_group=share_group, prefix=prefix)
    monitor.start()
    try:
        if not monitor.wait_ready(10):
            raise RuntimeError(f"monitor could not subscribe on {broker_url}")
        yield monitor, state
    finally:
        monitor.stop()


def online(state: FleetState) -> int:
    return sum(device.online for device in state.devices())


def in_state(state: FleetState, wanted: str) -> int:
    return sum(device.state == wanted for device in state.devices())
