"""`edge-fleet command`: send one signed command to a device and print its answer.

    edge-fleet command DEVICE NAME --control-key fleet.key [--model M] [--allow-downgrade] [--arg KEY=VALUE ...]
                       [--timeout S] [--expires S] [--broker URL]

    edge-fleet command pi-01 reload --control-key fleet.key          # load the configured bundle again
    edge-fleet command pi-01 info --control-key fleet.key            # the device, its models, its stats

The command is signed with the control key for this device alone, with a fresh nonce and an expiry (`--expires`,
default 5 minutes), so a copy captured on the broker is worth nothing elsewhere or later. The answer (on
`<prefix>/<device>/cmd/<name>/result`, matched by `request_id`) is printed as JSON.

Exit status: 0 the device answered ok; 1 it answered not ok (refused, failed); 2 refused before sending (no key,
bad arguments, broker unreachable); 3 no answer within the timeout (the device may be offline).
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from edge_fleet.deploy import DeployError, FleetConnection
from edge_fleet.signer import ControlSigner, SignerError
from edge_runtime.contract import TOPIC_LEVEL, DeviceTopics
from edge_runtime.contract.control import COMMAND_LIFETIME_S

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_NO_ANSWER = 0, 1, 2, 3


class CommandError(Exception):
    """Refused before sending; the message says why."""


def _value(text: str) -> Any:
    """`--arg k=v`: v as JSON when it parses (true, 3, "x"), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def send_command(broker_url: str, device: str, name: str, body: dict[str, Any], *, control_key: Path | None,
                 prefix: str = "edge", timeout_s: float = 30.0, lifetime_s: float = COMMAND_LIFETIME_S,
                 username: str | None = None, password: str | None = None) -> dict | None:
    """Sign and send `name` with `body` to `device`; its result document, or None if none came in time."""
    if not TOPIC_LEVEL.match(device) or not TOPIC_LEVEL.match(name):
        raise CommandError(f"device {device!r} and command {name!r} must be letters, digits, '_', '.', '-'")
    try:
        signer = ControlSigner(control_key)
    except SignerError as exc:
        raise CommandError(str(exc)) from None
    request_id = uuid.uuid4().hex
    payload = signer.sign(f"cmd/{name}", {**body, "request_id": request_id}, prefix=prefix, device=device,
                          lifetime_s=lifetime_s)
    topics = DeviceTopics(prefix, device)
    try:
        connection = FleetConnection(broker_url, username=username, password=password)
        connection.connect()
    except DeployError as exc:
        raise CommandError(str(exc)) from None
    try:
        connection.subscribe([topics.command_result(name)])
        time.sleep(0.2)  # the subscription is in place before the command can be answered
        connection.publish(topics.command(name), payload, retain=False).wait_for_publish(timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                _topic, data, _retain = connection.messages.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            try:
                result = json.loads(data)
            except ValueError:
                continue
            if isinstance(result, dict) and result.get("request_id") == request_id:
                return result
        return None
    finally:
        connection.close()


def main_command(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    for item in args.arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"edge-fleet command: --arg {item!r}: expected KEY=VALUE", file=sys.stderr)
            return EXIT_REFUSED
        body[key] = _value(value)
    if args.model:
        body["model"] = args.model
    if args.allow_downgrade:
        body["allow_downgrade"] = True
    try:
        result = send_command(args.broker, args.device, args.name, body, control_key=args.control_key,
                              prefix=args.prefix, timeout_s=args.timeout, lifetime_s=args.expires)
    except CommandError as exc:
        print(f"edge-fleet command: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if result is None:
        print(f"edge-fleet command: no answer from {args.device} within {args.timeout:g} s", file=sys.stderr)
        return EXIT_NO_ANSWER
    print(json.dumps(result, indent=2))
    return EXIT_OK if result.get("ok") else EXIT_FAILED
