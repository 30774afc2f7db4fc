"""The wire contract between the edge-runtime daemon and the edge-fleet tool: topics, documents with their schema
versions, and the broker URL parser.

Everything that speaks MQTT (the daemon, its deploy receiver and commands, the fleet monitor and state, the
simulator, `edge-fleet deploy`) takes topics and documents from here alone, so they cannot drift apart; the table
in docs/fleet-protocol.md is checked against `catalog.MESSAGES` by a test. This package imports only the standard
library and pydantic: a bare device install and the fleet tool both import it. Fleets in the field depend on the
wire format: a change here must keep the same topics and keys, or bump the document's schema version.
"""

from edge_runtime.contract.broker import BrokerAddress, BrokerUrlError, parse_broker_url
from edge_runtime.contract.catalog import MESSAGES, Message
from edge_runtime.contract.control import (
    CONTROL_SCHEMA,
    ControlClaims,
    EnvelopeError,
    new_claims,
    parse_claims,
    seal,
    unseal,
)
from edge_runtime.contract.documents import (
    COMMANDS,
    DEPLOY_FINAL,
    DEPLOY_STATES,
    DEVICE_STATES,
    STATUS_SCHEMA,
    CommandRequest,
    CommandResult,
    DeployRequest,
    DeployStatusDocument,
    DriftDocument,
    ErrorDocument,
    ModelDescription,
    PredictionDocument,
    SnapshotDocument,
    StatsDocument,
    StatusDocument,
    command_result,
    deploy_refused,
    deploy_status,
    error_document,
    offline_will,
    parse_command_request,
    status_document,
)
from edge_runtime.contract.topics import FLEET_KINDS, TOPIC_LEVEL, DeviceTopics, FleetTopics, kind_of

__all__ = [
    "COMMANDS", "CONTROL_SCHEMA", "ControlClaims", "EnvelopeError", "new_claims", "parse_claims", "seal", "unseal",
    "DEPLOY_FINAL", "DEPLOY_STATES", "DEVICE_STATES", "FLEET_KINDS", "MESSAGES", "STATUS_SCHEMA",
    "TOPIC_LEVEL", "BrokerAddress", "BrokerUrlError", "CommandRequest", "CommandResult", "DeployRequest",
    "DeployStatusDocument", "DeviceTopics", "DriftDocument", "ErrorDocument", "FleetTopics", "Message",
    "ModelDescription", "PredictionDocument", "SnapshotDocument", "StatsDocument", "StatusDocument",
    "command_result", "deploy_refused",
    "deploy_status", "error_document", "kind_of", "offline_will", "parse_broker_url", "parse_command_request",
    "status_document",
]
