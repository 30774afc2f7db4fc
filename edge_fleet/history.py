"""The fleet's memory: a small SQLite file of what every device did over the last days.

`FleetState` only knows the present; the dashboard's charts need the past (was pi-07 slow yesterday? when did it
go offline?). The history keeps, per device and model, time series of throughput, latency p95 and drift state,
plus online/offline transitions and deploy results.

Writes are bounded on purpose: a fleet of thousands of devices sending stats every few seconds must not turn into
thousands of inserts a second, so metrics are *sampled* at most once per `sample_every_s` per device, whatever the
message rate. Transitions and deploy results are written when they change, which is rare.

Several `serve` processes may share one file (MQTT shared subscriptions split the stats traffic between them, and
every process sees every retained status). So the file is in WAL mode (readers never block the writer),
`busy_timeout` makes a writer wait for another process's transaction instead of failing, and every write is
idempotent across processes: the sampling gate, the "did the state change" check and the deploy de-duplication
are decided inside one `BEGIN IMMEDIATE` transaction against what the file holds, not only against this process's
memory.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

DAY_S = 86400.0
SAMPLE_SLACK = 0.05
DRIFT_LEVELS = {"ok": 0, "warning": 1, "drift": 2}
# metric name -> (column, how several models of one device combine into one device-level value)
METRICS = {
    "throughput": ("throughput", "SUM"),
    "latency_p95": ("latency_p95_ms", "MAX"),
    "drift": ("drift", "MAX"),
    "degraded": ("degraded", "MAX"),
    "queue_depth": ("queue_depth", "SUM"),
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    device TEXT NOT NULL,
    model TEXT NOT NULL,
    ts REAL NOT NULL,
    throughput REAL,
    latency_p95_ms REAL,
    drift INTEGER,
    degraded INTEGER,
    queue_depth REAL
);
CREATE INDEX IF NOT EXISTS samples_device_ts ON samples (device, ts);
CREATE INDEX IF NOT EXISTS samples_ts ON samples (ts);
CREATE TABLE IF NOT EXISTS transitions (
    device TEXT NOT NULL,
    ts REAL NOT NULL,
    state TEXT NOT NULL,
    online INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_device_ts ON transitions (device, ts);
CREATE TABLE IF NOT EXISTS deploys (
    device TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    state TEXT NOT NULL,
    ts REAL NOT NULL,
    model TEXT,
    sha256 TEXT,
    error TEXT,
    UNIQUE (device, deployment_id, state)
);
CREATE INDEX IF NOT EXISTS deploys_device_ts ON deploys (device, ts);
"""


class ModelLike(Protocol):
    throughput_per_s: float | None
    latency_p95_ms: float | None
    drift_state: str | None
    degraded: bool
    queue_depth: float | None


class DeviceLike(Protocol):
    """What `record` reads from a `fleet.state.DeviceState` (a protocol, so the history does not import the state)."""

    device_id: str
    state: str
    online: bool
    models: dict[str, Any]
    deploy: dict | None


def drift_level(state: str | None) -> int | None:
    """"ok"/"warning"/"drift" as 0/1/2 (a chart and Prometheus want numbers); None when drift is off or unknown."""
    return DRIFT_LEVELS.get(state) if state is not None else None


class FleetHistory:
    """Time series of the fleet in one SQLite file, safe to share between threads and processes."""

    def __init__(self, path: str | Path, *, sample_every_s: float = 10.0, retention_days: float = 7.0,
                 prune_every_s: float = 600.0, busy_timeout_ms: int = 10_000):
        self.path = Path(path)
        self.sample_every_s = sample_every_s
        # Stats arrive every stats_interval_s with some jitter; with an interval equal to the sampling period, a
        # message 50 ms early must not be skipped (that would halve the samples), hence a little slack.
        self._min_gap = sample_every_s * (1 - SAMPLE_SLACK)
        self.retention_s = retention_days * DAY_S
        self.prune_every_s = prune_every_s
        self.busy_timeout_ms = busy_timeout_ms
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One writing connection, serialised by a lock: writes are rare (sampled), and one connection keeps the
        # per-process write path simple. Reads (HTTP threads) open their own short-lived connection, which in WAL
        # mode never waits for the writer.
        self._lock = threading.Lock()
        self._db = self._connect()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes, cheap
            self._db.executescript(SCHEMA)
        # in-memory gates in front of the file's: they save a transaction on most calls
        self._last_sample: dict[str, float] = {}
        self._last_state: dict[str, str] = {}
        self._seen_deploys: set[tuple[str, str, str]] = set()
        self._last_prune = 0.0
        self.writes = 0
        self.closed = False

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), not sqlite3's implicit ones
        db = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                             check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        return db

    # -- writing ------------------------------------------------------------------------------------------------
    def record(self, device: DeviceLike, now: float | None = None) -> bool:
        """Remember what `device` looks like at `now`: a state transition or a new deploy result at once, the
        metrics only if this device's last sample is at least `sample_every_s` old. True when anything was written.

        Metrics are sampled only while the device is online (an offline device's numbers are its last stats, not
        measurements, and a gap in the chart says the truth) and once it has sent numbers: a status alone would
        spend the sampling slot on an empty row and hide the first stats."""
        return self.record_many([device], now) > 0

    def record_many(self, devices: Iterable[DeviceLike], now: float | None = None) -> int:
        """`record` for many devices in one transaction (the periodic sweep over a large fleet would otherwise be a
        transaction per device); returns the number of rows written. Best effort: a locked or full disk is logged,
        and the dashboard goes on without the history."""
        now = time.time() if now is None else now
        with self._lock:
            if self.closed:
                return 0
            due = [(device, *self._due(device, now)) for device in devices]
            due = [item for item in due if any(item[1:])]
            written = 0
            if due:
                try:
                    self._db.execute("BEGIN IMMEDIATE")
                    remember = [self._write(device, transition, deploy, sample, now)
                                for device, transition, deploy, sample in due]
                    self._db.execute("COMMIT")
                except sqlite3.Error:
                    log.exception("fleet history: writing %d device(s) failed", len(due))
                    self._rollback()
                    return 0
                # the in-memory gates move only once the file has the rows, so a failed write is tried again
                for device_id, state, deploy_key, sampled_at, rows in remember:
                    if state is not None:
                        self._last_state[device_id] = state
                    if deploy_key is not None:
                        self._seen_deploys.add(deploy_key)
                    if sampled_at is not None:
                        self._last_sample[device_id] = sampled_at
                    written += rows
                self.writes += written
            if now - self._last_prune >= self.prune_every_s:
                try:
                    self._prune_locked(now)
                except sqlite3.Error:
                    log.exception("fleet history: pruning failed")
                    self._rollback()
            return written

    def _due(self, device: DeviceLike, now: float) -> tuple[bool, tuple[str, str, str] | None, bool]:
        """What this process's memory says may be new: (state changed, deploy result key, sample due)."""
        device_id = device.device_id
        transition = self._last_state.get(device_id) != device.state
        deploy, key = device.deploy, None
        if isinstance(deploy, dict) and deploy.get("deployment_id") and deploy.get("state"):
            key = (device_id, str(deploy["deployment_id"]), str(deploy["state"]))
            key = None if key in self._seen_deploys else key
        sample = bool(device.online) and _has_numbers(device.models) and \
            now - self._last_sample.get(device_id, -1e18) >= self._min_gap
        return transition, key, sample

    def _write(self, device: DeviceLike, transition: bool, deploy_key: tuple[str, str, str] | None, sample: bool,
               now: float) -> tuple[str, str | None, tuple[str, str, str] | None, float | None, int]:
        """The rows of one device, inside the open transaction; each check is against the file, since another
        process may have written the same transition, deploy result or sample a moment ago."""
        db, device_id, rows = self._db, device.device_id, 0
        if transition:
            row = db.execute("SELECT state FROM transitions WHERE device = ? ORDER BY ts DESC LIMIT 1",
                             (device_id,)).fetchone()
            if row is None or row[0] != device.state:
                db.execute("INSERT INTO transitions (device, ts, state, online) VALUES (?, ?, ?, ?)",
                           (device_id, now, device.state, int(bool(device.online))))
                rows += 1
        if deploy_key is not None:
            deploy = device.deploy or {}
            ts = deploy.get("ts")
            ts = float(ts) if _number(ts) is not None else now
            rows += db.execute(
                "INSERT OR IGNORE INTO deploys (device, deployment_id, state, ts, model, sha256, error) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*deploy_key, ts, _text(deploy.get("model")), _text(deploy.get("sha256")),
                 _text(deploy.get("error")))).rowcount
        sampled_at = None
        if sample:
            last = db.execute("SELECT MAX(ts) FROM samples WHERE device = ?", (device_id,)).fetchone()[0]
            # (a clock set back by more than one interval must not stop sampling until it catches up again)
            if last is None or now - last >= self._min_gap or now < last - self.sample_every_s:
                db.executemany(
                    "INSERT INTO samples (device, model, ts, throughput, latency_p95_ms, drift, degraded, "
                    "queue_depth) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(device_id, name, now, _number(model.throughput_per_s), _number(model.latency_p95_ms),
                      drift_level(model.drift_state), int(bool(model.degraded)), _number(model.queue_depth))
                     for name, model in device.models.items()])
                rows += len(device.models)
                sampled_at = now
            else:
                sampled_at = last
        return device_id, device.state if transition else None, deploy_key, sampled_at, rows

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def prune(self, now: float | None = None) -> int:
        """Delete what is older than the retention; returns the number of rows deleted."""
        with self._lock:
            try:
                return self._prune_locked(time.time() if now is None else now)
            except sqlite3.Error:
                log.exception("fleet history: pruning failed")
                self._rollback()
                return 0

    def _prune_locked(self, now: float) -> int:
        self._last_prune = now
        cutoff = now - self.retention_s
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        deleted = db.execute("DELETE FROM samples WHERE ts < ?", (cutoff,)).rowcount
        deleted += db.execute("DELETE FROM deploys WHERE ts < ?", (cutoff,)).rowcount
        # keep each device's newest transition however old: it is the state the device is still in
        deleted += db.execute(
            "DELETE FROM transitions WHERE ts < ? AND ts < (SELECT MAX(t.ts) FROM transitions t "
            "WHERE t.device = transitions.device)", (cutoff,)).rowcount
        db.execute("COMMIT")
        if deleted:
            log.info("fleet history: deleted %d rows older than %.1f days", deleted, self.retention_s / DAY_S)
        return deleted

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                self._db.close()

    # -- reading ------------------------------------------------------------------------------------------------
    def _read(self, sql: str, params: Iterable[Any]) -> list[tuple]:
        db = self._connect()
        try:
            return db.execute(sql, tuple(params)).fetchall()
        finally:
            db.close()

    def series(self, device_id: str, metric: str, since: float, *, model: str | None = None,
               until: float | None = None) -> list[tuple[float, float]]:
        """`(ts, value)` of one metric since `since`, oldest first. With `model=None`, one value per sample time
        for the whole device: throughput and queue depth add up over its models, latency, drift and degraded take
        the worst. Samples without a value (no stats yet, drift off) are left out."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; one of {', '.join(METRICS)}")
        column, combine = METRICS[metric]
        until = float("inf") if until is None else until
        if model is None:
            rows = self._read(f"SELECT ts, {combine}({column}) FROM samples WHERE device = ? AND ts >= ? AND ts <= ? "
                              f"AND {column} IS NOT NULL GROUP BY ts ORDER BY ts", (device_id, since, until))
        else:
            rows = self._read(f"SELECT ts, {column} FROM samples WHERE device = ? AND model = ? AND ts >= ? "
                              f"AND ts <= ? AND {column} IS NOT NULL ORDER BY ts", (device_id, model, since, until))
        return [(float(ts), float(value)) for ts, value in rows]

    def models(self, device_id: str, since: float) -> list[str]:
        """The models this device reported since `since` (a replaced model still has a history)."""
        rows = self._read("SELECT DISTINCT model FROM samples WHERE device = ? AND ts >= ? ORDER BY model",
                          (device_id, since))
        return [row[0] for row in rows]

    def online_history(self, device_id: str, since: float) -> list[tuple[float, str]]:
        """`(ts, state)` transitions since `since`, oldest first, starting with the state the device was already
        in at `since` (its timestamp moved up to `since`), so a chart of the window starts with a known state."""
        before = self._read("SELECT ts, state FROM transitions WHERE device = ? AND ts < ? ORDER BY ts DESC LIMIT 1",
                            (device_id, since))
        rows = self._read("SELECT ts, state FROM transitions WHERE device = ? AND ts >= ? ORDER BY ts",
                          (device_id, since))
        start = [(float(since), before[0][1])] if before else []
        return start + [(float(ts), state) for ts, state in rows]

    def deploys(self, device_id: str, since: float) -> list[dict]:
        """The deploy results of this device since `since`, oldest first."""
        rows = self._read("SELECT deployment_id, state, ts, model, sha256, error FROM deploys WHERE device = ? "
                          "AND ts >= ? ORDER BY ts", (device_id, since))
        keys = ("deployment_id", "state", "ts", "model", "sha256", "error")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def knows(self, device_id: str) -> bool:
        """Whether the file has anything of this device (indexed look-ups, unlike `devices`)."""
        return bool(self._read("SELECT EXISTS (SELECT 1 FROM transitions WHERE device = ?) OR EXISTS "
                               "(SELECT 1 FROM samples WHERE device = ?)", (device_id, device_id))[0][0])

    def devices(self) -> list[str]:
        """Every device the file knows about (also those this process has not heard from since it started)."""
        rows = self._read("SELECT device FROM transitions UNION SELECT device FROM samples ORDER BY 1", ())
        return [row[0] for row in rows]


def _has_numbers(models: dict[str, Any]) -> bool:
    return any(_number(model.throughput_per_s) is not None or _number(model.latency_p95_ms) is not None
               or drift_level(model.drift_state) is not None for model in models.values())


def _number(value: Any) -> float | None:
    """A finite number or None: a device's JSON is untrusted and a string or NaN must not land in a chart."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:2000]
