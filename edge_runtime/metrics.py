"""Health numbers: per-model counters and latency percentiles, and the device's CPU, temperature, throttling and
memory.

Latencies are kept in a bounded ring, so memory is fixed whatever the uptime; percentiles describe the most
recent samples, which is what a fleet operator looking at `stats` wants to know.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np

from edge_runtime.hardware.thermal import ThrottleReader, find_thermal_zone, read_celsius

LATENCY_WINDOW = 2048


def percentiles(values: list[float] | deque) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(np.fromiter(values, dtype=np.float64), [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


class ModelStats:
    """Counters of one model; thread-safe, read by the stats publisher."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.windows = 0
        self.predictions = 0
        self.batches = 0
        self.dropped = 0
        self.invalid: Counter[str] = Counter()
        self.latency_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.inference_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._last_predictions = 0
        self._last_time = time.monotonic()

    def count_window(self, n: int = 1) -> None:
        with self._lock:
            self.windows += n

    def count_dropped(self, n: int = 1) -> None:
        with self._lock:
            self.dropped += n

    def count_invalid(self, reason: str) -> None:
        with self._lock:
            self.invalid[reason] += 1

    def record_batch(self, size: int, inference_ms: float, latencies_ms: list[float]) -> None:
        with self._lock:
            self.batches += 1
            self.predictions += size
            self.inference_ms.append(inference_ms)
            self.latency_ms.extend(latencies_ms)

    def snapshot(self, advance: bool = True) -> dict:
        """Totals, percentiles, and throughput since the previous advancing snapshot.

        The periodic stats publisher advances (the next throughput is measured from now); a look in between
        (the `info` command) passes `advance=False` so it does not shorten the publisher's interval.
        """
        with self._lock:
            now = time.monotonic()
            elapsed = max(now - self._last_time, 1e-9)
            throughput = (self.predictions - self._last_predictions) / elapsed
            if advance:
                self._last_predictions, self._last_time = self.predictions, now
            return {
                "throughput_per_s": round(throughput, 3),
                "windows": self.windows,
                "predictions": self.predictions,
                "batches": self.batches,
                "latency_ms": percentiles(self.latency_ms),
                "inference_ms": percentiles(self.inference_ms),
                "invalid": sum(self.invalid.values()),
                "invalid_by_reason": dict(self.invalid),
                "dropped": self.dropped,
            }


class DeviceStats:
    """CPU load (from /proc/stat deltas), temperature and throttling (where the board exposes them: see
    `edge_runtime.hardware.thermal`), and this process's memory against the board's budget."""

    def __init__(self, thermal_zone: str | None, throttled_file: str | None = None, *,
                 memory_budget_mb: int | None = None, root: Path = Path("/")):
        self.thermal_zone = find_thermal_zone(thermal_zone, root)  # found once: zone numbers do not move
        self.throttle = ThrottleReader(throttled_file, root)
        self.memory_budget_mb = memory_budget_mb
        self._lock = threading.Lock()  # the stats publisher and a command may ask at the same time
        self._last_cpu = self._cpu_times()

    @staticmethod
    def _cpu_times() -> tuple[int, int] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        values = [int(value) for value in fields]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    def cpu_percent(self, advance: bool = True) -> float | None:
        """CPU use since the previous advancing call; `advance=False` leaves that reference point alone."""
        current = self._cpu_times()
        with self._lock:
            previous = self._last_cpu
            if advance:
                self._last_cpu = current
        if current is None or previous is None or current[0] == previous[0]:
            return None
        total, idle = current[0] - previous[0], current[1] - previous[1]
        return round(100.0 * (1.0 - idle / total), 1)

    def temperature_c(self) -> float | None:
        return read_celsius(self.thermal_zone)

    def throttling(self) -> dict | None:
        """`{"active": bool, "now": [...], ...}`, or None when the board exposes no throttling state."""
        return self.throttle.read()

    @staticmethod
    def rss_mb() -> float | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
        except OSError:
            pass
        return None

    def snapshot(self, advance: bool = True) -> dict:
        """`advance=False`: CPU use since the last advancing snapshot, without moving its reference point."""
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = None
        return {
            "cpu_percent": self.cpu_percent(advance),
            "load_1m": load,
            "temperature_c": self.temperature_c(),
            "throttling": self.throttling(),
            "rss_mb": self.rss_mb(),
            "memory_budget_mb": self.memory_budget_mb,
        }

    def board_health(self) -> dict:
        """Temperature and throttling alone, for the retained status document."""
        return {"temperature_c": self.temperature_c(), "throttling": self.throttling()}
