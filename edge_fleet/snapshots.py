"""The latest snapshot JPEG of every (device, model), in memory, bounded in bytes: a fleet of a thousand cameras
must not hold a thousand 200 KB images forever. The least recently updated go first when the bound is reached;
the fleet state keeps each snapshot's description (time, trigger, size) either way."""

from __future__ import annotations

import threading
from collections import OrderedDict

#: bytes of JPEG kept by one monitor (about 320 snapshots of 200 KB)
DEFAULT_MAX_BYTES = 64 * 2**20


class SnapshotStore:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self._images: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evicted = 0

    def put(self, device_id: str, model: str, jpeg: bytes) -> None:
        key = (device_id, model)
        with self._lock:
            old = self._images.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            if len(jpeg) > self.max_bytes:
                return
            self._images[key] = jpeg
            self._bytes += len(jpeg)
            while self._bytes > self.max_bytes:
                _, gone = self._images.popitem(last=False)
                self._bytes -= len(gone)
                self.evicted += 1

    def get(self, device_id: str, model: str) -> bytes | None:
        with self._lock:
            return self._images.get((device_id, model))

    def forget(self, device_id: str) -> None:
        with self._lock:
            for key in [key for key in self._images if key[0] == device_id]:
                self._bytes -= len(self._images.pop(key))

    @property
    def size_bytes(self) -> int:
        return self._bytes
