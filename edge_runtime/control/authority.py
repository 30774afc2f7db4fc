"""Who may change this device: the check every command and deploy request passes before it is looked at.

`ControlAuthority.check(action, payload)` opens the signed envelope of `edge_runtime.contract.control`, verifies
its ed25519 signature against the keys trusted *for control* (`security.control_keys`, separate from the keys
that sign bundles: the people who may build a model are not necessarily those who may push it), checks that it is
for this device (or its group), this topic prefix and this action, that it is within its time, and that its
nonce is new (`NonceCache`). Anything else raises `ControlRefused` with a stable `reason`, counted in the stats:

    unsigned, malformed, no_control_keys, untrusted_key, bad_signature, wrong_target, wrong_action,
    not_yet_valid, expired, too_long, replay

Why the broker ACL is not enough: an ACL is one line in a broker config that someone else maintains; a device that
trusts its control keys cannot be told what to run by whoever reaches the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime.contract import DeviceTopics
from edge_runtime.contract.control import ControlClaims, EnvelopeError, parse_claims, unseal
from edge_runtime.control.nonces import NonceCache
from edge_runtime.signing import SignatureError, verify_signature

log = logging.getLogger("edge_runtime.control")

REASONS = ("unsigned", "malformed", "no_control_keys", "untrusted_key", "bad_signature", "wrong_target",
           "wrong_action", "not_yet_valid", "expired", "too_long", "replay")
#: the longest lifetime (expires - issued) an envelope may claim; beyond, it is refused as too_long
MAX_LIFETIME_S = 8 * 24 * 3600.0
#: how far in the future `issued` may be (the sender's clock runs ahead of this device's)
CLOCK_SKEW_S = 300.0


class ControlRefused(Exception):
    """A command or deploy request that is not accepted; `reason` is one of REASONS."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Authorized:
    """An accepted envelope: what it asks (`body`), and who signed it."""

    claims: ControlClaims
    key_id: str

    @property
    def body(self) -> dict[str, Any]:
        return self.claims.body


class ControlAuthority:
    """The control keys, the nonces, the counters; see the module docstring. Thread-safe."""

    def __init__(self, keys: Sequence[Ed25519PublicKey], topics: DeviceTopics, group: str | None,
                 nonces: NonceCache, *, max_lifetime_s: float = MAX_LIFETIME_S, clock_skew_s: float = CLOCK_SKEW_S,
                 clock: Callable[[], float] = time.time):
        self.keys = list(keys)
        self.topics = topics
        self.group = group
        self.nonces = nonces
        self.max_lifetime_s = max_lifetime_s
        self.clock_skew_s = clock_skew_s
        self.clock = clock
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self._lock = threading.Lock()

    def check(self, action: str, payload: bytes) -> Authorized:
        """Verify and consume (the nonce is used up): for commands, which run once."""
        authorized = self.verify(action, payload)
        self.consume(authorized)
        return authorized

    def verify(self, action: str, payload: bytes) -> Authorized:
        """Signature, target, action and time; the nonce is not consumed (a retained deploy request is seen
        again after every reconnect: the deploy receiver consumes it once, when a transfer starts)."""
        try:
            data, signature = unseal(payload)
        except EnvelopeError as exc:
            raise self._refuse(exc.reason, str(exc)) from None
        if not self.keys:
            raise self._refuse("no_control_keys", "this device has no security.control_keys: it accepts no "
                                                  "commands or deployments")
        try:
            key_id = verify_signature(data, signature, self.keys)
        except SignatureError as exc:
            reason = "untrusted_key" if "not among the trusted keys" in str(exc) else "bad_signature"
            raise self._refuse(reason, f"control signature refused: {exc}") from None
        try:
            claims = parse_claims(data)
        except EnvelopeError as exc:
            raise self._refuse(exc.reason, str(exc)) from None
        if claims.action != action:
            raise self._refuse("wrong_action", f"the request was signed for {claims.action}, not {action}")
        if claims.prefix != self.topics.prefix:
            raise self._refuse("wrong_target", f"the request was signed for prefix {claims.prefix!r}, this device "
                                               f"is under {self.topics.prefix!r}")
        if claims.device is not None and claims.device != self.topics.device_id:
            raise self._refuse("wrong_target", f"the request was signed for device {claims.device!r}, this is "
                                               f"{self.topics.device_id!r}")
        if claims.group is not None and claims.group != self.group:
            raise self._refuse("wrong_target", f"the request was signed for group {claims.group!r}, this device is "
                                               f"in {self.group!r}")
        now = self.clock()
        if claims.issued > now + self.clock_skew_s:
            raise self._refuse("not_yet_valid", f"the request was issued {claims.issued - now:.0f} s in the future "
                                                "(is this device's clock set?)")
        if claims.expires <= now:
            raise self._refuse("expired", f"the request expired {now - claims.expires:.0f} s ago")
        if claims.expires - claims.issued > self.max_lifetime_s:
            raise self._refuse("too_long", f"the request is valid for {claims.expires - claims.issued:.0f} s, "
                                           f"more than this device accepts ({self.max_lifetime_s:.0f} s)")
        return Authorized(claims, key_id)

    def consume(self, authorized: Authorized) -> None:
        """Use the nonce up; ControlRefused('replay') if it was used before."""
        claims = authorized.claims
        problem = self.nonces.accept(claims.nonce, claims.issued, claims.expires, self.clock())
        if problem is not None:
            raise self._refuse("replay", problem)
        with self._lock:
            self.accepted += 1

    def _refuse(self, reason: str, message: str) -> ControlRefused:
        with self._lock:
            self.refused[reason] += 1
        return ControlRefused(reason, message)

    def stats(self) -> dict[str, Any]:
        """For the stats document: `{"accepted": n, "refused": {reason: n}}`."""
        with self._lock:
            return {"accepted": self.accepted, "refused": dict(self.refused)}
