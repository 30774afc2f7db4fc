"""The nonces of accepted control envelopes, kept until they expire: what makes a replayed command a refusal.

Bounded and persisted. A signed command is accepted once: its nonce is remembered with its expiry, in memory and
in a small JSON file next to the spool (written atomically after every acceptance; commands are rare), so a
restart does not forget it. An expired envelope is refused by its time alone, so an entry is dropped once it
expires. When the cache is full the entry that expires first is evicted and its expiry becomes the *horizon*:
from then on an envelope that expires at or before the horizon is refused as a possible replay. A replay of an
evicted nonce is therefore still refused, and a fresh envelope (which expires later than anything issued before
it with the same lifetime) still passes: safe by expiry, never unbounded. A file that cannot be read at start
(damaged, hand-edited) is not trusted to be complete: envelopes *issued* before that start are refused.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from pathlib import Path

from edge_runtime import atomic

log = logging.getLogger("edge_runtime.control")

#: nonces remembered at most
CAPACITY = 4096


class NonceCache:
    """Accepted nonces with their expiry; see the module docstring. Thread-safe."""

    def __init__(self, path: Path | None, capacity: int = CAPACITY):
        self.path = path
        self.capacity = capacity
        self.horizon = 0.0  # envelopes expiring at or before it are refused (evicted nonces)
        self.issued_floor = 0.0  # envelopes issued before it are refused (nonces lost with an unreadable file)
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()
        self._load()

    def __len__(self) -> int:
        return len(self._expiry)

    def accept(self, nonce: str, issued: float, expires: float, now: float) -> str | None:
        """Remember `nonce`; None if it is new, else why it is refused (a replay)."""
        with self._lock:
            if issued < self.issued_floor:
                return ("the request was issued before this device lost its record of used nonces (a possible "
                        "replay): send a new one")
            self._drop_expired(now)
            if nonce in self._expiry:
                return "this nonce was already used (a replayed request)"
            if expires <= self.horizon:
                return ("the request expires before requests this device already forgot (a possible replay): "
                        "send a new one")
            self._expiry[nonce] = expires
            while len(self._expiry) > self.capacity:
                first = min(self._expiry, key=self._expiry.__getitem__)
                self.horizon = max(self.horizon, self._expiry.pop(first))
            self._save()
            return None

    def _drop_expired(self, now: float) -> None:
        for nonce in [n for n, expires in self._expiry.items() if expires <= now]:
            del self._expiry[nonce]

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            document = json.loads(self.path.read_text())
            entries = {str(k): float(v) for k, v in document["nonces"].items()}
            self.horizon = float(document.get("horizon", 0.0))
            self.issued_floor = float(document.get("issued_floor", 0.0))
        except FileNotFoundError:
            return
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
            # Forgetting nonces could let a replay in: refuse everything issued before now instead.
            self.issued_floor = time.time()
            log.warning("%s is unreadable (%s): requests issued before now are refused as possible replays",
                        self.path, exc)
            return
        kept = heapq.nlargest(self.capacity, entries.items(), key=lambda item: item[1])
        self._expiry = dict(kept)

    def _save(self) -> None:
        if self.path is None:
            return
        data = json.dumps({"horizon": self.horizon, "issued_floor": self.issued_floor, "nonces": self._expiry}).encode()
        try:
            atomic.write_bytes(self.path, data, sync=False)
        except OSError:
            log.exception("cannot persist the control nonces to %s", self.path)
