"""`/metrics`: the fleet in Prometheus text format, read from `FleetState` at scrape time.

A custom collector rather than gauges set on every message: a fleet sends far more messages than Prometheus
scrapes, a gauge per device would have to be removed by hand when a device disappears, and "seconds since last
seen" only means something computed at scrape time. Values a device did not report (no stats yet, drift off) are
left out rather than exported as 0, which would read as "measured zero".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from edge_fleet.history import drift_level

PREFIX = "edge_fleet"
ALERT_KINDS = ("offline", "drift", "degraded", "deploy_failed")


class FleetCollector(Collector):
    """Per-device and fleet-wide metrics of one `FleetState` (anything with `devices()`, `snapshot()`, `alerts()`)."""

    def __init__(self, state: Any, clock: Callable[[], float] = time.time):
        self.state = state
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        snapshot = self.state.snapshot()
        counts = snapshot.get("counts", {})
        for key, text in [("total", "devices known to this monitor"), ("online", "devices online"),
                          ("offline", "devices offline (last will, or silent for too long)"),
                          ("degraded", "devices running a model on a fallback backend"),
                          ("drift", "devices with a model in drift")]:
            name = f"{PREFIX}_devices" if key == "total" else f"{PREFIX}_devices_{key}"
            yield _gauge(name, f"Number of {text}.", [], [([], counts.get(key))])
        alerts = GaugeMetricFamily(f"{PREFIX}_alerts", "Open alerts by kind.", labels=["kind"])
        by_kind = dict.fromkeys(ALERT_KINDS, 0)
        for alert in self.state.alerts():
            by_kind[alert.get("kind", "other")] = by_kind.get(alert.get("kind", "other"), 0) + 1
        for kind, value in by_kind.items():
            alerts.add_metric([kind], value)
        yield alerts
        yield _counter(f"{PREFIX}_garbage_messages", "Messages that were not valid JSON of the expected shape.",
                       snapshot.get("garbage"))
        yield _counter(f"{PREFIX}_unknown_schema_messages", "Status messages of a schema version this monitor does "
                       "not know.", snapshot.get("unknown_schema"))
        yield _counter(f"{PREFIX}_unknown_device_messages", "Messages for a device no valid status announced (not "
                       "tracked).", snapshot.get("unknown_device"))
        yield _counter(f"{PREFIX}_refused_devices", "Statuses of new devices beyond the monitor's device limit.",
                       snapshot.get("refused_devices"))
        yield from self._devices(self.state.devices(), now)

    def _devices(self, devices: list[Any], now: float) -> Iterator[Metric]:
        dev = ["device"]
        online, age, info, cpu, temp, rss, problems = ([] for _ in range(7))
        mod = ["device", "model"]
        throughput, latency, drift, degraded, queue, invalid, dropped, model_info = ([] for _ in range(8))
        for device in devices:
            key = [device.device_id]
            online.append((key, int(bool(device.online))))
            age.append((key, None if device.last_seen is None else max(0.0, now - device.last_seen)))
            info.append(([device.device_id, device.state, _label(device.group), _label(device.version),
                          _label(device.board)], 1))
            cpu.append((key, device.cpu_percent))
            temp.append((key, device.temperature_c))
            rss.append((key, None if device.rss_mb is None else device.rss_mb * 1024 * 1024))
            problems.append((key, device.problems))
            for name, model in device.models.items():
                mkey = [device.device_id, name]
                throughput.append((mkey, model.throughput_per_s))
                latency.append((mkey, None if model.latency_p95_ms is None else model.latency_p95_ms / 1000))
                drift.append((mkey, drift_level(model.drift_state)))
                degraded.append((mkey, int(bool(model.degraded))))
                queue.append((mkey, model.queue_depth))
                invalid.append((mkey, model.invalid))
                dropped.append((mkey, model.dropped))
                model_info.append(([device.device_id, name, _label(model.version), _label(model.backend),
                                    _label(model.precision), _label(model.sha256)], 1))
        yield _gauge(f"{PREFIX}_device_online", "1 when the device is online.", dev, online)
        yield _gauge(f"{PREFIX}_device_last_seen_age_seconds", "Seconds since the last message from the device.",
                     dev, age)
        yield _gauge(f"{PREFIX}_device_info", "Device state, group, runtime version and board (always 1).",
                     ["device", "state", "group", "version", "board"], info)
        yield _gauge(f"{PREFIX}_device_cpu_percent", "CPU use of the device, percent.", dev, cpu)
        yield _gauge(f"{PREFIX}_device_temperature_celsius", "Board temperature.", dev, temp)
        yield _gauge(f"{PREFIX}_device_resident_memory_bytes", "Memory of the inference daemon.", dev, rss)
        yield _gauge(f"{PREFIX}_device_problems", "Number of problems the monitor sees on the device.", dev, problems)
        yield _gauge(f"{PREFIX}_model_throughput_per_second", "Predictions per second.", mod, throughput)
        yield _gauge(f"{PREFIX}_model_latency_p95_seconds", "95th percentile of the prediction latency.", mod,
                     latency)
        yield _gauge(f"{PREFIX}_model_drift_state", "Input drift: 0 ok, 1 warning, 2 drift.", mod, drift)
        yield _gauge(f"{PREFIX}_model_degraded", "1 when the model runs on a fallback backend.", mod, degraded)
        yield _gauge(f"{PREFIX}_model_queue_depth", "Windows waiting for inference.", mod, queue)
        yield _gauge(f"{PREFIX}_model_invalid", "Invalid inputs since the daemon started.", mod, invalid)
        yield _gauge(f"{PREFIX}_model_dropped", "Windows dropped since the daemon started.", mod, dropped)
        yield _gauge(f"{PREFIX}_model_info", "Model version, backend, precision and sha256 (always 1).",
                     ["device", "model", "version", "backend", "precision", "sha256"], model_info)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and value == value:
        return float(value)
    return None


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def _gauge(name: str, documentation: str, labels: list[str], samples: list[tuple[list[str], Any]]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for label_values, value in samples:
        number = _number(value)
        if number is not None:
            family.add_metric(label_values, number)
    return family


def _counter(name: str, documentation: str, value: Any) -> Metric:
    family = CounterMetricFamily(name, documentation)
    family.add_metric([], _number(value) or 0.0)
    return family


def registry_for(state: Any) -> CollectorRegistry:
    """A registry of its own (not the process-global one), so two servers in one test process do not collide."""
    registry = CollectorRegistry()
    registry.register(FleetCollector(state))
    return registry
