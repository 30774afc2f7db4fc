"""A recurrent model with a constant input in the real ModelWorker on onnxruntime: the card's constant fed on every
call, the state carried from window to window of the stream and started over after a gap or when time goes
back, one window at a time in stream order, and the resets in the model's stats. The model is the accumulator of
tests/support/stateful_model.py (a real graph whose outputs are computed by hand here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.board import load_board
from edge_runtime.config import ModelConfig
from edge_runtime.model_loader import ModelLoadError, load_bundle_model
from edge_runtime.model_worker import ModelWorker
from edge_runtime.stream import SampleBlock
from tests.support.daemon import wait_until
from tests.support.stateful_model import WINDOW, expected_totals, write_accumulator_bundle

K, RATE = 3, 8  # the constant, and the stream's sample rate (a window every 0.5 s)


class Published:
    """The worker's publish callable: every payload."""

    def __init__(self):
        self.payloads: list[bytes] = []

    def __call__(self, model: str, payloads: list[bytes]) -> None:
        self.payloads.extend(payloads)

    def count(self) -> int:
        return len(self.payloads)


class Errors:
    def __init__(self):
        self.reports: list[tuple[str, str]] = []

    def report(self, reason: str, detail: str, *, model: str | None = None, source: str | None = None) -> None:
        self.reports.append((reason, detail))


def load(path):
    return load_bundle_model(path, name=None, backends=None, board=load_board("x86_64"), trusted_keys=None,
                             require_signature=False)


@pytest.fixture
def accumulator(tmp_path):
    model = load(write_accumulator_bundle(tmp_path / "accumulator.bundle", k=K, rate_hz=RATE, threshold=10.0))
    yield model
    model.close()


def start_worker(model, **config) -> tuple[ModelWorker, Published]:
    published = Published()
    next_seq = [0]

    def reserve_seqs(name: str, count: int) -> range:
        next_seq[0] += count
        return range(next_seq[0] - count, next_seq[0])

    worker = ModelWorker(model, ModelConfig.model_validate({"bundle": "a.bundle", "source": {
        "type": "replay", "path": "a.wav"}, **config}), publish=published, reserve_seqs=reserve_seqs, errors=Errors())
    worker.start()
    return worker, published


def block(values: np.ndarray, start_ts: float) -> SampleBlock:
    return SampleBlock(ts=start_ts + np.arange(len(values)) / RATE, values=values.astype(np.float32)[:, None])


def totals(published: Published) -> list[dict]:
    return [json.loads(payload) for payload in published.payloads]


def test_state_is_carried_and_the_constant_fed(accumulator):
    samples = np.random.default_rng(0).normal(size=WINDOW * 12).astype(np.float32)
    worker, published = start_worker(accumulator, max_batch=32)
    try:
        for start in range(0, len(samples), 10):  # blocks that do not line up with windows
            worker.accept(block(samples[start:start + 10], 100.0 + start / RATE))
        assert wait_until(lambda: published.count() == 12, 10)
    finally:
        worker.stop()
    got = [message["values"][0] for message in totals(published)]
    assert got == pytest.approx(expected_totals(samples, K), rel=1e-5, abs=1e-5)
    # the threshold on the card's regression output: a decision on every prediction
    assert [message["decision"] for message in totals(published)] == [value >= 10.0 for value in got]
    assert worker.health()["state"] == {"inputs": ["state"], "reset_gap_s": 4 * WINDOW / RATE,
                                        "resets": {"gap": 0, "time_back": 0, "non_finite": 0}}


def test_state_starts_over_after_a_gap_and_when_time_goes_back(accumulator):
    samples = np.ones(WINDOW * 9, dtype=np.float32)
    worker, published = start_worker(accumulator, state_reset_gap_s=1.0)
    try:
        worker.accept(block(samples[:WINDOW * 3], 100.0))  # windows 0-2, then a 5 s pause
        worker.accept(block(samples[WINDOW * 3:WINDOW * 6], 106.0))  # windows 3-5: the total starts over
        assert wait_until(lambda: published.count() == 6, 10)
    finally:
        worker.stop()
    got = [message["values"][0] for message in totals(published)]
    assert got == pytest.approx(expected_totals(samples[:WINDOW * 6], K, resets_before={3}))
    assert worker.health()["state"]["resets"] == {"gap": 1, "time_back": 0, "non_finite": 0}
    assert worker.health()["state"]["reset_gap_s"] == 1.0


def test_a_window_that_leaves_a_nan_state_is_dropped_and_the_state_starts_over(accumulator):
    samples = np.ones(WINDOW * 6, dtype=np.float32)
    samples[WINDOW * 3] = np.nan  # window 3 makes the total, and so the carried state, NaN
    worker, published = start_worker(accumulator)
    try:
        worker.accept(block(samples, 100.0))
        assert wait_until(lambda: worker.health()["state"]["resets"]["non_finite"] == 1 and published.count() == 5,
                          10)
    finally:
        worker.stop()
    got = [message["values"][0] for message in totals(published)]
    clean = np.delete(samples, np.arange(WINDOW * 3, WINDOW * 4))  # the NaN window is counted, not published
    assert got == pytest.approx(expected_totals(clean, K, resets_before={3}))  # the total starts over after it


def test_a_stateful_model_runs_one_window_at_a_time_in_order(accumulator):
    calls = []
    run = accumulator.run
    accumulator.run = lambda inputs: calls.append({name: np.array(value) for name, value in inputs.items()}) or run(
        inputs)
    samples = np.arange(WINDOW * 5, dtype=np.float32)
    worker, published = start_worker(accumulator, max_batch=32)
    try:
        worker.accept(block(samples, 100.0))  # one block, five windows queued together
        assert wait_until(lambda: published.count() == 5, 10)
    finally:
        worker.stop()
    assert [len(call["x"]) for call in calls] == [1] * 5
    assert all(call["k"].dtype == np.int64 and call["k"].shape == () and call["k"] == K for call in calls)
    assert [call["x"][0, 0] for call in calls] == [0, 4, 8, 12, 16]  # stream order
    # each call is fed the state the previous one produced (zeros first)
    assert [float(call["state"][0, 0]) for call in calls] == pytest.approx([0.0, *expected_totals(samples, K)[:-1]])


def test_state_starts_over_when_time_goes_back(tmp_path):
    """A stream whose clock stepped back (the window follows the new timeline) starts the state over too."""
    model = load(write_accumulator_bundle(tmp_path / "a.bundle", k=2, rate_hz=RATE))
    worker, published = start_worker(model)
    try:
        worker.accept(block(np.ones(WINDOW * 2, np.float32), 100.0))
        assert wait_until(lambda: published.count() == 2, 10)
        worker.window.resync_after = 1  # follow the new timeline at once (the window's own resync rule)
        worker.accept(block(np.ones(WINDOW, np.float32), 50.0))
        assert wait_until(lambda: published.count() == 3, 10)
    finally:
        worker.stop()
        model.close()
    assert [message["values"][0] for message in totals(published)] == [8.0, 16.0, 8.0]
    assert worker.health()["state"]["resets"]["time_back"] == 1


def test_a_card_that_leaves_a_model_input_undescribed_is_refused_at_load(tmp_path, monkeypatch):
    from tests.support import stateful_model

    card = stateful_model.accumulator_card()
    del card["constants"]
    monkeypatch.setattr(stateful_model, "accumulator_card", lambda *args: card)
    with pytest.raises(ModelLoadError, match="model input 'k' is not described by the card"):
        load(write_accumulator_bundle(tmp_path / "a.bundle"))
