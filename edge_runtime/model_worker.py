"""One model's stream: samples -> windows -> a bounded queue -> batched inference -> predictions published.

Sources call `accept` from their own threads; windows are cut right there (cheap) and queued; one worker thread
runs the model on everything that has queued up, up to `max_batch` at once, so a model keeps up with a sensor
whose samples arrive faster than one inference. When the queue is full a live source loses its oldest window
(counted); a recorded source (replay, synthetic, folder) waits for room instead and loses nothing. Decoded images
can be large, so an image model's queue holds at most `IMAGE_QUEUE_MAX` frames whatever `queue_size` says.

Threads: `accept` runs on a source's thread (paho's network thread for MQTT sources), so it only takes the short
`_lock` (window and model swap) and never waits for preprocessing or inference. A reload `swap`s the model under
that lock; the old model is retired and closed by the worker thread once no batch can be running on it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_runtime.card import AudioInput, FeatureInput, ImageInput, TimeSeriesInput
from edge_runtime.config import ModelConfig
from edge_runtime.detection import DetectionDecoder
from edge_runtime.drift.tracker import DriftTracker
from edge_runtime.error_reporter import ErrorReporter
from edge_runtime.feeds import STATE_GAP_HOPS, StreamState, run_stream
from edge_runtime.metrics import ModelStats
from edge_runtime.model_loader import LoadedModel
from edge_runtime.postprocess import detections, predictions
from edge_runtime.snapshot import SnapshotTaker
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

#: most decoded frames an image model's queue holds, whatever `queue_size` says (a frame can be megabytes)
IMAGE_QUEUE_MAX = 64

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
        publish_drift: Callable[[str, dict], None] | None = None,
        publish_snapshot: Callable[[str, bytes], None] | None = None,
    ):
        self.config = config
        self.name = model.name
        self.stats = ModelStats()
        self._publish = publish
        self._publish_drift = publish_drift
        self._reserve_seqs = reserve_seqs
        self._errors = errors
        self._logged: set = set()  # failure reasons already logged with a traceback
        self._lock = threading.Lock()  # guards the window, the model swap and the retired models
        queue_lock = threading.Lock()
        self._ready = threading.Condition(queue_lock)  # the worker waits for windows
        self._room = threading.Condition(queue_lock)  # a recorded source waits for space in the queue
        # a source may say so itself: a video file played as fast as the model goes waits like a replay
        self._backpressure = config.source.type in RECORDED_SOURCES or getattr(config.source, "waits_for_model", False)
        # a live camera: the queue is a one-frame mailbox, a newer frame replaces the waiting one (counted, no error)
        self._latest_frame = bool(getattr(config.source, "latest_frame", False))
        self._queue: deque[_Pending] = deque()
        self._stopping = False
        self._drain = True
        self._busy = False
        self._retired: list[LoadedModel] = []  # swapped out; closed by the worker thread between batches
        self._loop_running = False  # True from start() until the worker thread has closed the retired models
        self._thread = threading.Thread(target=self._loop, name=f"model-{self.name}", daemon=True)
        self._install(model)
        # decoded frames can be huge: an image model's queue is capped (the input kind cannot change on reload)
        self.capacity = config.queue_size
        if isinstance(self.card.input, ImageInput):
            self.capacity = min(config.queue_size, IMAGE_QUEUE_MAX)
        if self._latest_frame:
            self.capacity = 1
        # a source that waits for the model loses nothing by waiting early: with images it waits once a full batch
        # is queued (the worker takes a batch, the source refills while it runs), not at 64 frames of megabytes
        self._wait_depth = self.capacity
        if isinstance(self.card.input, ImageInput):
            self._wait_depth = min(self.capacity, config.max_batch)
        # detectors: what was found, by label, and the optional snapshots (a frame with its detections drawn)
        self._publish_snapshot = publish_snapshot
        self.detections = Counter()
        self.frames_with_detections = 0
        self.snapshots = None
        if config.snapshot is not None:
            if not self.card.is_detector:
                raise ValueError(f"model {self.name}: `snapshot:` is for detectors (card output kind: detection)")
            self.snapshots = SnapshotTaker(config.snapshot)

    # -- model --------------------------------------------------------------------------------------------------
    def _install(self, model: LoadedModel) -> None:
        card = model.card
        if card is None:
            raise ValueError(f"bundle {model.bundle.path} has no model card: the daemon needs it to feed the model")
        self.model = model
        self.card = card
        self.preprocess = Preprocessor(card)
        self.decoder = DetectionDecoder(card) if card.is_detector else None
        # a new bundle brings its own reference statistics: drift starts over against them
        self.drift = DriftTracker(self.name, model.bundle.manifest.reference, card, self.config.drift,
                                  self._drift_changed)
        spec = card.input
        streamed = isinstance(spec, TimeSeriesInput | AudioInput)
        self.window = SlidingWindow.for_input(spec) if streamed else None
        # a recurrent model's state belongs to the stream and to this model: a new bundle starts it over
        plan = getattr(model, "plan", None)  # None: a card-less bundle (and stand-ins in tests)
        self.stream_state = StreamState(plan, self._state_gap_s(spec)) if plan is not None and plan.stateful else None

    def _state_gap_s(self, spec) -> float | None:
        """After a pause longer than this between two windows the state starts over: `state_reset_gap_s` in the
        config, else STATE_GAP_HOPS hops of the stream (None for images and feature rows: no timeline)."""
        configured = self.config.state_reset_gap_s
        if configured is not None:
            return configured
        if isinstance(spec, TimeSeriesInput | AudioInput):
            return STATE_GAP_HOPS * spec.hop / spec.rate_hz
        return None

    def _drift_changed(self, report: dict) -> None:
        if self._publish_drift is not None:
            self._publish_drift(self.name, report)

    def swap(self, model: LoadedModel) -> None:
        """Replace the model between two batches; the stream keeps flowing into the window meanwhile.

        Refused (ValueError saying what differs) unless the new card takes the same input shape: the windows
        already queued were cut for the old one. The sliding window keeps its buffered raw samples (normalisation
        is applied later, per batch), so there is no gap in the predictions. The old model is closed by the
        worker thread after the batch that may be running on it, never under it.
        """
        if model.card is None:
            raise ValueError(f"bundle {model.bundle.path} has no model card: the daemon needs it to feed the model")
        with self._lock:
            problems = input_differences(self.card.input, model.card.input)
            if problems:
                raise ValueError("the new bundle takes different input than the running model: "
                                 + "; ".join(problems))
            old = self.model
            window = self.window
            self._install(model)
            if window is not None and _same_window(old.card.input, model.card.input):
                self.window = window  # keep the samples already buffered: no gap in the predictions
            close_now = False
            if old is not model:
                if self._loop_running:
                    self._retired.append(old)
                else:
                    close_now = True  # no worker thread (not started, or ended): nothing can be running on it
        log.info("model %s: now %s %s", self.name, model.bundle.manifest.version, model.choice.active)
        if close_now:
            _close(old, self.name)
        elif old is not model:
            with self._ready:
                self._ready.notify_all()  # an idle worker wakes up and closes the old model

    # -- SampleSink ---------------------------------------------------------------------------------------------
    def accept(self, item: SampleBlock | ImageFrame) -> None:
        now = time.monotonic()
        try:
            if isinstance(item, ImageFrame):
                pending = self._cut(item, now)  # no window to guard: a frame is its own window
            else:
                with self._lock:
                    pending = self._cut(item, now)
        except InputRejected as rejected:
            self.reject(rejected, source=self.config.source.type)
            return
        if pending:
            self._enqueue(pending)

    def reject(self, rejected: InputRejected, source: str) -> None:
        self.stats.count_invalid(rejected.reason)
        if rejected.reason == "non_finite":
            self.drift.record_missing(1)
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
        """Live sources never wait: beyond the queue's capacity the oldest windows go (counted). Recorded sources
        (replay, synthetic, folder) wait for room instead, so a fast replay is slowed down, not thinned out: a
        block that makes more windows than the queue holds goes in chunks, each after the worker made room."""
        self.stats.count_window(len(items))
        capacity = self.capacity
        dropped = 0
        if self._backpressure:
            capacity = self._wait_depth
            for start in range(0, len(items), capacity):
                chunk = items[start:start + capacity]
                with self._ready:
                    while len(self._queue) + len(chunk) > capacity and not self._stopping:
                        self._room.wait(0.5)
                    if self._stopping and len(self._queue) + len(chunk) > capacity:
                        dropped = len(items) - start  # shutting down: nobody will make room any more
                        break
                    self._queue.extend(chunk)
                    self._ready.notify()
        else:
            with self._ready:
                self._queue.extend(items)
                while len(self._queue) > capacity:
                    self._queue.popleft()
                    dropped += 1
                self._ready.notify()
        if dropped:
            self.stats.count_dropped(dropped)
            if self._latest_frame:  # by design: the model runs on the newest frame, the stats count the rest
                return
            self._report("queue_full", f"{dropped} window(s) dropped: inference is slower than the stream (queue "
                                       f"size {capacity})")

    def _report(self, reason: str, detail: str) -> None:
        """Publish an error; reporting must never raise into a source's or the worker's thread."""
        try:
            self._errors.report(reason, detail, model=self.name)
        except Exception as exc:  # e.g. the spool's disk is full: one traceback, then one line each
            first = ("report", reason) not in self._logged
            self._logged.add(("report", reason))
            log.error("model %s: could not report %s (%s): %s", self.name, reason, detail, exc, exc_info=first)

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch in flight."""
        return not self._queue and not self._busy

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- inference loop -----------------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            self._loop_running = True
        try:
            self._thread.start()
        except BaseException:
            with self._lock:
                self._loop_running = False
            raise

    @property
    def alive(self) -> bool:
        """The worker thread is running (started and not ended)."""
        return self._thread.is_alive()

    def stop(self, *, drain: bool = True, timeout: float = 10.0) -> None:
        """Stop the worker; with `drain`, everything already queued is run and published first. A worker whose
        thread never started (the daemon failed to start) just closes its retired models."""
        with self._ready:
            self._stopping, self._drain = True, drain
            self._ready.notify_all()
            self._room.notify_all()
        if self._thread.ident is not None:
            self._thread.join(max(timeout, 0.0))
        else:
            self._close_retired()

    def _take_batch(self) -> list[_Pending] | None:
        """The next batch; [] when woken only to close a retired model; None when the worker must end."""
        with self._ready:
            while not self._queue and not self._stopping and not self._retired:
                self._ready.wait()
            if self._stopping and (not self._queue or not self._drain):
                return None
            if not self._queue:
                return []
            limit = self.config.max_batch
            try:
                backend_limit = self.model.choice.backend.max_batch
            except Exception:  # never let a backend attribute end the worker: run one window at a time
                log.exception("model %s: cannot read the backend's max_batch", self.name)
                backend_limit = 1
            if backend_limit:
                limit = min(limit, backend_limit)
            self._busy = True
            batch = [self._queue.popleft() for _ in range(min(limit, len(self._queue)))]
            self._room.notify_all()
            return batch

    @staticmethod
    def _model_input(spec, preprocess: Preprocessor, batch: list[_Pending]) -> np.ndarray:
        if isinstance(spec, ImageInput):
            return preprocess.image([item.data for item in batch])
        stacked = np.stack([item.data for item in batch])
        if isinstance(spec, FeatureInput):
            return preprocess.features(stacked)
        if isinstance(spec, AudioInput):
            return preprocess.audio(stacked)
        return preprocess.time_series(stacked)

    def _run_batch(self, batch: list[_Pending]) -> None:
        with self._lock:  # references only: preprocessing must not hold up `accept` (paho's thread)
            model, card, preprocess, drift = self.model, self.card, self.preprocess, self.drift
            decoder = self.decoder
            stream_state = self.stream_state
        try:
            if decoder is not None:  # a detector: keep each frame's resize to map its boxes back onto it
                inputs, transforms = preprocess.images([item.data for item in batch])
            else:
                inputs = self._model_input(card.input, preprocess, batch)
            started = time.perf_counter()
            plan = getattr(model, "plan", None)  # None: a card-less bundle (and stand-ins in tests)
            if stream_state is not None:  # recurrent: one window at a time, in stream order, the state carried
                outputs = run_stream(model.run, plan, stream_state, inputs, [item.ts for item in batch])
            elif plan is not None:  # the streamed batch plus the card's constants
                outputs = model.run(plan.feed(inputs))
            else:
                outputs = model.run({model.input_name: inputs})
            inference_ms = (time.perf_counter() - started) * 1e3
            if decoder is not None:
                results = detections(decoder, outputs, transforms)
            else:
                output = np.asarray(outputs[model.output_name])
                finite = np.isfinite(output.reshape(len(output), -1)).all(axis=1) if output.dtype.kind == "f" else None
                if finite is not None and not finite.all():  # NaN/inf rows: counted, never published as a prediction
                    self._failed("non_finite_output", ValueError(f"the model returned NaN or inf for "
                                                                 f"{int((~finite).sum())} window(s)"),
                                 int((~finite).sum()))
                    batch, output = [item for item, ok in zip(batch, finite, strict=True) if ok], output[finite]
                    if not batch:
                        return
                results = predictions(output, card)
        except Exception as exc:
            self._failed("inference_failed", exc, len(batch))
            return
        try:
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
        except Exception as exc:  # e.g. the spool's disk is full
            self._failed("publish_failed", exc, len(batch))
            return
        self.stats.record_batch(len(batch), inference_ms, latencies)
        if decoder is not None:
            self._after_detections(batch, results, seqs)
        if drift.enabled:  # time series, features, and (frame statistics) images and audio
            try:
                drift.observe([item.data for item in batch], results)
            except Exception as exc:  # drift watches the stream; it must never stop it
                self._failed("drift_failed", exc, 0)

    def _after_detections(self, batch: list[_Pending], results: list[dict], seqs: range) -> None:
        """Count what a detector found, by label, and take a snapshot when one is asked for and due."""
        for result in results:
            found = result["detections"]
            self.frames_with_detections += bool(found)
            self.detections.update(detection["label"] for detection in found)
        if self.snapshots is None or self._publish_snapshot is None:
            return
        for seq, item, result in zip(seqs, batch, results, strict=True):
            trigger = self.snapshots.trigger(result["detections"])
            if trigger is None:
                continue
            try:
                document = self.snapshots.take(item.data.pixels, result["detections"], trigger, model=self.name,
                                               seq=seq, ts=item.ts, channel_order=self.card.input.channel_order)
                if document is not None:
                    self._publish_snapshot(self.name, json.dumps(document).encode())
            except Exception as exc:  # a snapshot is a courtesy: it never stops the stream
                self._failed("snapshot_failed", exc, 0)

    def _failed(self, reason: str, exc: Exception, windows: int) -> None:
        first = reason not in self._logged  # a traceback the first time; a failure that repeats is one line each
        self._logged.add(reason)
        log.error("model %s: %s for %d window(s): %s: %s", self.name, reason.replace("_", " "), windows,
                  type(exc).__name__, exc, exc_info=exc if first else None)
        self.stats.count_invalid(reason)
        self._report(reason, f"{type(exc).__name__}: {exc}")

    def _close_retired(self) -> None:
        """Close the models a reload swapped out; only between batches (or with no worker thread)."""
        with self._lock:
            retired, self._retired = self._retired, []
        for model in retired:
            _close(model, self.name)

    def _loop(self) -> None:
        """The worker thread: it must never die, whatever a batch, the spool or the error reporter raises."""
        try:
            while True:
                try:
                    batch = self._take_batch()
                    if batch is None:
                        return
                    if batch:
                        self._run_batch(batch)
                except Exception:  # a bug in the loop itself: log it, keep serving
                    log.exception("model %s: worker error", self.name)
                    time.sleep(0.1)  # do not spin if it repeats
                finally:
                    self._busy = False
                    self._close_retired()
        finally:
            with self._lock:
                self._loop_running = False
                retired, self._retired = self._retired, []
            for model in retired:
                _close(model, self.name)

    def health(self, advance: bool = True) -> dict:
        """This model's part of the stats document: counters, queue, the backend that runs it and drift."""
        choice = self.model.choice
        return {
            **self.stats.snapshot(advance=advance),
            "queue_depth": self.queue_depth,
            "backend": choice.active,
            "degraded": choice.degraded,
            "degraded_reason": choice.reason,
            "source": self.config.source.type,
            **({"state": self.stream_state.describe()} if self.stream_state is not None else {}),
            **({"detections": self._detection_health()} if self.decoder is not None else {}),
            "drift": self.drift.summary(),
        }

    def _detection_health(self) -> dict:
        """Detector counters for `stats`: frames with something found, detections by label, snapshots."""
        health = {"frames_with_detections": self.frames_with_detections, "by_label": dict(self.detections)}
        if self.snapshots is not None:
            health["snapshots"] = self.snapshots.describe()
        return health

    def describe(self) -> dict:
        return {**self.model.describe(), "source": self.config.source.type,
                "drift": "enabled" if self.drift.enabled else f"off: {self.drift.unavailable}"}


def _close(model: LoadedModel, name: str) -> None:
    try:
        model.close()
    except Exception:
        log.exception("model %s: closing the replaced model failed", name)


def _same_window(old, new) -> bool:
    """The sliding window's buffered raw samples are still valid for the new input."""
    return (isinstance(old, TimeSeriesInput | AudioInput) and type(old) is type(new)
            and (old.window, old.hop, old.channels, old.rate_hz) == (new.window, new.hop, new.channels, new.rate_hz))


_INPUT_FIELDS = {
    "timeseries": ("window", "hop", "channels", "rate_hz", "layout"),
    "image": ("height", "width", "channels", "layout"),
    "features": ("features",),
    "audio": ("window", "hop", "rate_hz"),  # a front end's features are computed per batch: they may change
}


def input_differences(old, new) -> list[str]:
    """What differs between two card inputs that a reload cannot carry over (empty: compatible).

    The queued windows were cut for the running model's input, so kind and shape must stay; normalisation,
    names and scaling may change (they are applied per batch, in preprocessing).
    """
    if old.kind != new.kind:
        return [f"input kind {new.kind}, the running model takes {old.kind}"]
    return [f"{field} {getattr(new, field)!r}, the running model has {getattr(old, field)!r}"
            for field in _INPUT_FIELDS[old.kind] if getattr(old, field) != getattr(new, field)]
