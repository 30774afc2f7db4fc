"""A live camera's frames in the model worker: a one-frame mailbox. While the model runs, a newer frame replaces the
waiting one (counted as dropped, no error message), so the model always gets the newest frame and never falls
behind; a video file played as fast as the model goes waits for room instead and loses nothing."""

from __future__ import annotations

import json
import threading

import numpy as np

from edge_runtime.config import ModelConfig
from edge_runtime.model_worker import ModelWorker
from edge_runtime.stream import ImageFrame
from tests.edge_runtime.test_model_worker import IMAGE, TIMEOUT, Errors, FakeModel, Published, card
from tests.support.daemon import wait_until


def camera_worker(model: FakeModel, publish: Published, errors: Errors, **source) -> ModelWorker:
    config = ModelConfig.model_validate({"bundle": "fake.bundle", "queue_size": 1024,
                                         "source": {"type": "camera", "url": "/dev/video0", **source}})
    return ModelWorker(model, config, publish=publish, reserve_seqs=lambda name, count: range(count), errors=errors)


def frame(index: int) -> ImageFrame:
    return ImageFrame(ts=float(index), pixels=np.full((8, 8, 3), index, dtype=np.uint8))


def test_a_slow_model_gets_the_newest_frame_and_the_rest_are_counted_as_dropped():
    gate = threading.Event()
    model, publish, errors = FakeModel(card(IMAGE), gate=gate), Published(), Errors()
    worker = camera_worker(model, publish, errors)
    assert worker.capacity == 1
    worker.start()
    try:
        worker.accept(frame(0))
        assert model.entered.wait(TIMEOUT)  # frame 0 is being inferred, held at the gate
        for index in range(1, 10):
            worker.accept(frame(index))
            assert worker.queue_depth == 1  # never more than one frame waits
        gate.set()
        assert wait_until(lambda: publish.count() == 2 and worker.idle, TIMEOUT)
    finally:
        worker.stop(drain=False, timeout=5)
    assert [json.loads(payload)["ts"] for payload in publish.payloads] == [0.0, 9.0]  # the newest, not frame 1
    assert model.batches[1][0, 0, 0, 0] == np.float32(9 / 255)
    snapshot = worker.stats.snapshot()
    assert snapshot["dropped"] == 8 and snapshot["windows"] == 10 and snapshot["predictions"] == 2
    assert errors.reports == []  # dropping is what a camera source asks for, not an error


def test_a_file_played_as_fast_as_the_model_goes_loses_no_frame(tmp_path):
    model, publish, errors = FakeModel(card(IMAGE), delay=0.001), Published(), Errors()
    worker = camera_worker(model, publish, errors, url=str(tmp_path / "clip.mp4"), realtime=False)
    assert worker.capacity == 64
    worker.start()
    try:
        for index in range(100):
            worker.accept(frame(index))
        assert wait_until(lambda: publish.count() == 100, TIMEOUT)
    finally:
        worker.stop(drain=False, timeout=5)
    assert worker.stats.snapshot()["dropped"] == 0
