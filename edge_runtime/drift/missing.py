"""Rejected (NaN/infinite) samples as a share of a recent window: one bookkeeping for every drift monitor."""

from __future__ import annotations

from collections import deque


class MissingSamples:
    """Rejections counted against the last `window` accepted samples, plus those rejected meanwhile.

    Each rejection is kept with the number of accepted samples seen when it happened, so it ages out of the window
    as new samples arrive; memory is bounded by the rejections inside one window.
    """

    def __init__(self, window: int):
        self.window = window
        self._events: deque[tuple[int, int]] = deque()  # (accepted samples seen then, count)

    def __bool__(self) -> bool:
        return bool(self._events)

    def record(self, samples_seen: int, count: int = 1) -> None:
        self._events.append((samples_seen, count))

    def share(self, samples_seen: int) -> float:
        while self._events and samples_seen - self._events[0][0] > self.window:
            self._events.popleft()
        missing = sum(count for _, count in self._events)
        return missing / (min(samples_seen, self.window) + missing) if missing else 0.0
