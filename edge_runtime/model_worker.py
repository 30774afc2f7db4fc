"""One model's stream: samples -> windows -> a bounded queue -> batched inference -> predictions published.

Sources call `accept` from their own threads; windows are cut right there (cheap) and queued; one worker thread
runs the model on everything that has queued up, up to `max_batch` at once, so a model keeps up with a sensor
whose samples arrive faster than one inference. When the queue is full the oldest window is dropped and counted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_runtime.card import FeatureInput, ImageInput, TimeSeriesInput
from edge_runtime.config import ModelConfig
from edge_runtime.error_reporter import ErrorReporter
from edge_runtime.metrics import ModelStats
from edge_runtime.model_loader import LoadedModel
from edge_runtime.postprocess import predictions
from edge_runtime.stream import ImageFrame, InputRejected, SampleBlock
from edge_runtime.window import Preprocessor, SlidingWindow

log = logging.getLogger("edge_runtime.worker")


@dataclass
class _Pending:
    ts: float  # timestamp of the newest sample (or the frame)
    ready: float  # time.monotonic() when it became ready: latency is measured from here
    data: np.ndarray | ImageFrame


# Sources that play something recorded: they can wait for the model; a live sensor cannot.
RECORDED_SOURCES = ("replay", "synthetic", "folder")

PublishPredictions = Callable[[str, list[bytes]], None]
ReserveSeqs = Callable[[str, int], range]


class ModelWorker:
    """Implements the SampleSink protocol for one model's source."""

    def __init__(
        self,
        model: LoadedModel,
        config: ModelConfig,
        *,
        publish: PublishPredictions,
        reserve_seqs: ReserveSeqs,
        errors: ErrorReporter,
    ):
        self.config = config
        self.name = model.name
        self.stats = ModelStats()
        self._publish = publish
        self._reserve_seqs = reserve_seqs
        self._errors = errors
        self._lock = threading.Lock()  # guards the window and the model swap
        queue_lock = threading.Lock()
        self._ready = threading.Condition(queue_lock)  # the worker waits for windows
        self._room = threading.Condition(queue_lock)  # a recorded source waits for space in the queue
        self._backpressure = config.source.type in RECORDED_SOURCES
        self._queue: deque[_Pending] = deque()
        self._stopping = False
        self._drain = True
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name=f"model-{self.name}", daemon=True)
        self._install(model)

    # -- model --------------------------------------------------------------------------------------------------
    def _install(self, model: LoadedModel) -> None:
        card = model.card
        if card is None:
            raise ValueError(f"bundle {model.bundle.path} has no model card: the daemon needs it to feed the model")
        self.model = model
        self.card = card
        self.preprocess = Preprocessor(card)
        spec = card.input
        self.window = SlidingWindow.for_input(spec) if isinstance(spec, TimeSeriesInput) else None

    def swap(self, model: LoadedModel) -> None:
        """Replace the model between two batches; the stream keeps flowing into the window meanwhile."""
        with self._lock:
            old, old_card = self.model, self.card
            same_window = old_card.input == model.card.input if model.card else False
            window = self.window
            self._install(model)
            if same_window:
                self.window = window  # keep the samples already buffered: no gap in the predictions
        log.info("model %s: now %s %s", self.name, model.bundle.manifest.version, model.choice.active)
        if old is not model:
            old.close()

    # -- SampleSink ---------------------------------------------------------------------------------------------
    def accept(self, item: SampleBlock | ImageFrame) -> None:
        now = time.monotonic()
        try:
            with self._lock:
                pending = self._cut(item, now)
        except InputRejected as rejected:
            self.reject(rejected, source=self.config.source.type)
            return
        if pending:
            self._enqueue(pending)

    def reject(self, rejected: InputRejected, source: str) -> None:
        self.stats.count_invalid(rejected.reason)
        self._errors.report(rejected.reason, rejected.detail, model=self.name, source=source)

    def _cut(self, item: SampleBlock | ImageFrame, now: float) -> list[_Pending]:
        spec = self.card.input
        if isinstance(item, ImageFrame):
            if not isinstance(spec, ImageInput):
                raise InputRejected("wrong_input_kind", f"model {self.name} takes {spec.kind} input, not images")
            return [_Pending(item.ts, now, item)]
        if isinstance(spec, ImageInput):
            raise InputRejected("wrong_input_kind", f"model {self.name} takes images, not sensor samples")
        if item.values.shape[1] != spec.channels:
            raise InputRejected(
                "wrong_channel_count", f"expected {spec.channels} channels, got {item.values.shape[1]}"
            )
        if isinstance(spec, FeatureInput):
            return [_Pending(float(ts), now, row) for ts, row in zip(item.ts, item.values, strict=True)]
        return [_Pending(ts, now, window) for ts, window in self.window.push(item)]

    def _enqueue(self, items: list[_Pending]) -> None:
        """Live sources never wait: beyond `queue_size` the oldest windows go (counted). Recorded sources
        (replay, synthetic, folder) wait for room instead, so a fast replay is slowed down, not thinned out."""
        dropped = 0
        with self._ready:
            if self._backpressure:
                while len(self._queue) + len(items) > self.config.queue_size and self._queue and not self._stopping:
                    self._room.wait(0.5)
            self._queue.extend(items)
            while len(self._queue) > self.config.queue_size:
                self._queue.popleft()
                dropped += 1
            self._ready.notify()
        self.stats.count_window(len(items))
        if dropped:
            self.stats.count_dropped(dropped)
            self._errors.report(
                "queue_full",
                f"{dropped} window(s) dropped: inference is slower than the stream (queue size "
                f"{self.config.queue_size})",
                model=self.name,
            )

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch in flight."""
        return not self._queue and not self._busy

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- inference loop -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, *, drain: bool = True, timeout: float = 10.0) -> None:
        """Stop the worker; with `drain`, everything already queued is run and published first."""
        with self._ready:
            self._stopping, self._drain = True, drain
            self._ready.notify_all()
            self._room.notify_all()
        self._thread.join(timeout)

    def _take_batch(self) -> list[_Pending] | None:
        with self._ready:
            while not self._queue and not self._stopping:
                self._ready.wait()
            if not self._queue or (self._stopping and not self._drain):
                return None
            limit = self.config.max_batch
            backend_limit = self.model.choice.backend.max_batch
            if backend_limit:
                limit = min(limit, backend_limit)
            self._busy = True
            batch = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
            self._room.notify_all()
            return batch

    def _model_input(self, batch: list[_Pending]) -> np.ndarray:
        spec = self.card.input
        if isinstance(spec, ImageInput):
            return self.preprocess.image([item.data for item in batch])
        stacked = np.stack([item.data for item in batch])
        if isinstance(spec, FeatureInput):
            return self.preprocess.features(stacked)
        return self.preprocess.time_series(stacked)

    def _run_batch(self, batch: list[_Pending]) -> None:
        with self._lock:
            model = self.model
            inputs = self._model_input(batch)
        started = time.perf_counter()
        outputs = model.run({model.input_name: inputs})
        inference_ms = (time.perf_counter() - started) * 1e3
        results = predictions(outputs[model.output_name], model.card)
        seqs = self._reserve_seqs(self.name, len(batch))
        done = time.monotonic()
        latencies, payloads = [], []
        for seq, item, result in zip(seqs, batch, results, strict=True):
            latency = (done - item.ready) * 1e3
            latencies.append(latency)
            message = {"seq": seq, "ts": round(float(item.ts), 6), "model": self.name, **result,
                       "latency_ms": round(latency, 3)}
            payloads.append(json.dumps(message).encode())
        self._publish(self.name, payloads)
        self.stats.record_batch(len(batch), inference_ms, latencies)

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._run_batch(batch)
            except Exception as exc:  # a failing batch is reported; the stream goes on
                log.exception("model %s: inference failed", self.name)
                self.stats.count_invalid("inference_failed")
                self._errors.report("inference_failed", f"{type(exc).__name__}: {exc}", model=self.name)
            finally:
                self._busy = False

    def describe(self) -> dict:
        return {**self.model.describe(), "source": self.config.source.type}
