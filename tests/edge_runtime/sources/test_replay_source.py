"""Replaying CSV and NPZ recordings: every sample in order, rebased time, pacing, looping and file errors."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from edge_runtime.sources.pacing import TICK_S
from edge_runtime.sources.replay import ReplaySource, ReplaySourceConfig


def replay(context, path, **options) -> ReplaySource:
    return ReplaySource(ReplaySourceConfig(type="replay", path=path, **options), context)


def write_csv(path, rows: int = 95, with_ts: bool = True, start_ts: float = 500.0, rate_hz: float = 100.0):
    header = (["ts"] if with_ts else []) + ["ax", "ay", "az", "label"]
    lines = [",".join(header)]
    for i in range(rows):
        cells = ([f"{start_ts + i / rate_hz:.6f}"] if with_ts else []) + [str(i), str(-i), str(i / 4), "walk"]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def run_to_end(source: ReplaySource, sink, timeout: float = 10.0) -> float:
    started = time.monotonic()
    source.start()
    sink.wait_until(lambda: source.finished, timeout)
    source.stop()
    return time.monotonic() - started


def test_csv_at_speed_0_delivers_every_sample_in_order(tmp_path, sink, make_context):
    source = replay(make_context(), write_csv(tmp_path / "walk.csv"), speed=0)
    before = time.time()
    run_to_end(source, sink)
    values, ts = sink.values(), sink.ts()
    assert values.shape == (95, 3) and values.dtype == np.float32
    np.testing.assert_array_equal(values[:, 0], np.arange(95))
    np.testing.assert_array_equal(values[:, 2], np.arange(95) / 4)
    assert before <= ts[0] <= time.time()  # rebased to the wall clock at start
    np.testing.assert_allclose(np.diff(ts), 0.01, atol=1e-6)  # the recorded spacing is kept
    assert [len(block) for block in sink.blocks] == [10] * 9 + [5]  # hop-sized blocks
    assert sink.rejections == []


def test_csv_without_timestamps_uses_the_card_rate(tmp_path, sink, make_context, timeseries_card):
    source = replay(make_context(timeseries_card(rate_hz=50.0)), write_csv(tmp_path / "a.csv", with_ts=False),
                    speed=0)
    run_to_end(source, sink)
    np.testing.assert_allclose(np.diff(sink.ts()), 0.02, atol=1e-6)


def test_csv_columns_pick_and_order_the_channels(tmp_path, sink, make_context, timeseries_card):
    source = replay(make_context(timeseries_card(channels=2)), write_csv(tmp_path / "a.csv", rows=5), speed=0,
                    columns=["az", "ax"])
    run_to_end(source, sink)
    np.testing.assert_array_equal(sink.values(), [[i / 4, i] for i in range(5)])


def test_npz_with_values_and_ts(tmp_path, sink, make_context):
    values = np.random.default_rng(1).normal(size=(37, 3))
    np.savez(tmp_path / "rec.npz", values=values, ts=1e9 + np.arange(37) * 0.02)
    run_to_end(replay(make_context(), tmp_path / "rec.npz", speed=0), sink)
    np.testing.assert_allclose(sink.values(), values.astype(np.float32))
    np.testing.assert_allclose(np.diff(sink.ts()), 0.02, atol=1e-6)


def test_npz_with_x_only(tmp_path, sink, make_context):
    np.savez(tmp_path / "rec.npz", x=np.arange(30, dtype=np.float32).reshape(10, 3))
    run_to_end(replay(make_context(), tmp_path / "rec.npz", speed=0), sink)
    np.testing.assert_array_equal(sink.values().ravel(), np.arange(30))
    np.testing.assert_allclose(np.diff(sink.ts()), 0.01, atol=1e-6)


class FakeClock:
    """Monotonic time that moves only when the source waits: pacing is checked exactly, however busy the machine."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False  # not stopped


class ClockedSink:
    """Forwards to the test's sink and notes the fake time of each delivery."""

    def __init__(self, sink, clock: FakeClock) -> None:
        self.sink, self.clock = sink, clock
        self.times: list[float] = []

    def accept(self, item) -> None:
        self.times.append(self.clock.now)
        self.sink.accept(item)

    def reject(self, rejected, source) -> None:
        self.sink.reject(rejected, source)


def test_speed_20_takes_the_recorded_time_over_20(tmp_path, sink, make_context):
    # 200 samples at 100 Hz = 2 s of data -> 0.1 s at 20x
    clock = FakeClock()
    clocked = ClockedSink(sink, clock)
    source = ReplaySource(ReplaySourceConfig(type="replay", path=write_csv(tmp_path / "a.csv", rows=201), speed=20),
                          make_context(sink=clocked), clock=clock, wait=clock.wait)
    run_to_end(source, sink)
    elapsed = clock.now
    assert 0.1 - 1e-9 <= elapsed <= 0.1 + TICK_S + 1e-9  # the last sample waited for, and not a tick more
    np.testing.assert_array_equal(sink.values()[:, 0], np.arange(201))
    assert 1 < len(sink.blocks) < 150  # samples due together go out together, not one sleep per sample
    np.testing.assert_allclose(np.diff(sink.ts()), 0.01, atol=1e-6)  # data time, not wall time
    assert all(wait >= TICK_S for wait in clock.waits)  # never a sleep per sample
    previous = -1.0
    for block, delivered in zip(sink.blocks, clocked.times, strict=True):
        due = block.values[:, 0].astype(np.float64) / 2000  # sample i is at i / 100 s of data: due at i / 2000 s
        assert due.max() <= delivered + 1e-9, "a sample went out before it was due"
        # (a sample due exactly at a delivery may fall either side of it by float rounding: 1 us of slack)
        assert due.min() > previous - 1e-6, "a sample that was due at the previous delivery waited for this one"
        previous = delivered
    assert clocked.times[0] == 0.0 and np.all(np.diff(clocked.times) >= TICK_S - 1e-9)


def test_speed_1_paces_each_sample_at_its_own_time(tmp_path, sink, make_context):
    """Slow enough that every sample has its own delivery: the waits are exactly the recorded spacing."""
    clock = FakeClock()
    clocked = ClockedSink(sink, clock)
    source = ReplaySource(ReplaySourceConfig(type="replay", path=write_csv(tmp_path / "a.csv", rows=5), speed=1),
                          make_context(sink=clocked), clock=clock, wait=clock.wait)
    run_to_end(source, sink)
    assert [len(block) for block in sink.blocks] == [1] * 5
    np.testing.assert_allclose(clock.waits, [0.01] * 4, atol=1e-9)
    np.testing.assert_allclose(clocked.times, [0.0, 0.01, 0.02, 0.03, 0.04], atol=1e-9)


def test_loop_keeps_ts_increasing(tmp_path, sink, make_context):
    source = replay(make_context(), write_csv(tmp_path / "a.csv", rows=20), speed=0, loop=True)
    source.start()
    sink.wait_until(lambda: sink.samples() >= 70)
    source.stop()
    assert not source.finished
    ts, values = sink.ts(), sink.values()
    assert (np.diff(ts) > 0).all()
    np.testing.assert_allclose(np.diff(ts), 0.01, atol=1e-6)  # one step between the last and the next first
    np.testing.assert_array_equal(values[:60, 0], np.tile(np.arange(20), 3))


def test_stop_ends_a_slow_replay_promptly(tmp_path, sink, make_context, caplog):
    # the next sample is due in 100 s: the thread can only end now if stop() interrupts the stop event's wait
    clock = FakeClock()
    source = ReplaySource(ReplaySourceConfig(type="replay", path=write_csv(tmp_path / "a.csv", rows=50),
                                             speed=0.0001), make_context(), clock=clock)
    source.start()
    sink.wait_until(lambda: sink.samples() >= 1)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.sources"):
        source.stop()
    assert source._thread is not None and not source._thread.is_alive(), "stop() waited for the pacing sleep"
    assert "still running" not in caplog.text
    assert sink.samples() == 1 and not source.finished


@pytest.mark.parametrize("content, words", [
    ("ts,ax,ay,az\n0,1,2,3\n0.01,1,oops,3\n", "line 3 column 'ay'"),
    ("ts,ax,ay,az\n0,1,2,3\n0.01,1,nan,3\n", "not a finite number"),
    ("ts,ax,ay,az\n0,1,2,3\n0.01,1,2\n", "line 3: 3 cells"),
    ("ts,ax,ay\n0,1,2\n", "2 value columns"),
    ("ts,ax,ay,az\n0,1,2,3\n0,1,2,3\n", "timestamps must increase"),
    ("ts,ax,ay,az\n", "at least one row"),
    ("", "header row"),
])
def test_bad_csv_is_a_clear_error_at_construction(tmp_path, make_context, content, words):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match="bad.csv") as info:
        replay(make_context(), path)
    assert words in str(info.value)


def test_named_columns_must_exist(tmp_path, make_context):
    path = write_csv(tmp_path / "a.csv", rows=3)
    with pytest.raises(ValueError, match="no column 'gx'.*columns: \\['ts', 'ax'"):
        replay(make_context(), path, columns=["ax", "gx", "az"])
    with pytest.raises(ValueError, match="no timestamp column 'time'"):
        replay(make_context(), path, timestamp_column="time")


def test_missing_wrong_and_garbage_files(tmp_path, make_context):
    with pytest.raises(ValueError, match="nothere.csv does not exist"):
        replay(make_context(), tmp_path / "nothere.csv")
    (tmp_path / "data.txt").write_text("1,2,3\n")
    with pytest.raises(ValueError, match=r"\.csv, \.npz or \.wav"):
        replay(make_context(), tmp_path / "data.txt")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip")
    with pytest.raises(ValueError, match="junk.npz: cannot read it as NPZ"):
        replay(make_context(), tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", y=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="'values' \\(or 'x'\\)"):
        replay(make_context(), tmp_path / "other.npz")
    np.savez(tmp_path / "shape.npz", values=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"\[3, 2\], expected \[n > 0, 3\]"):
        replay(make_context(), tmp_path / "shape.npz")
    np.savez(tmp_path / "ts.npz", values=np.zeros((3, 3)), ts=np.zeros(2))
    with pytest.raises(ValueError, match="'ts' has 2 values for 3 samples"):
        replay(make_context(), tmp_path / "ts.npz")


def test_stop_does_not_hang_on_a_sink_that_blocks_and_no_block_follows(tmp_path, make_context, caplog):
    """The model worker makes a replay wait for room in its queue: stop() must not wait for it forever."""
    release = threading.Event()
    entered = threading.Event()
    accepted: list[int] = []

    class BlockingSink:
        def accept(self, item) -> None:
            accepted.append(len(item))
            entered.set()
            release.wait(30)

        def reject(self, rejected, source) -> None:
            pass

    source = replay(make_context(sink=BlockingSink()), write_csv(tmp_path / "a.csv"), speed=0)
    source.stop_timeout_s = 0.2
    source.start()
    try:
        assert entered.wait(5)
        stopper = threading.Thread(target=source.stop)
        with caplog.at_level(logging.WARNING, logger="edge_runtime.sources"):
            stopper.start()
            stopper.join(5)
        assert not stopper.is_alive(), "stop() waited for a thread blocked in sink.accept"
        assert "still running" in caplog.text
    finally:
        release.set()
    source._thread.join(5)
    assert not source._thread.is_alive()
    assert accepted == [10] and not source.finished  # the stop flag was seen right after the blocked block
