"""The signed control envelope: how a command or a deploy request proves who sent it, for whom and until when.

Why: the broker is shared. Anyone who can publish on it (a hostile or stolen device, a leaked password, an open
anonymous listener) could otherwise make a device reload a file of its choosing or install an old bundle. Broker
ACLs are the first wall; this is the second, and it holds when the first one is misconfigured.

On the wire (`<prefix>/<device>/cmd/<name>` and `<prefix>/<device>/deploy/request`, schema 2)::

    {"schema": 2,
     "claims": "<JSON text of the claims, exactly the bytes that were signed>",
     "signature": {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64>"}}

The claims are signed as the exact text they are sent in (no canonical JSON to agree on)::

    {"action": "cmd/reload" | "cmd/info" | "deploy/request",
     "prefix": "edge", "device": "pi-01" | null, "group": "lab" | null,
     "nonce": "<16-64 hex digits>", "issued": <unix seconds>, "expires": <unix seconds>,
     "body": {... the command's arguments, or the DeployRequest ...}}

A device accepts an envelope only when the signature verifies against one of its `security.control_keys`, the
action is the topic it arrived on, `device` is its id or `group` its group, `prefix` its topic prefix, `issued`
is not in the future (beyond a clock skew), `expires` has not passed, the lifetime is within its limit, and the
nonce was never accepted before (the device remembers nonces until they expire). Which of these failed is counted
in the device's stats (`control.refused.<reason>`).

This module only shapes and parses the envelope; signing and verifying are `edge_runtime.signing`'s (the
contract imports nothing but the standard library and pydantic).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONTROL_SCHEMA = 2
#: an envelope larger than this is refused before it is parsed (a deploy request of 256 MiB in 64 KiB chunks is
#: about 300 KB of claims)
MAX_ENVELOPE_BYTES = 1_048_576
NONCE = re.compile(r"^[0-9a-f]{16,64}$")
#: what a command is valid for by default (a human waits for the answer)
COMMAND_LIFETIME_S = 300.0
#: what a deploy request is valid for by default: an offline device installs when it is back, within this time
DEPLOY_LIFETIME_S = 7 * 24 * 3600.0


class EnvelopeError(ValueError):
    """A payload that is not a well-formed envelope; `reason` is `unsigned` (a plain JSON request, the schema 1
    form) or `malformed`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ControlClaims(BaseModel):
    """What the sender signs (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(pattern=r"^(cmd/[A-Za-z0-9_.-]{1,64}|deploy/request)$")
    prefix: str = Field(min_length=1, max_length=256)
    device: str | None = Field(None, max_length=256)
    group: str | None = Field(None, max_length=256)
    nonce: str = Field(pattern=NONCE.pattern)
    issued: float
    expires: float
    body: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _target_and_time(self) -> ControlClaims:
        if (self.device is None) == (self.group is None):
            raise ValueError("name exactly one of device or group")
        if not self.expires > self.issued:
            raise ValueError("expires must be after issued")
        return self


def new_claims(action: str, body: Mapping[str, Any], *, prefix: str, device: str | None = None,
               group: str | None = None, lifetime_s: float = COMMAND_LIFETIME_S,
               now: float | None = None) -> ControlClaims:
    """Claims with a fresh random nonce, issued now, expiring after `lifetime_s`."""
    issued = time.time() if now is None else now
    return ControlClaims(action=action, prefix=prefix, device=device, group=group, nonce=secrets.token_hex(16),
                         issued=issued, expires=issued + lifetime_s, body=dict(body))


def seal(claims: ControlClaims, sign: Callable[[bytes], dict[str, str]]) -> bytes:
    """The envelope's bytes; `sign` is `lambda data: signing.sign_bytes(data, private_key)`."""
    text = json.dumps(claims.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return json.dumps({"schema": CONTROL_SCHEMA, "claims": text, "signature": sign(text.encode())}).encode()


def unseal(payload: bytes, max_bytes: int = MAX_ENVELOPE_BYTES) -> tuple[bytes, dict[str, Any]]:
    """(the signed claims bytes, the signature object) of an envelope, not yet verified; EnvelopeError if the
    payload is not one. Nothing in the claims is looked at before the signature is checked."""
    if len(payload) > max_bytes:
        raise EnvelopeError("malformed", f"the request is {len(payload)} bytes, the limit is {max_bytes}")
    try:
        document = json.loads(payload) if payload.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise EnvelopeError("malformed", f"not JSON ({str(exc)[:120]})") from None
    if not isinstance(document, dict):
        raise EnvelopeError("malformed", "the request must be a JSON object")
    if "claims" not in document and "signature" not in document:
        raise EnvelopeError("unsigned", "the request is not signed (schema 2 needs a signed envelope: "
                                        "edge-fleet command / edge-fleet deploy --control-key)")
    claims, signature = document.get("claims"), document.get("signature")
    if document.get("schema") != CONTROL_SCHEMA or not isinstance(claims, str) or not isinstance(signature, dict):
        raise EnvelopeError("malformed", f"an envelope needs schema {CONTROL_SCHEMA}, a string 'claims' and an "
                                         "object 'signature'")
    return claims.encode(), signature


def parse_claims(data: bytes) -> ControlClaims:
    """The claims of an envelope whose signature verified; EnvelopeError('malformed') if they do not validate."""
    try:
        return ControlClaims.model_validate_json(data)
    except ValidationError as exc:
        reason = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'claims'}: {e['msg']}" for e in exc.errors())
        raise EnvelopeError("malformed", f"bad claims: {reason}") from None
