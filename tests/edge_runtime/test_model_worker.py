"""ModelWorker in-process, with a fake model: backpressure, a worker thread that survives failures, reload swaps
(shape check, kept window, old model closed only after its batch), locking against `accept`, the image queue cap."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge_runtime.card import ModelCard
from edge_runtime.config import ModelConfig
from edge_runtime.model_worker import IMAGE_QUEUE_MAX, ModelWorker
from edge_runtime.stream import ImageFrame, SampleBlock
from tests.support.daemon import wait_until

TIMEOUT = 10.0

TIME_SERIES = {"kind": "timeseries", "window": 10, "hop": 5, "rate_hz": 10.0, "channels": 3}
IMAGE = {"kind": "image", "height": 8, "width": 8, "channels": 3}
FEATURES = {"kind": "features", "features": 3}


def card(input_spec: dict, **changes) -> ModelCard:
    return ModelCard.model_validate({"name": "fake", "labels": ["a", "b"], "input": {**input_spec, **changes}})


class FakeModel:
    """What ModelWorker uses of a LoadedModel; `run` can be slowed down or held at a gate."""

    def __init__(self, model_card: ModelCard, *, delay: float = 0.0, gate: threading.Event | None = None,
                 version: str = "1", max_batch: int | None = None):
        self.name = "fake"
        self.card = model_card
        self.choice = SimpleNamespace(backend=SimpleNamespace(max_batch=max_batch), active="fake:cpu",
                                      degraded=False, reason=None)
        self.input_name, self.output_name = "x", "y"
        self.bundle = SimpleNamespace(manifest=SimpleNamespace(version=version, reference={}),
                                      path=Path(f"fake-{version}.bundle"))
        self.delay, self.gate = delay, gate
        self.entered = threading.Event()  # a batch is running
        self.running = False
        self.closed = threading.Event()
        self.closed_while_running = False
        self.batches: list[np.ndarray] = []

    def run(self, inputs: dict) -> dict:
        if self.closed.is_set():
            raise RuntimeError("run on a closed model")
        self.running = True
        try:
            self.entered.set()
            if self.gate is not None:
                assert self.gate.wait(TIMEOUT), "the test never opened the gate"
            if self.delay:
                time.sleep(self.delay)
            x = inputs["x"]
            self.batches.append(x)
            return {"y": np.tile(np.array([[0.2, 0.8]], dtype=np.float32), (len(x), 1))}
        finally:
            self.running = False

    def close(self) -> None:
        self.closed_while_running = self.closed_while_running or self.running
        self.closed.set()

    def describe(self) -> dict:
        return {"name": self.name, "version": self.bundle.manifest.version}


class Published:
    """The worker's publish callable: records every payload; can fail for the first calls."""

    def __init__(self, fail_first: int = 0):
        self.payloads: list[bytes] = []
        self.calls = 0
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, model: str, payloads: list[bytes]) -> None:
        with self.lock:
            self.calls += 1
            if self.calls <= self.fail_first:
                raise sqlite3.OperationalError("database or disk is full")
            self.payloads.extend(payloads)

    def count(self) -> int:
        with self.lock:
            return len(self.payloads)


class Errors:
    """The worker's ErrorReporter; `raises` makes report() fail like a publish to a full spool would."""

    def __init__(self, raises: bool = False):
        self.reports: list[tuple[str, str]] = []
        self.raises = raises

    def report(self, reason: str, detail: str, *, model: str | None = None, source: str | None = None) -> None:
        self.reports.append((reason, detail))
        if self.raises:
            raise sqlite3.OperationalError("database or disk is full")


def make_worker(model: FakeModel, *, source: str = "mqtt", queue_size: int = 1024, max_batch: int = 32,
                publish: Published | None = None, errors: Errors | None = None) -> ModelWorker:
    sources = {"mqtt": {"type": "mqtt", "topic": "sensors/x"}, "replay": {"type": "replay", "path": "rec.csv"},
               "folder": {"type": "folder", "path": "images"}}
    config = ModelConfig.model_validate({"bundle": "fake.bundle", "source": sources[source],
                                         "queue_size": queue_size, "max_batch": max_batch})
    next_seq = [0]

    def reserve_seqs(name: str, count: int) -> range:
        first, next_seq[0] = next_seq[0], next_seq[0] + count
        return range(first, first + count)

    return ModelWorker(model, config, publish=publish or Published(), reserve_seqs=reserve_seqs,
                       errors=errors or Errors())


def samples(count: int, start_ts: float = 1000.0, channels: int = 3) -> SampleBlock:
    ts = start_ts + np.arange(count, dtype=np.float64) / 10.0
    values = np.arange(count * channels, dtype=np.float32).reshape(count, channels)
    return SampleBlock(ts=ts, values=values)


@pytest.fixture
def workers():
    """Workers made by a test are stopped afterwards, whatever happens."""
    made: list[ModelWorker] = []
    yield made
    for worker in made:
        worker.stop(drain=False, timeout=5)


# -- finding 1: a replay waits, it does not lose windows ------------------------------------------------------------
def test_replay_block_larger_than_the_queue_waits_instead_of_dropping(workers):
    publish = Published()
    worker = make_worker(FakeModel(card(TIME_SERIES), delay=0.005), source="replay", queue_size=8, max_batch=4,
                         publish=publish)
    workers.append(worker)
    worker.start()
    worker.accept(samples(10 + 49 * 5))  # one block: 50 windows of 10 samples, hop 5
    assert wait_until(lambda: publish.count() == 50, TIMEOUT), publish.count()
    assert worker.stats.snapshot()["dropped"] == 0
    assert worker.stats.snapshot()["windows"] == 50


def test_live_source_still_drops_the_oldest_beyond_the_queue():
    errors = Errors()
    worker = make_worker(FakeModel(card(TIME_SERIES)), source="mqtt", queue_size=8, errors=errors)
    worker.accept(samples(10 + 49 * 5))  # not started: nothing is taken from the queue
    assert worker.queue_depth == 8
    assert worker.stats.snapshot()["dropped"] == 42
    assert [reason for reason, _ in errors.reports] == ["queue_full"]


# -- finding 2: the worker thread never dies ------------------------------------------------------------------------
def test_worker_survives_a_failing_publish_and_a_failing_error_report(workers):
    publish = Published(fail_first=1)
    errors = Errors(raises=True)  # the errors topic goes through the same full spool
    worker = make_worker(FakeModel(card(FEATURES)), publish=publish, errors=errors)
    workers.append(worker)
    worker.start()
    worker.accept(SampleBlock(ts=np.array([1.0]), values=np.ones((1, 3), dtype=np.float32)))
    assert wait_until(lambda: publish.calls >= 1 and errors.reports, TIMEOUT)
    assert errors.reports[0][0] == "publish_failed"
    worker.accept(SampleBlock(ts=np.array([2.0, 3.0]), values=np.ones((2, 3), dtype=np.float32)))
    assert wait_until(lambda: publish.count() == 2, TIMEOUT), "the worker stopped publishing after a failure"
    assert worker.alive
    assert worker.stats.snapshot()["invalid_by_reason"] == {"publish_failed": 1}


def test_worker_survives_a_failing_model_and_a_failing_error_report(workers):
    model = FakeModel(card(FEATURES))
    publish = Published()
    worker = make_worker(model, publish=publish, errors=Errors(raises=True))
    workers.append(worker)
    original_run = model.run
    calls = []

    def run_failing_once(inputs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("delegate crashed")
        return original_run(inputs)

    model.run = run_failing_once
    worker.start()
    worker.accept(SampleBlock(ts=np.array([1.0]), values=np.ones((1, 3), dtype=np.float32)))
    assert wait_until(lambda: len(calls) == 1, TIMEOUT)
    worker.accept(SampleBlock(ts=np.array([2.0]), values=np.ones((1, 3), dtype=np.float32)))
    assert wait_until(lambda: publish.count() == 1, TIMEOUT)
    assert worker.alive


# -- finding 3: reload ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "new_spec", "expected"),
    [
        (TIME_SERIES, {**TIME_SERIES, "window": 20}, "window"),
        (TIME_SERIES, {**TIME_SERIES, "hop": 10}, "hop"),
        (TIME_SERIES, {**TIME_SERIES, "channels": 4}, "channels"),
        (TIME_SERIES, {**TIME_SERIES, "rate_hz": 50.0}, "rate_hz"),
        (TIME_SERIES, {**TIME_SERIES, "layout": "channels_last"}, "layout"),
        (IMAGE, {**IMAGE, "height": 16}, "height"),
        (IMAGE, {**IMAGE, "width": 16}, "width"),
        (IMAGE, {**IMAGE, "channels": 1, "channel_order": "gray"}, "channels"),
        (IMAGE, {**IMAGE, "layout": "nhwc"}, "layout"),
        (FEATURES, {**FEATURES, "features": 4}, "features"),
        (TIME_SERIES, FEATURES, "kind"),
    ],
)
def test_swap_refuses_an_input_of_another_shape(spec, new_spec, expected):
    old = FakeModel(card(spec))
    new = FakeModel(card(new_spec), version="2")
    worker = make_worker(old)
    with pytest.raises(ValueError, match=expected):
        worker.swap(new)
    assert worker.model is old and worker.card is old.card
    assert not old.closed.is_set()


def test_swap_keeps_the_buffered_samples_when_only_normalisation_changes():
    old = FakeModel(card(TIME_SERIES))
    worker = make_worker(old)
    worker.accept(samples(8))  # 8 of the 10 samples of the first window
    assert worker.queue_depth == 0
    normalized = card(TIME_SERIES, normalize={"mean": [1.0, 2.0, 3.0], "std": [2.0, 2.0, 2.0]})
    worker.swap(FakeModel(normalized, version="2"))
    worker.accept(samples(2, start_ts=1000.8))
    assert worker.queue_depth == 1, "the window was reset by a reload that only changed normalisation"


def test_swap_closes_the_old_model_only_after_the_batch_running_on_it(workers):
    gate = threading.Event()
    old = FakeModel(card(FEATURES), gate=gate)
    publish = Published()
    worker = make_worker(old, publish=publish)
    workers.append(worker)
    worker.start()
    worker.accept(SampleBlock(ts=np.array([1.0]), values=np.ones((1, 3), dtype=np.float32)))
    assert old.entered.wait(TIMEOUT)
    new = FakeModel(card(FEATURES), version="2")
    worker.swap(new)  # while the old model is in the middle of a batch
    assert not old.closed.is_set(), "the old model was closed under a running batch"
    gate.set()
    assert old.closed.wait(TIMEOUT), "the retired model was never closed"
    assert not old.closed_while_running
    assert wait_until(lambda: publish.count() == 1, TIMEOUT)
    worker.accept(SampleBlock(ts=np.array([2.0]), values=np.ones((1, 3), dtype=np.float32)))
    assert wait_until(lambda: publish.count() == 2, TIMEOUT)
    assert len(new.batches) == 1 and not new.closed.is_set()


def test_swap_on_an_idle_worker_closes_the_old_model_soon(workers):
    old = FakeModel(card(FEATURES))
    worker = make_worker(old)
    workers.append(worker)
    worker.start()
    worker.swap(FakeModel(card(FEATURES), version="2"))
    assert old.closed.wait(TIMEOUT)


def test_swap_before_start_closes_the_old_model_at_once():
    old = FakeModel(card(FEATURES))
    worker = make_worker(old)
    worker.swap(FakeModel(card(FEATURES), version="2"))
    assert old.closed.is_set()


# -- finding 4: preprocessing and images do not hold the lock accept() needs ----------------------------------------
class BlockingPreprocessor:
    def __init__(self, inner, gate: threading.Event):
        self.inner, self.gate = inner, gate
        self.entered = threading.Event()

    def time_series(self, windows):
        self.entered.set()
        assert self.gate.wait(TIMEOUT), "the test never opened the gate"
        return self.inner.time_series(windows)


def test_accept_does_not_wait_for_preprocessing(workers):
    gate = threading.Event()
    publish = Published()
    worker = make_worker(FakeModel(card(TIME_SERIES)), publish=publish)
    workers.append(worker)
    slow = BlockingPreprocessor(worker.preprocess, gate)
    worker.preprocess = slow
    worker.start()
    try:
        worker.accept(samples(10))
        assert slow.entered.wait(TIMEOUT)
        accepted = threading.Event()
        thread = threading.Thread(target=lambda: (worker.accept(samples(5, start_ts=1001.0)), accepted.set()),
                                  daemon=True)
        thread.start()
        assert accepted.wait(5), "accept() waited for the preprocessing of a batch"
    finally:
        gate.set()
    assert wait_until(lambda: publish.count() == 2, TIMEOUT)


def test_image_frames_are_accepted_without_the_window_lock():
    worker = make_worker(FakeModel(card(IMAGE)))
    frame = ImageFrame(ts=1.0, pixels=np.zeros((8, 8, 3), dtype=np.uint8))
    accepted = threading.Event()
    with worker._lock:  # e.g. a reload swapping the model, or a time-series cut
        thread = threading.Thread(target=lambda: (worker.accept(frame), accepted.set()), daemon=True)
        thread.start()
        assert accepted.wait(5), "an image frame waited for the window lock"
    assert worker.queue_depth == 1


# -- finding 5: an image model's queue is capped ---------------------------------------------------------------------
def test_image_queue_holds_at_most_image_queue_max_frames():
    worker = make_worker(FakeModel(card(IMAGE)), queue_size=1024)
    assert worker.capacity == IMAGE_QUEUE_MAX == 64
    for index in range(100):
        worker.accept(ImageFrame(ts=float(index), pixels=np.zeros((8, 8, 3), dtype=np.uint8)))
    assert worker.queue_depth == 64
    assert worker.stats.snapshot()["dropped"] == 36


def test_image_queue_cap_keeps_a_smaller_queue_size_and_spares_time_series():
    assert make_worker(FakeModel(card(IMAGE)), queue_size=10).capacity == 10
    assert make_worker(FakeModel(card(TIME_SERIES)), queue_size=1024).capacity == 1024


def test_folder_of_images_waits_for_room_in_the_capped_queue(workers):
    publish = Published()
    worker = make_worker(FakeModel(card(IMAGE), delay=0.002), source="folder", queue_size=1024, publish=publish)
    workers.append(worker)
    worker.start()
    for index in range(150):
        worker.accept(ImageFrame(ts=float(index), pixels=np.zeros((8, 8, 3), dtype=np.uint8)))
        assert worker.queue_depth <= IMAGE_QUEUE_MAX
    assert wait_until(lambda: publish.count() == 150, TIMEOUT)
    assert worker.stats.snapshot()["dropped"] == 0


def test_a_source_that_waits_queues_one_batch_of_frames_not_image_queue_max(workers):
    """Frames can be megabytes: a waiting source loses nothing by waiting once a full batch is queued."""
    publish = Published()
    worker = make_worker(FakeModel(card(IMAGE), delay=0.002), source="folder", max_batch=2, publish=publish)
    workers.append(worker)
    assert worker.capacity == IMAGE_QUEUE_MAX
    worker.start()
    for index in range(40):
        worker.accept(ImageFrame(ts=float(index), pixels=np.zeros((8, 8, 3), dtype=np.uint8)))
        assert worker.queue_depth <= 2
    assert wait_until(lambda: publish.count() == 40, TIMEOUT)
    assert worker.stats.snapshot()["dropped"] == 0


# -- finding 6: stopping a worker that never started ----------------------------------------------------------------
def test_stop_of_a_worker_that_never_started_does_not_raise():
    worker = make_worker(FakeModel(card(FEATURES)))
    worker.stop(drain=True, timeout=1.0)
    assert not worker.alive
