"""The fleet side of authenticated control: sign a command or a deploy request with a control key.

A device accepts commands and deploy requests only inside an envelope signed by one of its
`security.control_keys` (the format is `edge_runtime.contract.control`; docs/security.md says why). The private
key comes from `--control-key KEY` or `$EDGE_FLEET_CONTROL_KEY` (a `.key` file from `edge-convert keygen`); it
never leaves this machine, and only the signature travels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_runtime.contract import ControlClaims, new_claims, seal
from edge_runtime.contract.control import COMMAND_LIFETIME_S
from edge_runtime.signing import SigningError, key_id, load_private_key, sign_bytes

CONTROL_KEY_ENV = "EDGE_FLEET_CONTROL_KEY"


class SignerError(Exception):
    """No usable control key; the message says what to pass."""


class ControlSigner:
    """Signs envelopes with one private control key."""

    def __init__(self, key_path: str | os.PathLike[str] | None):
        path = key_path or os.environ.get(CONTROL_KEY_ENV)
        if not path:
            raise SignerError(f"a control key is needed to sign the request: --control-key KEY.key (or "
                              f"${CONTROL_KEY_ENV}); make one with `edge-convert keygen NAME` and list its .pub in "
                              "the devices' security.control_keys")
        try:
            self._key = load_private_key(Path(path))
        except SigningError as exc:
            raise SignerError(f"--control-key: {exc}") from None
        self.key_id = key_id(self._key.public_key())

    def claims(self, action: str, body: Mapping[str, Any], *, prefix: str, device: str | None = None,
               group: str | None = None, lifetime_s: float = COMMAND_LIFETIME_S) -> ControlClaims:
        return new_claims(action, body, prefix=prefix, device=device, group=group, lifetime_s=lifetime_s)

    def seal(self, claims: ControlClaims) -> bytes:
        return seal(claims, lambda data: sign_bytes(data, self._key))

    def sign(self, action: str, body: Mapping[str, Any], *, prefix: str, device: str | None = None,
             group: str | None = None, lifetime_s: float = COMMAND_LIFETIME_S) -> bytes:
        """The envelope bytes to publish on the action's topic."""
        return self.seal(self.claims(action, body, prefix=prefix, device=device, group=group, lifetime_s=lifetime_s))
