"""Rejected inputs and failures: always counted, published on the errors topic at a bounded rate.

A sensor that sends garbage at 1 kHz must not flood the broker, and must not disappear either: what the rate
limit holds back is counted and said in the next message that goes out. The message is the contract's
`ErrorDocument`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

from edge_runtime.contract import error_document


class ErrorReporter:
    def __init__(self, publish: Callable[[bytes], None], per_second: float, device_id: str):
        self._publish = publish
        self._rate = per_second
        self._burst = max(1.0, per_second)
        self._tokens = self._burst
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self.device_id = device_id
        self.suppressed = 0
        self.reported = 0

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def report(self, reason: str, detail: str, *, model: str | None = None, source: str | None = None) -> None:
        """Publish one error message unless the rate limit says no; then it is counted as suppressed."""
        with self._lock:
            if not self._take_token():
                self.suppressed += 1
                return
            suppressed, self.suppressed = self.suppressed, 0
            self.reported += 1
        message = error_document(self.device_id, reason, detail, model=model, source=source,
                                 suppressed_before=suppressed)
        self._publish(json.dumps(message).encode())
