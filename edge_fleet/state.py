"""What the fleet looks like, built from the devices' MQTT messages (docs/fleet-protocol.md; topics and the status
schema version are the contract's, edge_runtime/contract).

`FleetState.ingest` is the fast path: every status, stats, drift and deploy message of the fleet goes through it,
more than 10,000 a second in one process, so it does one `split`, one `json.loads` and a few dict updates, and
holds the lock only for the updates. Devices are untrusted input: a message that is not JSON, has wrong types or
a newer status schema is counted (per device and in total) and otherwise ignored; it never raises.

A device exists only once a valid status document named it: a known state, and no `device_id` other than the
topic's. Stats, drift, deploy messages and garbage for a device nobody announced are counted (`unknown`,
`garbage`), never a device: 20,000 junk messages on 20,000 topics must not become 20,000 rows of `/metrics`. And at
most `max_devices` are tracked; a status beyond that is counted (`refused_devices`).

A message is applied whole or not at all: every field is checked before anything changes, so a half-valid
message cannot leave a device half-updated.

Times are Unix seconds. `first_seen` is when this monitor first heard of the device; `last_seen` is the last
message from it (for a retained status, the `ts` in the message, since it may be days old).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_fleet.snapshots import SnapshotStore
from edge_runtime.contract import DEVICE_STATES, STATUS_SCHEMA, FleetTopics

log = logging.getLogger("edge_fleet.state")

SCHEMA = STATUS_SCHEMA  # the newest status schema this module understands: the contract's
STATES = DEVICE_STATES
Listener = Callable[[str, str], None]
_NUMBER = (int, float)
#: devices one monitor tracks at most (a fleet larger than this needs several prefixes or monitors)
MAX_DEVICES = 100_000


class UnknownDevice(Exception):
    """A message for a device no valid status document announced."""


@dataclass
class ModelState:
    name: str
    version: str | None = None
    sha256: str | None = None
    precision: str | None = None
    backend: str | None = None
    degraded: bool = False
    degraded_reason: str | None = None
    throughput_per_s: float | None = None
    latency_p95_ms: float | None = None
    queue_depth: int | None = None
    invalid: int = 0
    dropped: int = 0
    drift_state: str | None = None
    drift_top: list[str] = field(default_factory=list)
    # cameras and microphones: connected / reconnecting / ...; detectors: detections by label, the latest snapshot
    source_state: str | None = None
    detections: dict[str, int] | None = None
    snapshot: dict | None = None  # ts, seq, trigger, width, height, bytes (the JPEG is in FleetState.snapshots)

    def copy(self) -> ModelState:
        clone = ModelState.__new__(ModelState)
        clone.__dict__.update(self.__dict__)
        clone.drift_top = list(self.drift_top)
        return clone


@dataclass
class DeviceState:
    device_id: str
    state: str = "unknown"  # online | offline | stopped | unknown
    online: bool = False
    group: str | None = None
    version: str | None = None
    board: str | None = None
    models: dict[str, ModelState] = field(default_factory=dict)
    first_seen: float = 0.0
    last_seen: float = 0.0
    cpu_percent: float | None = None
    temperature_c: float | None = None
    rss_mb: float | None = None
    deploy: dict | None = None
    problems: int = 0

    def as_dict(self) -> dict:
        """Plain JSON-ready data (built by hand: `dataclasses.asdict` is ten times slower on a 10,000-device
        snapshot)."""
        data = dict(self.__dict__)
        data["models"] = {name: {**model.__dict__, "drift_top": list(model.drift_top)}
                          for name, model in self.models.items()}
        data["deploy"] = dict(self.deploy) if self.deploy is not None else None
        return data

    def copy(self) -> DeviceState:
        clone = DeviceState.__new__(DeviceState)
        clone.__dict__.update(self.__dict__)
        clone.models = {name: model.copy() for name, model in self.models.items()}
        clone.deploy = dict(self.deploy) if self.deploy is not None else None
        return clone


class Garbage(Exception):
    """A device message this monitor cannot use (bad JSON, wrong types)."""


# -- validation: small helpers that raise Garbage --------------------------------------------------------------
def _dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise Garbage(f"{what}: expected an object")
    return value


def _str(value: Any, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise Garbage(f"{what}: expected a string")


def _num(value: Any, what: str) -> float | None:
    if value is None or (isinstance(value, _NUMBER) and not isinstance(value, bool)):
        return value
    raise Garbage(f"{what}: expected a number")


def _int(value: Any, what: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise Garbage(f"{what}: expected an integer")


def _bool(value: Any, what: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise Garbage(f"{what}: expected true or false")


def _names(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Garbage(f"{what}: expected a list of strings")
    return value


def _parse_status_models(value: Any) -> list[dict]:
    """The `models` list of an online status, as ModelState field updates (validated, nothing applied yet)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Garbage("status models: expected a list")
    out = []
    for entry in value:
        entry = _dict(entry, "status model")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise Garbage("status model: name missing")
        backend = entry.get("backend")
        if isinstance(backend, dict):
            active = _str(backend.get("active"), "backend.active")
            degraded = _bool(backend.get("degraded"), "backend.degraded")
            reason = _str(backend.get("reason"), "backend.reason")
        else:
            active, degraded, reason = _str(backend, "backend"), False, None
        update = {"name": name, "version": _str(entry.get("version"), "version"),
                  "sha256": _str(entry.get("model_sha256"), "model_sha256"),
                  "precision": _str(entry.get("precision"), "precision"),
                  "backend": active, "degraded": degraded, "degraded_reason": reason}
        drift = entry.get("drift")
        if isinstance(drift, dict):  # the status may carry a drift summary; a plain string says enabled/off
            update["drift_state"] = _str(drift.get("state"), "drift.state")
        out.append(update)
    return out


def _parse_stats_model(name: str, entry: Any) -> dict:
    entry = _dict(entry, f"stats model {name}")
    latency = entry.get("latency_ms")
    p95 = _num(_dict(latency, "latency_ms").get("p95"), "latency_ms.p95") if latency is not None else None
    update: dict[str, Any] = {
        "throughput_per_s": _num(entry.get("throughput_per_s"), "throughput_per_s"),
        "latency_p95_ms": p95,
        "queue_depth": _int(entry.get("queue_depth"), "queue_depth"),
        "invalid": _int(entry.get("invalid"), "invalid") or 0,
        "dropped": _int(entry.get("dropped"), "dropped") or 0,
    }
    if "backend" in entry:
        update["backend"] = _str(entry["backend"], "backend")
    if "degraded" in entry:
        update["degraded"] = _bool(entry["degraded"], "degraded")
        update["degraded_reason"] = _str(entry.get("degraded_reason"), "degraded_reason")
    drift = entry.get("drift")
    if drift is not None:
        drift = _dict(drift, "drift")
        update["drift_state"] = _str(drift.get("state"), "drift.state")
        update["drift_top"] = list(_names(drift.get("top_channels"), "drift.top_channels"))
    source = entry.get("source_health")
    if source is not None:
        update["source_state"] = _str(_dict(source, "source_health").get("state"), "source_health.state")
    found = entry.get("detections")
    if found is not None:
        by_label = _dict(_dict(found, "detections").get("by_label"), "detections.by_label")
        update["detections"] = {str(label): _int(count, "detections.by_label") or 0
                                for label, count in by_label.items()}
    return update


def _parse_snapshot(document: dict) -> tuple[dict, bytes]:
    """(what the dashboard shows about a snapshot, its JPEG bytes)."""
    encoded = document.get("jpeg")
    if not isinstance(encoded, str):
        raise Garbage("snapshot: jpeg missing")
    try:
        jpeg = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise Garbage("snapshot: jpeg is not base64") from None
    if not jpeg.startswith(b"\xff\xd8"):
        raise Garbage("snapshot: not a JPEG")
    trigger = _dict(document.get("trigger") or {}, "snapshot trigger")
    detections = document.get("detections")
    if not isinstance(detections, list):
        raise Garbage("snapshot: detections missing")
    summary = {"ts": _num(document.get("ts"), "snapshot ts"), "seq": _int(document.get("seq"), "snapshot seq"),
               "trigger": {"label": _str(trigger.get("label"), "snapshot trigger label"),
                           "score": _num(trigger.get("score"), "snapshot trigger score")},
               "detections": len(detections), "width": _int(document.get("width"), "snapshot width"),
               "height": _int(document.get("height"), "snapshot height"), "bytes": len(jpeg)}
    return summary, jpeg


def _parse_stats(document: dict) -> tuple[dict[str, dict], dict]:
    models = document.get("models")
    parsed = {}
    if models is not None:
        for name, entry in _dict(models, "stats models").items():
            parsed[name] = _parse_stats_model(name, entry)
    device = document.get("device")
    health = {}
    if device is not None:
        device = _dict(device, "stats device")
        health = {"cpu_percent": _num(device.get("cpu_percent"), "cpu_percent"),
                  "temperature_c": _num(device.get("temperature_c"), "temperature_c"),
                  "rss_mb": _num(device.get("rss_mb"), "rss_mb")}
    return parsed, health


def _parse_deploy(document: dict) -> dict:
    state = document.get("state")
    if not isinstance(state, str):
        raise Garbage("deploy status: state missing")
    for key in ("deployment_id", "model", "sha256", "error"):
        _str(document.get(key), f"deploy {key}")
    for key in ("received", "chunks"):
        _int(document.get(key), f"deploy {key}")
    _num(document.get("ts"), "deploy ts")
    return dict(document)


class FleetState:
    """Every device of one topic prefix; thread-safe (one lock). See the module docstring."""

    def __init__(self, prefix: str = "edge", stale_after_s: float | None = None, max_devices: int = MAX_DEVICES):
        self.prefix = prefix
        self.max_devices = max_devices
        self.unknown = 0  # messages for a device no status announced
        self.refused_devices = 0  # statuses beyond max_devices
        self.topics = FleetTopics(prefix)
        self.stale_after_s = stale_after_s
        self._lock = threading.Lock()
        self._devices: dict[str, DeviceState] = {}
        self._since: dict[tuple[str, str], float] = {}  # (device, alert key) -> when the condition began
        self._listeners: list[Listener] = []
        self.garbage = 0
        self.unknown_schema = 0
        self.snapshots = SnapshotStore()

    # -- the fast path -------------------------------------------------------------------------------------------
    def ingest(self, topic: str, payload: bytes, retained: bool = False, now: float | None = None) -> str | None:
        """Apply one message; the device id it touched, or None (not a fleet topic, or garbage)."""
        parsed = self.topics.parse(topic)
        if parsed is None:
            return None
        device_id, kind, model_name = parsed
        if now is None:
            now = time.time()
        try:
            if kind == "status" and not payload:
                return self._forget(device_id)  # the retained status was cleared: the device left the fleet
            document = json.loads(payload)
            if type(document) is not dict:
                raise Garbage("not a JSON object")
            if kind == "stats":
                changed = self._apply_stats(device_id, document, now)
            elif kind == "status":
                changed = self._apply_status(device_id, document, retained, now)
            elif kind == "drift":
                changed = self._apply_drift(device_id, model_name, document, now)
            elif kind == "snapshot":
                changed = self._apply_snapshot(device_id, model_name, document, now)
            else:
                changed = self._apply_deploy(device_id, document, now)
        except UnknownDevice:
            with self._lock:
                self.unknown += 1
            return None
        except (ValueError, Garbage, TypeError, AttributeError, RecursionError) as exc:  # ValueError: JSON, UTF-8
            self._count_garbage(device_id, now, exc)
            return None
        if changed is None:
            return None
        for listener in self._listeners:
            try:
                listener(device_id, kind)
            except Exception:
                log.exception("fleet state listener failed")
        return device_id

    def _device(self, device_id: str, now: float, create: bool = False) -> DeviceState:
        """The device (call with the lock held); only a valid status creates one (`create`), else UnknownDevice."""
        device = self._devices.get(device_id)
        if device is None:
            if not create:
                raise UnknownDevice(device_id)
            if len(self._devices) >= self.max_devices:
                self.refused_devices += 1
                raise UnknownDevice(device_id)
            device = self._devices[device_id] = DeviceState(device_id, first_seen=now)
        return device

    def _count_garbage(self, device_id: str, now: float, exc: Exception) -> None:
        with self._lock:
            self.garbage += 1
            device = self._devices.get(device_id)
            if device is not None:
                device.problems += 1
        log.debug("%s: unusable message: %s", device_id, exc)

    def _apply_stats(self, device_id: str, document: dict, now: float) -> str:
        models, health = _parse_stats(document)
        with self._lock:
            device = self._device(device_id, now)
            device.last_seen = now
            for name, update in models.items():
                model = device.models.get(name)
                if model is None:
                    model = device.models[name] = ModelState(name)
                before = (model.drift_state, model.degraded)
                model.__dict__.update(update)
                if (model.drift_state, model.degraded) != before:
                    self._track(device_id, model, now)
            if health:
                device.__dict__.update(health)
        return "stats"

    def _apply_status(self, device_id: str, document: dict, retained: bool, now: float) -> str:
        state = document.get("state")
        if state not in STATES:
            raise Garbage(f"status: unknown state {state!r}")
        if document.get("device_id", device_id) != device_id:
            raise Garbage(f"status: device_id {str(document.get('device_id'))[:64]!r} is not the topic's")
        schema = document.get("schema", SCHEMA)
        newer = not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA
        if newer:
            # A newer daemon: trust only the state (the will and the basic online/offline), count the rest.
            updates: dict[str, Any] = {}
            models = None
        else:
            updates = {"group": _str(document.get("group"), "group"),
                       "version": _str(document.get("version"), "version"),
                       "board": _str(document.get("board"), "board")}
            # the will carries only the state: keep what the last full status told
            models = _parse_status_models(document["models"]) if "models" in document else None
            if state != "online":
                updates = {key: value for key, value in updates.items() if value is not None}
        ts = document.get("ts")
        if retained:  # possibly old news: the device's own time, if it has one that is not in the future
            seen = ts if isinstance(ts, _NUMBER) and not isinstance(ts, bool) and 0 < ts <= now else None
        else:
            seen = now
        with self._lock:
            device = self._device(device_id, now, create=True)
            if newer:
                self.unknown_schema += 1
                device.problems += 1
            if seen is not None and seen > device.last_seen:
                device.last_seen = seen
            if device.state != state:
                self._since[(device_id, "state")] = seen if seen is not None else now
            device.state = state
            device.online = state == "online"
            device.__dict__.update(updates)
            if models is not None:
                kept = {}
                for update in models:
                    model = device.models.get(update["name"]) or ModelState(update["name"])
                    model.__dict__.update(update)
                    self._track(device_id, model, now)
                    kept[model.name] = model
                for name in device.models.keys() - kept.keys():  # replaced or removed on the device
                    self._since.pop((device_id, f"drift:{name}"), None)
                    self._since.pop((device_id, f"degraded:{name}"), None)
                device.models = kept
        return "status"

    def _apply_drift(self, device_id: str, model_name: str, document: dict, now: float) -> str:
        state = _str(document.get("state"), "drift state")
        top = list(_names(document.get("top_channels"), "drift top_channels"))
        with self._lock:
            device = self._device(device_id, now)
            device.last_seen = now
            model = device.models.get(model_name)
            if model is None:
                model = device.models[model_name] = ModelState(model_name)
            changed = model.drift_state != state
            model.drift_state, model.drift_top = state, top
            if changed:
                self._track(device_id, model, now)
        return "drift"

    def _apply_snapshot(self, device_id: str, model_name: str, document: dict, now: float) -> str:
        """A retained snapshot may be older than this monitor: it does not make the device seen now."""
        summary, jpeg = _parse_snapshot(document)
        with self._lock:
            device = self._device(device_id, now)
            model = device.models.get(model_name)
            if model is None:
                model = device.models[model_name] = ModelState(model_name)
            model.snapshot = summary
        self.snapshots.put(device_id, model_name, jpeg)
        return "snapshot"

    def _apply_deploy(self, device_id: str, document: dict, now: float) -> str:
        deploy = _parse_deploy(document)
        with self._lock:
            device = self._device(device_id, now)
            device.last_seen = now
            if deploy["state"] == "failed" and (device.deploy or {}).get("state") != "failed":
                self._since[(device_id, "deploy")] = now
            device.deploy = deploy
        return "deploy"

    def _track(self, device_id: str, model: ModelState, now: float) -> None:
        """Remember when a model's drift or degraded condition began, for `alerts` (lock held)."""
        for kind, active in (("drift", model.drift_state == "drift"), ("degraded", model.degraded)):
            key = (device_id, f"{kind}:{model.name}")
            if active:
                self._since.setdefault(key, now)
            else:
                self._since.pop(key, None)

    def _forget(self, device_id: str) -> str | None:
        self.snapshots.forget(device_id)
        with self._lock:
            gone = self._devices.pop(device_id, None)
            for key in [key for key in self._since if key[0] == device_id]:
                del self._since[key]
        return device_id if gone is not None else None

    # -- reading -------------------------------------------------------------------------------------------------
    def _view(self, device: DeviceState, now: float) -> DeviceState:
        """A copy with staleness applied: an `online` device silent for `stale_after_s` is shown offline (its
        will may be lost, e.g. behind a bridge that went down)."""
        view = device.copy()
        if self.is_stale(device, now):
            view.state, view.online = "offline", False
        return view

    def is_stale(self, device: DeviceState, now: float | None = None) -> bool:
        if self.stale_after_s is None or device.state != "online" or not device.last_seen:
            return False
        return (time.time() if now is None else now) - device.last_seen > self.stale_after_s

    def devices(self) -> list[DeviceState]:
        """Copies of every device, sorted by id."""
        now = time.time()
        with self._lock:
            return [self._view(self._devices[key], now) for key in sorted(self._devices)]

    def device(self, device_id: str) -> DeviceState | None:
        with self._lock:
            device = self._devices.get(device_id)
            return self._view(device, time.time()) if device is not None else None

    def __len__(self) -> int:
        return len(self._devices)

    def snapshot(self) -> dict:
        devices = self.devices()
        counts = {"total": len(devices), "online": 0, "offline": 0, "degraded": 0, "drift": 0}
        for device in devices:
            counts["online" if device.online else "offline"] += 1  # offline: not online (offline, stopped, unknown)
            models = device.models.values()
            counts["degraded"] += any(model.degraded for model in models)
            counts["drift"] += any(model.drift_state == "drift" for model in models)
        with self._lock:
            garbage, unknown = self.garbage, self.unknown_schema
            unannounced, refused = self.unknown, self.refused_devices
        return {"ts": time.time(), "devices": [device.as_dict() for device in devices], "counts": counts,
                "garbage": garbage, "unknown_schema": unknown, "unknown_device": unannounced,
                "refused_devices": refused}

    def alerts(self) -> list[dict]:
        """What needs a person: offline devices (not `stopped`: that was a clean exit), drift, degraded backends,
        failed deployments. `since`: when this monitor saw the condition begin."""
        now = time.time()
        out = []
        with self._lock:
            for device_id in sorted(self._devices):
                device = self._devices[device_id]
                since = self._since
                if device.state == "offline":
                    out.append({"device": device_id, "kind": "offline", "detail": "offline (last will)",
                                "since": since.get((device_id, "state"), device.last_seen)})
                elif self.is_stale(device, now):
                    out.append({"device": device_id, "kind": "offline",
                                "detail": f"no message for {now - device.last_seen:.0f} s",
                                "since": device.last_seen})
                for name, model in device.models.items():
                    if model.drift_state == "drift":
                        top = f" ({', '.join(model.drift_top)})" if model.drift_top else ""
                        out.append({"device": device_id, "kind": "drift", "detail": f"{name}: drift{top}",
                                    "since": since.get((device_id, f"drift:{name}"), now)})
                    if model.degraded:
                        out.append({"device": device_id, "kind": "degraded",
                                    "detail": f"{name}: backend {model.backend}: {model.degraded_reason or 'degraded'}",
                                    "since": since.get((device_id, f"degraded:{name}"), now)})
                if device.deploy is not None and device.deploy.get("state") == "failed":
                    deploy = device.deploy
                    out.append({"device": device_id, "kind": "deploy_failed",
                                "detail": f"deployment {deploy.get('deployment_id')}: {deploy.get('error')}",
                                "since": since.get((device_id, "deploy"), now)})
        return out

    def add_listener(self, callback: Listener) -> None:
        """`callback(device_id, what)` after every applied message, what in status|stats|drift|deploy. Runs on the
        monitor's thread: keep it short."""
        with self._lock:
            self._listeners = [*self._listeners, callback]
