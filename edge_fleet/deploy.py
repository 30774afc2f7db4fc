"""`edge-fleet deploy`: roll a signed bundle out to devices over MQTT (docs/fleet-protocol.md, "Fleet -> device").

    edge-fleet deploy BUNDLE --broker mqtt://host:1883 (--device ID ... | --group NAME) --control-key fleet.key
                      [--canary N] [--signing-key release.pub] [--model NAME] [--timeout SECONDS]
                      [--allow-downgrade] [--expires SECONDS]

The bundle is checked here first (a file that is not a valid bundle is never sent). `--signing-key` is the
*public* key (`.pub` from `edge-convert keygen`): the bundle's signature must verify against it before anything
is sent. Bundles are signed by `edge-convert --sign-key`, never here; the devices verify the signature again
against their own trusted keys, which is what actually protects them.

Every request is signed with the *control* key (`--control-key`, the private `.key`; the devices list its `.pub`
in `security.control_keys`), for one device, with a nonce and an expiry (`--expires`, default 7 days: an offline
device installs when it is back within that time). The request carries the bundle's version and build time, so a
device refuses a rollback before it downloads anything, unless `--allow-downgrade` (signed too) says otherwise.

The bundle goes out once, as retained chunks; then a retained request per device. With `--canary N` the first N
devices get the request first, and the others only once all N reported `installed`; a `failed` or a timeout
halts the rollout and withdraws the canary requests still unanswered (with a signed withdrawal: an unsigned
message cannot cancel a rollout). A device that does not answer within the
timeout (offline) stays *pending*: its request and the chunks stay retained, so it installs the bundle when it
comes back. Retained requests of devices that answered are cleared, and the chunks once no device needs them.

Exit status: 0 every device installed; 1 a device failed or the rollout halted; 2 refused before sending
(not a bundle, bad signature, no such group, broker unreachable); 3 some devices still pending (none failed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import queue
import ssl
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge_fleet.credentials import fleet_credentials
from edge_fleet.signer import ControlSigner, SignerError
from edge_runtime.bundle import BundleError, read_bundle
from edge_runtime.contract import DEPLOY_FINAL, TOPIC_LEVEL, DeployRequest, FleetTopics, parse_broker_url
from edge_runtime.contract.control import DEPLOY_LIFETIME_S
from edge_runtime.mqtt_client import ClientSettings, create_client
from edge_runtime.signing import load_public_key

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_PENDING = 0, 1, 2, 3
DEFAULT_CHUNK_SIZE = 64 * 1024
#: how long retained `status` messages are collected to resolve `--group`
DISCOVERY_S = 1.0
CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 30
DEVICE_ID = TOPIC_LEVEL
FINAL = DEPLOY_FINAL

Progress = Callable[[str, str], None]  # (device, text), e.g. ("pi-01", "receiving 12/40")


class DeployError(Exception):
    """The rollout was refused before anything was sent; the message says why."""


@dataclass
class DeviceOutcome:
    """Where one device stands. `state`: not requested, requested, receiving, verifying, installed, failed,
    pending (no answer in time: its request stays retained) or withdrawn (a halted canary: request cleared)."""

    device: str
    state: str = "not requested"
    received: int = 0
    chunks: int = 0
    error: str | None = None
    status: dict = field(default_factory=dict)  # the last deploy/status message


@dataclass
class DeployResult:
    deployment_id: str
    bundle_sha256: str
    devices: dict[str, DeviceOutcome]
    halted: str | None = None  # why the rollout stopped before every device got the request

    def _with(self, *states: str) -> list[str]:
        return [name for name, outcome in self.devices.items() if outcome.state in states]

    @property
    def installed(self) -> list[str]:
        return self._with("installed")

    @property
    def failed(self) -> list[str]:
        return self._with("failed")

    @property
    def pending(self) -> list[str]:
        return self._with("pending")

    @property
    def exit_code(self) -> int:
        if self.failed or self.halted:
            return EXIT_FAILED
        if self.pending:
            return EXIT_PENDING
        return EXIT_OK


@dataclass(frozen=True)
class BundleBlob:
    """The bundle file's bytes as sent, with what the request says about it."""

    data: bytes
    sha256: str
    name: str
    version: str
    created: str | None = None


def check_bundle(path: Path, signing_key: Path | None) -> BundleBlob:
    """Read and verify the bundle locally (checksums; the signature against `signing_key`, a public key)."""
    keys = None
    if signing_key is not None:
        try:
            keys = [load_public_key(signing_key)]
        except Exception as exc:
            raise DeployError(f"--signing-key {signing_key}: not a public key ({exc}); pass the .pub file from "
                              "`edge-convert keygen`, not the private key") from None
    try:
        bundle = read_bundle(path, trusted_keys=keys, require_signature=keys is not None)
        data = Path(path).read_bytes()
    except (BundleError, OSError) as exc:
        raise DeployError(f"refusing to send {path}: {exc}") from None
    return BundleBlob(data, hashlib.sha256(data).hexdigest(), bundle.manifest.name, bundle.manifest.version,
                      bundle.manifest.created)


def chunk_topic(prefix: str, sha256: str) -> str:
    return FleetTopics(prefix).bundle_chunks(sha256)


def make_request(bundle: BundleBlob, deployment_id: str, prefix: str, chunk_size: int, model: str | None,
                 allow_downgrade: bool = False) -> dict:
    """The `deploy/request` document (the same for every device of a rollout; each device's copy is signed for
    it alone)."""
    chunks = [bundle.data[start:start + chunk_size] for start in range(0, len(bundle.data), chunk_size)]
    request = DeployRequest(
        deployment_id=deployment_id, bundle_sha256=bundle.sha256, size=len(bundle.data), chunk_size=chunk_size,
        chunks=len(chunks), chunk_sha256=[hashlib.sha256(chunk).hexdigest() for chunk in chunks],
        chunk_topic=chunk_topic(prefix, bundle.sha256), model=model, name=bundle.name, version=bundle.version,
        created=bundle.created, allow_downgrade=allow_downgrade, ts=time.time(),
    )
    return request.model_dump()


class FleetConnection:
    """One paho (MQTT v5) client; messages are handed to the calling thread through a queue."""

    def __init__(self, broker_url: str, client_id: str | None = None, username: str | None = None,
                 password: str | None = None):
        try:
            self.broker = parse_broker_url(broker_url)
        except ValueError as exc:
            raise DeployError(str(exc)) from None
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self._connected = queue.Queue(maxsize=1)
        found = fleet_credentials(self.broker, username, password)
        self.client = create_client(ClientSettings(
            self.broker, client_id or f"edge-fleet-deploy-{uuid.uuid4().hex[:12]}", protocol="5",
            username=found.username, password=found.password, ca_file=found.ca_file, cert_file=found.cert_file,
            key_file=found.key_file, keepalive_s=KEEPALIVE_S))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connected.empty():
            self._connected.put_nowait(reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put((message.topic, bytes(message.payload), bool(message.retain)))

    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> None:
        broker = self.broker
        try:
            self.client.connect(broker.host, broker.port, keepalive=KEEPALIVE_S)
        except ssl.SSLError as exc:
            raise DeployError(f"TLS with the broker {broker.url} failed: {exc.reason or exc} (check "
                              "$EDGE_FLEET_CA_FILE, $EDGE_FLEET_CERT_FILE and $EDGE_FLEET_KEY_FILE)") from None
        except OSError as exc:
            raise DeployError(f"cannot connect to the broker {broker.url}: {exc}") from None
        self.client.loop_start()
        try:
            reason = self._connected.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise DeployError(f"the broker {broker.url} did not answer within {timeout:.0f} s") from None
        if reason.is_failure:
            self.close()
            raise DeployError(f"the broker {broker.url} refused the connection: {reason}")

    def subscribe(self, topics: Sequence[str]) -> None:
        self.client.subscribe([(topic, 1) for topic in topics])

    def publish(self, topic: str, payload: bytes, retain: bool = True) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait_published(infos: list[mqtt.MQTTMessageInfo], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    for info in infos:
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise DeployError(f"cannot publish {what}: {mqtt.error_string(info.rc)}")
        info.wait_for_publish(max(deadline - time.monotonic(), 0.0))
        if not info.is_published():
            raise DeployError(f"the broker did not acknowledge {what} within {timeout:.0f} s")


class _Rollout:
    """The running rollout: reads the messages, tracks each device, clears what is no longer needed."""

    def __init__(self, connection: FleetConnection, prefix: str, request: dict, progress: Progress | None,
                 signer: ControlSigner, lifetime_s: float = DEPLOY_LIFETIME_S):
        self.connection = connection
        self.signer = signer
        self.lifetime_s = lifetime_s
        self.prefix = prefix
        self.topics = FleetTopics(prefix)
        self.request = request
        self.progress = progress
        self.statuses: dict[str, dict] = {}  # device -> retained status document
        self.outcomes: dict[str, DeviceOutcome] = {}
        self.cleared: list[mqtt.MQTTMessageInfo] = []  # requests cleared on the way; waited for at the end
        self._lines: dict[str, str] = {}

    def request_topic(self, device: str) -> str:
        return self.topics.deploy_request(device)

    def say(self, device: str, text: str) -> None:
        if self.progress is not None and self._lines.get(device) != text:
            self._lines[device] = text
            self.progress(device, text)

    def pump(self, until: float) -> None:
        """Handle the messages that arrive until `until` (monotonic), or only those waiting if it has passed."""
        while True:
            try:
                topic, payload, _retain = self.connection.messages.get(timeout=max(until - time.monotonic(), 0))
            except queue.Empty:
                return
            self._handle(topic, payload)
            if time.monotonic() >= until and self.connection.messages.empty():
                return

    def _handle(self, topic: str, payload: bytes) -> None:
        parsed = self.topics.parse(topic)
        if parsed is None or not payload:
            return
        device, kind, _ = parsed
        try:
            document = json.loads(payload)
        except ValueError:
            return
        if not isinstance(document, dict):
            return
        if kind == "status":
            self.statuses[device] = document
        elif kind == "deploy" and document.get("deployment_id") == self.request["deployment_id"]:
            self._deploy_status(device, document)

    def _deploy_status(self, device: str, document: dict) -> None:
        outcome = self.outcomes.get(device)
        if outcome is None or outcome.state in FINAL or outcome.state == "withdrawn":
            return
        outcome.status = document
        outcome.state = str(document.get("state"))
        outcome.received = int(document.get("received") or 0)
        outcome.chunks = int(document.get("chunks") or 0)
        outcome.error = document.get("error")
        if outcome.state == "receiving":
            self.say(device, f"receiving {outcome.received}/{outcome.chunks}")
        elif outcome.state == "installed":
            self.say(device, f"installed {document.get('version') or ''} ({document.get('precision')})".strip())
        elif outcome.state == "failed":
            self.say(device, f"failed: {outcome.error}")
        else:
            self.say(device, outcome.state)
        if outcome.state in FINAL:  # answered: a retained request would only be seen (and ignored) again
            self.cleared.append(self.connection.publish(self.request_topic(device), b""))

    def signed(self, device: str, body: dict) -> bytes:
        """`body` in an envelope signed for `device` alone."""
        return self.signer.sign("deploy/request", body, prefix=self.prefix, device=device, lifetime_s=self.lifetime_s)

    def send_requests(self, devices: Sequence[str]) -> None:
        infos = [self.connection.publish(self.request_topic(device), self.signed(device, self.request))
                 for device in devices]
        _wait_published(infos, CONNECT_TIMEOUT_S, "the deploy requests")
        for device in devices:
            self.outcomes[device].state = "requested"
            offline = self.statuses.get(device, {}).get("state") not in (None, "online")
            self.say(device, "requested (device offline: it gets the bundle when it is back)" if offline
                     else "requested")

    def wait(self, devices: Sequence[str], timeout_s: float) -> None:
        """Until every one of `devices` answered installed or failed, or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while any(self.outcomes[device].state not in FINAL for device in devices):
            if time.monotonic() >= deadline:
                break
            self.pump(min(deadline, time.monotonic() + 0.2))
        for device in devices:
            outcome = self.outcomes[device]
            if outcome.state not in FINAL:
                outcome.state = "pending"
                self.say(device, f"pending: no answer within {timeout_s:g} s (the request stays retained)")


def deploy_bundle(
    bundle_path: Path,
    broker_url: str,
    devices: list[str] | None = None,
    group: str | None = None,
    canary: int = 0,
    signing_key: Path | None = None,
    model: str | None = None,
    timeout_s: float = 300.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    prefix: str = "edge",
    progress: Progress | None = None,
    username: str | None = None,
    password: str | None = None,
    control_key: Path | ControlSigner | None = None,
    allow_downgrade: bool = False,
    lifetime_s: float = DEPLOY_LIFETIME_S,
) -> DeployResult:
    """Roll `bundle_path` out (see the module docstring); DeployError if refused before anything was sent.

    `timeout_s` applies to each phase: the canaries, then the rest. Devices come from `devices` and/or the
    retained statuses whose `group` is `group`.
    """
    if chunk_size <= 0:
        raise DeployError(f"chunk size must be positive, got {chunk_size}")
    if canary < 0:
        raise DeployError(f"--canary must be 0 or more, got {canary}")
    for device in devices or []:
        if not DEVICE_ID.match(device):
            raise DeployError(f"{device!r} is not a device id (letters, digits, '_', '.', '-')")
    if not devices and not group:
        raise DeployError("say which devices: --device ID (repeatable) and/or --group NAME")
    try:
        signer = control_key if isinstance(control_key, ControlSigner) else ControlSigner(control_key)
    except SignerError as exc:
        raise DeployError(str(exc)) from None
    bundle = check_bundle(Path(bundle_path), signing_key)
    deployment_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    request = make_request(bundle, deployment_id, prefix, chunk_size, model, allow_downgrade)

    connection = FleetConnection(broker_url, username=username, password=password)
    connection.connect()
    try:
        rollout = _Rollout(connection, prefix, request, progress, signer, lifetime_s)
        connection.subscribe([rollout.topics.status_filter, rollout.topics.deploy_status_filter])
        rollout.pump(time.monotonic() + (DISCOVERY_S if group else 0.2))
        targets = list(dict.fromkeys(devices or []))
        if group:
            members = sorted(device for device, status in rollout.statuses.items() if status.get("group") == group)
            if not members:
                raise DeployError(f"no device names group {group!r} in its retained status")
            targets += [device for device in members if device not in targets]
        rollout.outcomes = {device: DeviceOutcome(device, chunks=request["chunks"]) for device in targets}

        data, topic = bundle.data, request["chunk_topic"]
        infos = [connection.publish(FleetTopics.chunk(topic, index), data[start:start + chunk_size])
                 for index, start in enumerate(range(0, len(data), chunk_size))]
        _wait_published(infos, max(timeout_s, 30.0), f"the {len(infos)} chunks")

        result = DeployResult(deployment_id, bundle.sha256, rollout.outcomes)
        phases = [targets[:canary], targets[canary:]] if 0 < canary < len(targets) else [targets]
        for number, phase in enumerate(phases):
            rollout.send_requests(phase)
            rollout.wait(phase, timeout_s)
            if number == 0 and len(phases) > 1:
                unhappy = [device for device in phase if rollout.outcomes[device].state != "installed"]
                if unhappy:
                    result.halted = (f"canary {', '.join(unhappy)} did not install: the other "
                                     f"{len(phases[1])} device(s) were not asked")
                    _withdraw(rollout, unhappy)
                    break
        if not result.pending:  # nobody will fetch the chunks any more
            rollout.cleared += [connection.publish(FleetTopics.chunk(topic, index), b"")
                                for index in range(request["chunks"])]
        _wait_published(rollout.cleared, CONNECT_TIMEOUT_S, "the cleared requests and chunks")
        return result
    finally:
        connection.close()


def _withdraw(rollout: _Rollout, devices: list[str]) -> None:
    """A halted canary: a device that has not answered must not install the bundle later."""
    infos = []
    for device in devices:
        outcome = rollout.outcomes[device]
        if outcome.state == "pending":
            outcome.state = "withdrawn"
            withdrawal = rollout.signed(device, {"withdraw": rollout.request["deployment_id"]})
            infos.append(rollout.connection.publish(rollout.request_topic(device), withdrawal))
            rollout.say(device, "withdrawn: the rollout halted")
    _wait_published(infos, CONNECT_TIMEOUT_S, "the withdrawn requests")


# -- command line -------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `deploy` arguments, for the `edge-fleet` parser (main_deploy reads these names)."""
    parser.add_argument("bundle", type=Path, help="the bundle made (and signed) by edge-convert")
    parser.add_argument("--broker", required=True, help="mqtt://host:1883 or mqtts://host:8883")
    parser.add_argument("--device", action="append", help="a device id (repeatable)")
    parser.add_argument("--group", help="every device whose status names this group")
    parser.add_argument("--canary", type=int, default=0, help="deploy to this many devices first; go on only if "
                        "they all installed")
    parser.add_argument("--signing-key", type=Path, help="PUBLIC key (.pub): the bundle's signature must verify "
                        "against it before it is sent")
    parser.add_argument("--model", help="which of the device's models to replace (default: its only one)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait per phase (default 300)")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help=argparse.SUPPRESS)
    parser.add_argument("--control-key", type=Path, help="PRIVATE control key (.key) that signs the requests "
                        "(default: $EDGE_FLEET_CONTROL_KEY)")
    parser.add_argument("--allow-downgrade", action="store_true", help="let devices install a bundle older than "
                        "the one they run")
    parser.add_argument("--expires", type=float, default=DEPLOY_LIFETIME_S, help="seconds the requests stay valid")
    parser.add_argument("--prefix", default="edge", help="topic prefix (default edge)")


def main_deploy(args: argparse.Namespace) -> int:
    """`edge-fleet deploy`: one progress line per device and change, a summary, the exit status."""

    def show(device: str, text: str) -> None:
        print(f"{device}: {text}", flush=True)

    try:
        result = deploy_bundle(
            Path(args.bundle), args.broker, devices=args.device, group=args.group, canary=args.canary or 0,
            signing_key=Path(args.signing_key) if args.signing_key else None, model=args.model,
            timeout_s=args.timeout if args.timeout is not None else 300.0,
            chunk_size=getattr(args, "chunk_size", None) or DEFAULT_CHUNK_SIZE,
            prefix=getattr(args, "prefix", None) or "edge", progress=show,
            username=getattr(args, "username", None), password=getattr(args, "password", None),
            control_key=getattr(args, "control_key", None),
            allow_downgrade=bool(getattr(args, "allow_downgrade", False)),
            lifetime_s=getattr(args, "expires", None) or DEPLOY_LIFETIME_S,
        )
    except DeployError as exc:
        print(f"edge-fleet deploy: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    counts = {state: sum(1 for o in result.devices.values() if o.state == state)
              for state in ("installed", "failed", "pending", "withdrawn", "not requested")}
    print(f"deployment {result.deployment_id}: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n))
    if result.halted:
        print(f"halted: {result.halted}")
    if result.pending:
        print(f"pending ({', '.join(result.pending)}): their requests stay retained; they install when they connect")
    return result.exit_code
