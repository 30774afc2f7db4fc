"""Every message of the fleet protocol in one table: topic, direction, QoS, retained, document and its schema.

docs/fleet-protocol.md carries the same table for people; tests/edge_fleet/test_fleet_protocol_doc.py checks that
the two list the same topics with the same QoS, retain flag and schema version, so neither changes alone. Topics
here are made by `DeviceTopics` and `FleetTopics` themselves, with the default prefix and placeholders in angle
brackets, as the doc writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge_runtime.contract import documents as d
from edge_runtime.contract.topics import DEFAULT_PREFIX, DeviceTopics, FleetTopics

Direction = Literal["device -> fleet", "fleet -> device"]


@dataclass(frozen=True)
class Message:
    topic: str  # with the default prefix and <placeholders>
    direction: Direction
    qos: int  # the default; the daemon's `publish:` config may change the QoS of predictions, stats, errors, drift
    retained: bool
    document: str  # what the payload is (a TypedDict or model of contract.documents, or raw bytes)
    schema: int


_device = DeviceTopics(DEFAULT_PREFIX, "<device>")
_fleet = FleetTopics(DEFAULT_PREFIX)

MESSAGES: tuple[Message, ...] = (
    Message(_device.status, "device -> fleet", 1, True, "StatusDocument", d.STATUS_SCHEMA),
    Message(_device.stats, "device -> fleet", 0, False, "StatsDocument", d.STATS_SCHEMA),
    Message(_device.drift("<model>"), "device -> fleet", 1, False, "DriftDocument", d.DRIFT_SCHEMA),
    Message(_device.predictions("<model>"), "device -> fleet", 1, False, "PredictionDocument", d.PREDICTION_SCHEMA),
    Message(_device.snapshot("<model>"), "device -> fleet", 1, True, "SnapshotDocument", d.SNAPSHOT_SCHEMA),
    Message(_device.errors, "device -> fleet", 0, False, "ErrorDocument", d.ERROR_SCHEMA),
    Message(_device.command_result("<name>"), "device -> fleet", 1, False, "CommandResult", d.COMMAND_RESULT_SCHEMA),
    Message(_device.deploy_status, "device -> fleet", 1, False, "DeployStatusDocument", d.DEPLOY_STATUS_SCHEMA),
    Message(_device.command("<name>"), "fleet -> device", 1, False, "CommandRequest", d.COMMAND_REQUEST_SCHEMA),
    Message(_fleet.chunk(_fleet.bundle_chunks("<sha256>"), "<index>"), "fleet -> device", 1, True, "bytes",
            d.BUNDLE_CHUNK_SCHEMA),
    Message(_fleet.deploy_request("<device>"), "fleet -> device", 1, True, "DeployRequest", d.DEPLOY_REQUEST_SCHEMA),
)
