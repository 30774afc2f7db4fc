"""Playing data time out at `speed` times real time: shared by the sources that generate or replay samples.

The clock and the wait are injectable so tests check the pacing exactly against a fake clock instead of
measuring the wall clock of a busy machine; the defaults are `time.monotonic` and the source's stop event.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

#: shortest sleep between two deliveries when paced: at high rates a block holds every sample due by then
TICK_S = 0.005
#: most samples in one block, so a stalled consumer is not handed the whole backlog at once
MAX_BLOCK = 4096
#: block size at speed 0 for models without a hop (feature vectors)
FREE_RUN_BLOCK = 64

#: seconds now, on a clock that never goes back
Clock = Callable[[], float]
#: wait up to this many seconds; True when woken because the source is stopping (`threading.Event.wait`)
Wait = Callable[[float], bool]


class Pacer:
    """Maps data time (seconds from the first sample) to wall time at `speed` x real time; 0 means no waiting."""

    def __init__(self, speed: float, stop: threading.Event, clock: Clock = time.monotonic, wait: Wait | None = None):
        self.speed, self.stop = speed, stop
        self.clock = clock
        self.wait = wait or stop.wait
        self._start = clock()

    def due_s(self) -> float:
        """Data time that is due by now."""
        return math.inf if self.speed == 0 else (self.clock() - self._start) * self.speed

    def wait_for(self, data_s: float) -> bool:
        """Sleep until the sample at `data_s` is due (at least TICK_S, so samples gather into blocks).

        Returns False when the source is being stopped.
        """
        if self.speed == 0:
            time.sleep(0)  # free-running: still let the model's threads in
            return not self.stop.is_set()
        delay = data_s / self.speed - (self.clock() - self._start)
        if delay > 0 and self.wait(max(delay, TICK_S)):
            return False
        return not self.stop.is_set()
