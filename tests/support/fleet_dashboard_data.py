"""A small synthetic fleet, as MQTT messages of docs/fleet-protocol.md, for the serve and dashboard tests.

Four devices, one of each thing the dashboard must show:
    pi-01  online, healthy (activity model)
    pi-02  online for a while, then its last will: offline
    pi-03  online, two models; `activity` runs degraded (CPU fallback) and is in drift
    pi-04  online, a deploy that failed
The messages go through `FleetState.ingest` (the real parser), and the history is sampled along the way so the
per-device charts have something to draw.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

PREFIX = "edge"
SHA = "3f" * 32


def status(device: str, state: str = "online", *, group: str | None = "lab", models: list[dict] | None = None,
           ts: float | None = None) -> bytes:
    """A retained status message as the daemon publishes it (the last will is the short form)."""
    if state == "offline":
        return json.dumps({"state": "offline", "device_id": device}).encode()
    models = models if models is not None else [model_status("activity")]
    return json.dumps({"state": state, "schema": 1, "device_id": device, "version": "0.1.0",
                       "ts": ts or time.time(), "board": "raspberry-pi-4", "group": group,
                       "models": models}).encode()


def model_status(name: str, *, backend: str = "onnxruntime", degraded: bool = False,
                 reason: str | None = None) -> dict:
    return {"name": name, "version": "1.2.0", "model_sha256": SHA, "precision": "int8",
            "backend": {"active": backend, "degraded": degraded, "reason": reason}, "drift": "enabled"}


def model_stats(throughput: float, p95: float, *, drift: str | None = "ok", top: list[str] | None = None,
                backend: str = "onnxruntime", degraded: bool = False, reason: str | None = None) -> dict:
    return {"throughput_per_s": throughput, "latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95 * 1.5},
            "queue_depth": 0, "invalid": 0, "dropped": 0, "backend": backend, "degraded": degraded,
            "degraded_reason": reason, "drift": {"state": drift, "top_channels": top or []}}


def stats(device: str, models: dict[str, dict], ts: float) -> bytes:
    return json.dumps({"ts": ts, "device_id": device, "models": models,
                       "device": {"cpu_percent": 21.5, "temperature_c": 52.0, "rss_mb": 90.0}}).encode()


def feed_sample_fleet(state: Any, history: Any = None, now: float | None = None, minutes: int = 10) -> float:
    """Ingest `minutes` of traffic ending at `now` (stats every 10 s) and sample the history along the way.
    Returns `now`."""
    now = time.time() if now is None else now
    start = now - minutes * 60
    cpu = [model_status("activity", backend="onnxruntime-cpu", degraded=True, reason="CUDA not available"),
           model_status("digits")]
    retained = [("pi-01", status("pi-01", ts=start)), ("pi-02", status("pi-02", ts=start)),
                ("pi-03", status("pi-03", models=cpu, group="plant-2", ts=start)),
                ("pi-04", status("pi-04", ts=start))]
    for device, payload in retained:
        state.ingest(f"{PREFIX}/{device}/status", payload, retained=True, now=start)
    steps = minutes * 6
    for i in range(steps + 1):
        t = start + i * 10
        wave = math.sin(i / 6)
        if i == steps - 12:  # two minutes before the end pi-02 drops off the network: the broker sends its will
            state.ingest(f"{PREFIX}/pi-02/status", status("pi-02", "offline"), now=t)
        if i < steps - 12:
            state.ingest(f"{PREFIX}/pi-02/stats", stats("pi-02", {"activity": model_stats(9 + wave, 4.0)}, t), now=t)
        state.ingest(f"{PREFIX}/pi-01/stats", stats("pi-01", {"activity": model_stats(10 + 2 * wave, 4 + wave)}, t),
                     now=t)
        drift = "ok" if i < steps // 3 else "warning" if i < 2 * steps // 3 else "drift"
        pi03 = {"activity": model_stats(6 + wave, 11 + wave, drift=drift, top=["acc_x", "gyro_z"],
                                        backend="onnxruntime-cpu", degraded=True, reason="CUDA not available"),
                "digits": model_stats(25 + 3 * wave, 7.5)}
        state.ingest(f"{PREFIX}/pi-03/stats", stats("pi-03", pi03, t), now=t)
        state.ingest(f"{PREFIX}/pi-04/stats", stats("pi-04", {"activity": model_stats(10.0, 4.5)}, t), now=t)
        if i == steps // 2:
            state.ingest(f"{PREFIX}/pi-03/drift/activity", json.dumps(
                {"state": "warning", "top_channels": ["acc_x"], "channels": {}, "outputs": {}}).encode(), now=t)
            deploy = {"deployment_id": "rollout-7", "state": "failed", "received": 12, "chunks": 12,
                      "model": "activity", "sha256": SHA, "error": "golden output mismatch on onnxruntime", "ts": t}
            state.ingest(f"{PREFIX}/pi-04/deploy/status", json.dumps(deploy).encode(), now=t)
        if history is not None:
            for device in state.devices():
                history.record(device, t)
    return now
