"""The synthetic source: deterministic sines plus noise at the card's rate, paced like a replay."""

from __future__ import annotations

import time

import numpy as np

from edge_runtime.sources.synthetic import SyntheticSource, SyntheticSourceConfig
from edge_runtime.window import SlidingWindow


def synthetic(context, **options) -> SyntheticSource:
    return SyntheticSource(SyntheticSourceConfig(type="synthetic", **options), context)


def run(source, sink) -> None:
    source.start()
    sink.wait_until(lambda: source.finished)
    source.stop()


def test_speed_0_with_duration_delivers_exactly_the_samples(sink, make_context):
    before = time.time()
    run(synthetic(make_context(), duration_s=1.0, speed=0), sink)
    values, ts = sink.values(), sink.ts()
    assert values.shape == (100, 3) and values.dtype == np.float32
    assert before <= ts[0] <= time.time()
    np.testing.assert_allclose(np.diff(ts), 0.01, atol=1e-6)
    assert {len(block) for block in sink.blocks} == {10}  # hop-sized blocks
    assert np.abs(values).max() < 2.0 and values.std() > 0.3  # sines of amplitude 1 plus a little noise


def test_same_seed_same_values_other_seed_other_values(make_context, sink):
    other_sink = type(sink)()
    run(synthetic(make_context(), duration_s=0.5, speed=0, seed=7), sink)
    run(synthetic(make_context(sink=other_sink), duration_s=0.5, speed=0, seed=7), other_sink)
    np.testing.assert_array_equal(sink.values(), other_sink.values())
    third = type(sink)()
    run(synthetic(make_context(sink=third), duration_s=0.5, speed=0, seed=8), third)
    assert not np.allclose(sink.values(), third.values())


def test_values_do_not_depend_on_how_blocks_are_cut(make_context):
    source = synthetic(make_context())
    whole = source.generate(np.random.default_rng(3), 0, 50)
    rng = np.random.default_rng(3)
    pieces = np.concatenate([source.generate(rng, 0, 7), source.generate(rng, 7, 30), source.generate(rng, 37, 13)])
    np.testing.assert_array_equal(whole, pieces)


def test_channels_have_different_frequencies(make_context, timeseries_card):
    source = synthetic(make_context(timeseries_card(channels=4, rate_hz=200)))
    assert len(set(source.frequencies.tolist())) == 4
    assert source.frequencies.max() <= 0.1 * 200  # at least 10 samples per cycle


def test_config_rate_wins_and_paced_run_feeds_a_window(make_context, sink):
    source = synthetic(make_context(), rate_hz=400, duration_s=0.5, speed=10)  # 200 samples in ~0.05 s
    run(source, sink)
    assert sink.samples() == 200
    np.testing.assert_allclose(np.diff(sink.ts()), 1 / 400, atol=1e-6)
    window = SlidingWindow(window=50, hop=10, channels=3)
    assert sum(len(window.push(block)) for block in sink.blocks) == 16


def test_runs_until_stopped_without_duration(make_context, sink):
    source = synthetic(make_context(), speed=0)
    source.start()
    sink.wait_until(lambda: sink.samples() >= 1000)
    source.stop()
    assert not source.finished
