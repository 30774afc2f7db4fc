"""A token bucket for the answers a device gives to requests it refuses.

Why: an unauthenticated sender must not be able to make the device publish. Every answer goes through the spool,
so a flood of refused commands answered one for one would push predictions out of a full spool. Refusals are
always counted (stats); only the answers are rate-limited.
"""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """`rate` events per second on average, `burst` at once."""

    def __init__(self, rate: float = 1.0, burst: float = 5.0):
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self.held_back = 0

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            self.held_back += 1
            return False
