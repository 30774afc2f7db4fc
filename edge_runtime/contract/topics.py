"""The topic layout of a fleet, spelled out once (docs/fleet-protocol.md has the table, checked by a test).

    <prefix>/<device>/status                retained; online | offline (the last will) | stopped
    <prefix>/<device>/stats                 periodic health
    <prefix>/<device>/errors                rejected inputs and failures, rate-limited
    <prefix>/<device>/predictions/<model>   one message per window
    <prefix>/<device>/drift/<model>         drift reports
    <prefix>/<device>/snapshot/<model>      retained; the latest JPEG a detector took, detections drawn
    <prefix>/<device>/cmd/<name>            commands -> <prefix>/<device>/cmd/<name>/result
    <prefix>/<device>/deploy/request        retained; a bundle to fetch -> <prefix>/<device>/deploy/status
    <prefix>/bundles/<sha256>/chunk/<index> retained; the chunks of a deployed bundle

`DeviceTopics` is what one device publishes and subscribes; `FleetTopics` is the fleet's view of every device
under one prefix: the subscription filters of a monitor, the topics `edge-fleet deploy` publishes, and
`parse`/`kind_of`, the monitor's fast path from a topic back to (device, kind).
"""

from __future__ import annotations

import re
from typing import Literal

#: a device id or model name becomes one topic level: no `/`, `+`, `#`, spaces, and not empty
TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_PREFIX = "edge"
#: the kinds of device message a fleet monitor reads
FleetKind = Literal["status", "stats", "drift", "deploy", "snapshot"]
FLEET_KINDS: tuple[FleetKind, ...] = ("status", "stats", "drift", "deploy", "snapshot")


class DeviceTopics:
    """Every topic of one device (`<prefix>/<device>/...`)."""

    __slots__ = ("prefix", "device_id", "base", "status", "stats", "errors", "commands", "deploy_request",
                 "deploy_status")

    def __init__(self, prefix: str, device_id: str):
        self.prefix = prefix
        self.device_id = device_id
        self.base = f"{prefix}/{device_id}"
        self.status = f"{self.base}/status"
        self.stats = f"{self.base}/stats"
        self.errors = f"{self.base}/errors"
        self.commands = f"{self.base}/cmd/+"  # the filter the daemon subscribes to
        self.deploy_request = f"{self.base}/deploy/request"
        self.deploy_status = f"{self.base}/deploy/status"

    def predictions(self, model: str) -> str:
        return f"{self.base}/predictions/{model}"

    def drift(self, model: str) -> str:
        return f"{self.base}/drift/{model}"

    def snapshot(self, model: str) -> str:
        return f"{self.base}/snapshot/{model}"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def command_result(self, name: str) -> str:
        return f"{self.base}/cmd/{name}/result"

    @staticmethod
    def command_name(topic: str) -> str:
        """The command a `<prefix>/<device>/cmd/<name>` topic asks for."""
        return topic.rsplit("/", 1)[-1]


class FleetTopics:
    """Every device under one prefix, seen from the fleet tool."""

    __slots__ = ("prefix", "_lead")

    def __init__(self, prefix: str = DEFAULT_PREFIX):
        self.prefix = prefix
        self._lead = prefix + "/"

    def device(self, device_id: str) -> DeviceTopics:
        return DeviceTopics(self.prefix, device_id)

    # -- what a monitor subscribes to --------------------------------------------------------------------------
    @property
    def status_filter(self) -> str:
        return f"{self.prefix}/+/status"

    @property
    def stats_filter(self) -> str:
        return f"{self.prefix}/+/stats"

    @property
    def drift_filter(self) -> str:
        return f"{self.prefix}/+/drift/+"

    @property
    def deploy_status_filter(self) -> str:
        return f"{self.prefix}/+/deploy/status"

    @property
    def snapshot_filter(self) -> str:
        return f"{self.prefix}/+/snapshot/+"

    # -- what `edge-fleet deploy` publishes ----------------------------------------------------------------------
    def deploy_request(self, device_id: str) -> str:
        return f"{self.prefix}/{device_id}/deploy/request"

    def bundle_chunks(self, bundle_sha256: str) -> str:
        """The `chunk_topic` of a deploy request: chunk `i` is published on `<this>/<i>`."""
        return f"{self.prefix}/bundles/{bundle_sha256}/chunk"

    @staticmethod
    def chunk(chunk_topic: str, index: int | str) -> str:
        return f"{chunk_topic}/{index}"

    # -- from a topic back to what it is (the monitor's fast path) ---------------------------------------------
    def parse(self, topic: str) -> tuple[str, FleetKind, str | None] | None:
        """(device id, kind, model or None) of a status, stats, drift, snapshot or deploy-status topic under this
        prefix; None for any other topic."""
        if not topic.startswith(self._lead):
            return None
        parts = topic[len(self._lead):].split("/")
        count = len(parts)
        if count < 2 or count > 3 or not parts[0]:
            return None
        kind = parts[1]
        if count == 2:
            if kind == "stats" or kind == "status":
                return parts[0], kind, None
            return None
        if kind == "deploy" and parts[2] == "status":
            return parts[0], "deploy", None
        if kind == "drift" and parts[2]:
            return parts[0], "drift", parts[2]
        if kind == "snapshot" and parts[2]:
            return parts[0], "snapshot", parts[2]
        return None


def kind_of(topic: str) -> FleetKind | None:
    """status | stats | drift | deploy | snapshot from the topic's shape alone (cheaper than `FleetTopics.parse`, for
    counting what a monitor receives)."""
    if topic.endswith("/stats"):
        return "stats"
    if topic.endswith("/status"):
        return "deploy" if topic.endswith("/deploy/status") else "status"
    if "/drift/" in topic:
        return "drift"
    if "/snapshot/" in topic:
        return "snapshot"
    return None
