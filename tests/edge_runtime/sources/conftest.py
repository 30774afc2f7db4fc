"""A recording sink and small model cards shared by the source, decode and window tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from edge_runtime.card import ModelCard
from edge_runtime.sources.base import SourceContext
from edge_runtime.stream import ImageFrame, InputRejected, SampleBlock


class FakeSink:
    """Records what a source delivers; thread-safe like the real one."""

    def __init__(self) -> None:
        self.items: list[SampleBlock | ImageFrame] = []
        self.rejections: list[tuple[InputRejected, str]] = []
        self._lock = threading.Lock()

    def accept(self, item: SampleBlock | ImageFrame) -> None:
        with self._lock:
            self.items.append(item)

    def reject(self, rejected: InputRejected, source: str) -> None:
        with self._lock:
            self.rejections.append((rejected, source))

    @property
    def blocks(self) -> list[SampleBlock]:
        with self._lock:
            return [item for item in self.items if isinstance(item, SampleBlock)]

    def values(self) -> np.ndarray:
        return np.concatenate([block.values for block in self.blocks])

    def ts(self) -> np.ndarray:
        return np.concatenate([block.ts for block in self.blocks])

    def samples(self) -> int:
        return sum(len(block) for block in self.blocks)

    @property
    def reasons(self) -> list[str]:
        with self._lock:
            return [rejected.reason for rejected, _ in self.rejections]

    def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; items={len(self.items)} rejections={self.reasons}")
            time.sleep(0.002)


def _timeseries_card(channels: int = 3, window: int = 50, hop: int = 10, rate_hz: float = 100.0,
                     **extra: object) -> ModelCard:
    return ModelCard.model_validate({
        "name": "test-ts",
        "input": {"window": window, "hop": hop, "rate_hz": rate_hz, "channels": channels, **extra},
    })


def _image_card(**extra: object) -> ModelCard:
    return ModelCard.model_validate({"name": "test-image", "input": {"height": 4, "width": 6, **extra}})


@pytest.fixture
def timeseries_card() -> Callable[..., ModelCard]:
    """Factory: a time-series card (3 channels, window 50, hop 10, 100 Hz unless told)."""
    return _timeseries_card


@pytest.fixture
def image_card() -> Callable[..., ModelCard]:
    """Factory: a 4x6 image card (rgb, nchw unless told)."""
    return _image_card


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def make_context(sink: FakeSink) -> Callable[..., SourceContext]:
    def make(card: ModelCard | None = None, **kwargs: object) -> SourceContext:
        kwargs.setdefault("sink", sink)
        return SourceContext(card=card or _timeseries_card(), **kwargs)

    return make


@pytest.fixture
def without_pillow(monkeypatch):
    """A device install without Pillow: importing PIL fails as it would there."""
    import sys

    for name in ("PIL", "PIL.Image"):
        monkeypatch.setitem(sys.modules, name, None)
