"""Generated samples for trying a board without a sensor: one sine per channel plus Gaussian noise.

Deterministic: the same seed gives the same values (however they are cut into blocks), so a run can be
compared with another. Channel c has frequency 0.1 * rate_hz * (c + 1) / channels (at least 10 samples per
cycle), phase c radians, amplitude 1 and noise of standard deviation NOISE_STD. Timing works like the replay
source: ts start at the wall clock at start() and advance by 1 / rate_hz per sample, delivered at `speed` x
real time (0: back to back, `hop` samples a block).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

import numpy as np
from pydantic import Field

from edge_runtime.card import TimeSeriesInput
from edge_runtime.sources.base import BaseSourceConfig, SourceContext, ThreadedSource, stream_shape
from edge_runtime.sources.pacing import FREE_RUN_BLOCK, MAX_BLOCK, Pacer
from edge_runtime.stream import SampleBlock

log = logging.getLogger(__name__)

NOISE_STD = 0.1

SOURCE_KEY = "synthetic"


class SyntheticSourceConfig(BaseSourceConfig):
    """Generated samples (sine plus noise) at the card's rate: for trying a board without a sensor."""

    order = 50
    type: Literal[SOURCE_KEY]
    rate_hz: float | None = Field(None, gt=0)
    seed: int = 0
    duration_s: float | None = Field(None, gt=0, description="stop after this long; default: run forever")
    speed: float = Field(1.0, ge=0)


class SyntheticSource(ThreadedSource):
    type = SOURCE_KEY
    config: SyntheticSourceConfig

    def __init__(self, config: SyntheticSourceConfig, context: SourceContext):
        super().__init__(config, context)
        self.channels, self.rate_hz = stream_shape(context.card, config.rate_hz)
        self.frequencies = 0.1 * self.rate_hz * np.arange(1, self.channels + 1) / self.channels
        self.phases = np.arange(self.channels, dtype=np.float64)
        self.total = round(config.duration_s * self.rate_hz) if config.duration_s is not None else None
        spec = context.card.input
        self.free_run_block = spec.hop if isinstance(spec, TimeSeriesInput) else FREE_RUN_BLOCK

    def describe(self) -> str:
        return f"synthetic:seed={self.config.seed}"

    def generate(self, rng: np.random.Generator, first: int, count: int) -> np.ndarray:
        """Samples first .. first + count - 1 as [count, channels] float32 (noise drawn from `rng` in order)."""
        t = (first + np.arange(count, dtype=np.float64))[:, None] / self.rate_hz
        clean = np.sin(2 * np.pi * self.frequencies * t + self.phases)
        return (clean + NOISE_STD * rng.standard_normal((count, self.channels))).astype(np.float32)

    def _run(self) -> None:
        try:
            self._play()
        except Exception:
            log.exception("synthetic source stopped")

    def _play(self) -> None:
        rng = np.random.default_rng(self.config.seed)
        pacer = Pacer(self.config.speed, self._stop)
        wall_start = time.time()
        total = math.inf if self.total is None else self.total
        index = 0
        while index < total:
            if not pacer.wait_for(index / self.rate_hz):
                return
            if self.config.speed == 0:
                end = index + self.free_run_block
            else:
                end = math.floor(pacer.due_s() * self.rate_hz) + 1
            end = int(min(max(end, index + 1), index + MAX_BLOCK, total))
            ts = wall_start + np.arange(index, end, dtype=np.float64) / self.rate_hz
            self.context.sink.accept(SampleBlock(ts=ts, values=self.generate(rng, index, end - index)))
            if self._stop.is_set():  # stopped while the sink applied backpressure: not one block more
                return
            index = end
        self._finished = True
