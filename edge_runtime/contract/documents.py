"""Every document the daemon and the fleet exchange, with its schema version, spelled out once.

The daemon and the simulator build their documents with the builders here, and the fleet reads them with the
field names here, so the two sides cannot drift apart. Only the status document carries its `schema` on the wire
(a monitor must know whether it understands a retained status that may be days old); the other versions are
documented here and in docs/fleet-protocol.md, and one goes up when a key changes meaning or disappears (adding a
key does not need a new version: readers ignore keys they do not know).

The hot documents (predictions, stats) are TypedDicts, not pydantic models: they are built and read thousands
of times a second (the monitor validates stats by hand, see edge_fleet/state.py). The deploy request, read once
per rollout from an untrusted broker, is a pydantic model.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: schema versions, one per document (docs/fleet-protocol.md, column "schema")
STATUS_SCHEMA = 1
STATS_SCHEMA = 1
PREDICTION_SCHEMA = 1
DRIFT_SCHEMA = 1
SNAPSHOT_SCHEMA = 1
ERROR_SCHEMA = 1
#: 2: a request is a signed envelope (contract/control.py) whose claims carry the arguments; 1 was plain JSON
COMMAND_REQUEST_SCHEMA = 2
COMMAND_RESULT_SCHEMA = 1
#: 2: the request is the `body` of a signed envelope (contract/control.py); 1 was the plain document
DEPLOY_REQUEST_SCHEMA = 2
DEPLOY_STATUS_SCHEMA = 1
BUNDLE_CHUNK_SCHEMA = 1  # raw bytes of the bundle file; the version covers the chunking rules

DeviceState = Literal["online", "offline", "stopped"]
DEVICE_STATES: tuple[DeviceState, ...] = ("online", "offline", "stopped")
DeployState = Literal["receiving", "verifying", "installed", "failed"]
DEPLOY_STATES: tuple[DeployState, ...] = ("receiving", "verifying", "installed", "failed")
#: deploy states after which the device does nothing more for that deployment
DEPLOY_FINAL: tuple[DeployState, ...] = ("installed", "failed")
COMMANDS = ("info", "reload")


# -- status: <prefix>/<device>/status, retained -------------------------------------------------------------------
class BackendDescription(TypedDict):
    active: str | None
    degraded: bool
    reason: str | None


class ModelDescription(TypedDict, total=False):
    """One running model, as the status document and the `info` command describe it."""

    name: str
    version: str
    model_sha256: str | None
    precision: str
    backend: BackendDescription
    drift: str


class StatusDocument(TypedDict, total=False):
    state: DeviceState
    schema: int
    device_id: str
    group: str | None
    version: str
    ts: float
    host: str
    board: str
    board_detection: dict[str, Any]  # name, named (in the config) or detected, evidence, notes
    device: dict[str, Any]  # temperature_c, throttling (None where the board exposes none)
    started: float
    models: list[ModelDescription]
    security: dict[str, Any]  # bundle_signatures, control, unsigned_info, warnings (a device running unsigned says so)


def status_document(state: DeviceState, *, device_id: str, group: str | None, version: str, board: str,
                    models: list[Any], host: str | None = None, started: float | None = None,
                    ts: float | None = None, **extra: Any) -> StatusDocument:
    """A full status (`online`, `stopped`); `host` and `started` are left out when None (the simulator)."""
    document: dict[str, Any] = {"state": state, "schema": STATUS_SCHEMA, "device_id": device_id, "group": group,
                                "version": version, "ts": time.time() if ts is None else ts}
    if host is not None:
        document["host"] = host
    document["board"] = board
    if started is not None:
        document["started"] = started
    document.update(extra)
    document["models"] = models
    return document  # type: ignore[return-value]


def offline_will(device_id: str, group: str | None) -> StatusDocument:
    """The last will: the group is in it too, so `edge-fleet deploy --group` finds a device that is offline."""
    return {"state": "offline", "schema": STATUS_SCHEMA, "device_id": device_id, "group": group}


# -- stats: <prefix>/<device>/stats -------------------------------------------------------------------------------
class ModelStatsDocument(TypedDict, total=False):
    throughput_per_s: float
    latency_ms: dict[str, float]  # p50, p95, p99
    queue_depth: int
    invalid: int
    dropped: int
    backend: str | None
    degraded: bool
    degraded_reason: str | None
    source: str
    source_finished: bool | None
    source_health: dict[str, Any]  # camera / microphone: state, connects, attempts, last_error, frames or overruns
    detections: dict[str, Any]  # detectors: frames_with_detections, by_label, snapshots
    drift: dict[str, Any]  # state, top_channels (and reasons)


class StatsDocument(TypedDict, total=False):
    ts: float
    device_id: str
    interval_s: float
    uptime_s: float
    models: dict[str, ModelStatsDocument]
    device: dict[str, Any]  # cpu_percent, load_1m, temperature_c, throttling, rss_mb, memory_budget_mb
    mqtt: dict[str, Any]
    errors_suppressed: int
    control: dict[str, Any]  # accepted, refused {reason: count}, dropped_requests, dropped_chunks


# -- predictions: <prefix>/<device>/predictions/<model> (built by the model worker) --------------------------------
#: `seq` counts per model and survives restarts (what a consumer de-duplicates and counts losses by); a classifier
#: says `label`, `class` and `score`, a detector `detections` (`[{"label", "score", "box": [x1, y1, x2, y2]}]`, box
#: in the source frame's pixels, best first, `[]` when nothing was found), any other model `values`; functional
#: syntax because `class` is a keyword
PredictionDocument = TypedDict("PredictionDocument", {
    "seq": int, "ts": float, "model": str, "label": str, "class": int, "score": float, "values": list[float],
    "detections": list[dict[str, Any]],
    # a regression output with a threshold in the card (`output: {kind: regression, threshold: 0.5}`): true when a
    # value reaches it, e.g. speech / no speech for a voice-activity model
    "decision": bool,
    "latency_ms": float,
}, total=False)


# -- drift: <prefix>/<device>/drift/<model> (built by the drift tracker) --------------------------------------------
class DriftDocument(TypedDict, total=False):
    ts: float
    model: str
    state: str  # ok | warning | drift
    window: dict[str, Any]
    channels: dict[str, Any]
    outputs: dict[str, Any]
    top_channels: list[str]
    missing_share: float
    reasons: list[str]


# -- snapshots: <prefix>/<device>/snapshot/<model>, retained (built by edge_runtime/snapshot.py) ------------------
class SnapshotDocument(TypedDict, total=False):
    """The latest frame a detector took a snapshot of: `jpeg` is the base64 JPEG (`width` x `height`, at most the
    model's `max_bytes`) with every detection drawn; boxes in `detections` are in the source `frame`'s pixels;
    `trigger` is the detection that asked for it; `seq` is the prediction's."""

    ts: float
    model: str
    seq: int
    trigger: dict[str, Any]
    detections: list[dict[str, Any]]
    frame: dict[str, int]  # width, height of the source frame
    width: int
    height: int
    bytes: int
    jpeg: str


# -- errors: <prefix>/<device>/errors -----------------------------------------------------------------------------
class ErrorDocument(TypedDict, total=False):
    ts: float
    device_id: str
    reason: str
    detail: str
    model: str
    source: str
    suppressed_before: int  # messages the rate limit held back since the last one


def error_document(device_id: str, reason: str, detail: str, *, model: str | None = None,
                   source: str | None = None, suppressed_before: int = 0) -> ErrorDocument:
    document: ErrorDocument = {"ts": time.time(), "device_id": device_id, "reason": reason, "detail": detail}
    if model:
        document["model"] = model
    if source:
        document["source"] = source
    if suppressed_before:
        document["suppressed_before"] = suppressed_before
    return document


# -- commands: <prefix>/<device>/cmd/<name> -> .../cmd/<name>/result ----------------------------------------------
class CommandRequest(TypedDict, total=False):
    """The `body` of a command's signed envelope (contract/control.py)."""

    request_id: Any  # echoed in the result
    model: str  # reload: which model (default: the only one)
    allow_downgrade: bool  # reload: accept a configured bundle older than what the slot ran


class CommandResult(TypedDict, total=False):
    ok: bool
    error: str
    refused: str  # a request that was not accepted: the reason (contract/control.py), e.g. unsigned, replay
    request_id: Any


def parse_command_request(payload: bytes) -> dict[str, Any]:
    """The request object (an empty payload is `{}`); ValueError if it is not a JSON object."""
    request = json.loads(payload) if payload.strip() else {}
    if not isinstance(request, dict):
        raise ValueError("the command payload must be a JSON object")
    return request


def command_result(request: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """`result` answering `request`: its `request_id`, if it had one, is echoed."""
    if "request_id" in request:
        result["request_id"] = request["request_id"]
    return result


# -- deployments: <prefix>/<device>/deploy/request -> .../deploy/status -------------------------------------------
SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: the largest chunk any device accepts (a device's `deploy.max_chunk_bytes` may be lower)
MAX_CHUNK_SIZE = 4 * 1024 * 1024


class DeployRequest(BaseModel):
    """The `body` of the signed envelope on `<prefix>/<device>/deploy/request`; unknown keys are ignored so a
    newer fleet tool can add some. `version` and `created` are the bundle manifest's, so a device refuses a
    rollback before it downloads anything (and again from the manifest itself)."""

    model_config = ConfigDict(extra="ignore")

    deployment_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    bundle_sha256: str = Field(pattern=SHA256.pattern)
    size: int = Field(gt=0)
    chunk_size: int = Field(gt=0, le=MAX_CHUNK_SIZE)
    chunks: int = Field(gt=0)
    chunk_sha256: list[str]
    chunk_topic: str = Field(min_length=1, max_length=512)
    model: str | None = None
    name: str | None = None
    version: str | None = Field(None, max_length=128)
    created: str | None = Field(None, max_length=64)
    allow_downgrade: bool = False
    ts: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DeployRequest:
        expected = -(-self.size // self.chunk_size)
        if self.chunks != expected:
            raise ValueError(f"{self.size} bytes in chunks of {self.chunk_size} make {expected} chunks, "
                             f"not {self.chunks}")
        if len(self.chunk_sha256) != self.chunks:
            raise ValueError(f"{len(self.chunk_sha256)} chunk_sha256 entries for {self.chunks} chunks")
        if not all(SHA256.match(digest) for digest in self.chunk_sha256):
            raise ValueError("every chunk_sha256 entry must be 64 lowercase hex digits")
        if "+" in self.chunk_topic or "#" in self.chunk_topic or self.chunk_topic.endswith("/"):
            raise ValueError(f"chunk_topic {self.chunk_topic!r} must be a topic name without wildcards")
        return self


class DeployStatusDocument(TypedDict, total=False):
    deployment_id: str | None  # None: a request too broken to have one
    device_id: str
    state: DeployState
    received: int
    chunks: int
    model: str | None
    sha256: str
    error: str | None
    ts: float
    # once a transfer started
    resumed: int
    downloaded: int
    duplicates: int
    bad_chunks: int
    # `installed`
    version: str
    model_sha256: str | None
    precision: str
    signature: str


def deploy_status(deployment_id: str | None, device_id: str, state: DeployState, *, received: int = 0,
                  chunks: int | None = None, model: str | None = None, sha256: str | None = None,
                  error: str | None = None, **extra: Any) -> DeployStatusDocument:
    """A deploy status in the order of docs/fleet-protocol.md; `extra` adds the transfer counters and, for
    `installed`, what was installed."""
    document: dict[str, Any] = {"deployment_id": deployment_id, "device_id": device_id, "state": state,
                                "received": received, "chunks": chunks, "model": model, "sha256": sha256,
                                "error": error, "ts": time.time()}
    document.update(extra)
    return document  # type: ignore[return-value]


def deploy_refused(deployment_id: str | None, device_id: str, error: str) -> DeployStatusDocument:
    """`failed` for a request that is not a valid request (no transfer, maybe not even a deployment id)."""
    return {"deployment_id": deployment_id, "state": "failed", "error": error, "device_id": device_id,
            "ts": time.time()}
