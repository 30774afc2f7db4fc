"""Sliding windows (counts, contents, ring buffer, ordering, gaps) and the card's normalisation and layouts."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest

from edge_runtime.card import ModelCard
from edge_runtime.stream import ImageFrame, InputRejected, SampleBlock
from edge_runtime.window import Preprocessor, SlidingWindow

HAS_PILLOW = importlib.util.find_spec("PIL") is not None


def stream(count: int, channels: int = 2, start: int = 0, rate_hz: float = 100.0) -> SampleBlock:
    """Samples whose value is their index (channel c adds 1000 * c), so a window's content says where it came from."""
    index = np.arange(start, start + count, dtype=np.float64)
    values = (index[:, None] + 1000 * np.arange(channels)[None, :]).astype(np.float32)
    return SampleBlock(ts=index / rate_hz, values=values)


def expected_window(end: int, window: int, channels: int = 2) -> np.ndarray:
    """The window whose newest sample is index end - 1."""
    return stream(window, channels, start=end - window).values


def test_100_samples_window_50_hop_10_gives_6_exact_windows():
    windows = SlidingWindow(window=50, hop=10, channels=2).push(stream(100))
    assert len(windows) == 6
    for k, (ts, window) in enumerate(windows):
        end = 50 + 10 * k
        assert window.dtype == np.float32 and window.shape == (50, 2)
        np.testing.assert_array_equal(window, expected_window(end, 50))
        assert ts == pytest.approx((end - 1) / 100.0)


def test_first_window_needs_window_samples():
    sliding = SlidingWindow(window=5, hop=2, channels=2)
    assert sliding.push(stream(4)) == []
    (ts, window), = sliding.push(stream(1, start=4))
    np.testing.assert_array_equal(window, expected_window(5, 5))
    assert sliding.push(stream(1, start=5)) == []
    assert len(sliding.push(stream(1, start=6))) == 1


@pytest.mark.parametrize("window, hop", [(7, 3), (8, 8), (4, 9), (1, 1), (50, 10)])
def test_ring_buffer_matches_slicing_over_many_uneven_pushes(window, hop):
    rng = np.random.default_rng(window * 100 + hop)
    sliding = SlidingWindow(window, hop, channels=2)
    total, got = 3000, []
    start = 0
    while start < total:
        count = int(min(rng.integers(1, 3 * window + 5), total - start))
        got += sliding.push(stream(count, start=start))
        start += count
    ends = list(range(window, total + 1, hop))
    assert len(got) == len(ends)
    for (ts, array), end in zip(got, ends, strict=True):
        np.testing.assert_array_equal(array, expected_window(end, window))
        assert ts == pytest.approx((end - 1) / 100.0)
    assert sliding._ring.shape == (window, 2)  # memory stays one window


def test_windows_are_copies_not_views_of_the_ring():
    sliding = SlidingWindow(window=3, hop=1, channels=2)
    windows = sliding.push(stream(5))
    np.testing.assert_array_equal(windows[0][1], expected_window(3, 3))


def test_out_of_order_block_is_rejected_and_the_stream_continues():
    sliding = SlidingWindow(window=4, hop=2, channels=2)
    assert sliding.push(stream(3)) == []
    with pytest.raises(InputRejected) as info:
        sliding.push(stream(3, start=1))  # starts before the last accepted sample
    assert info.value.reason == "out_of_order"
    with pytest.raises(InputRejected):
        sliding.push(stream(1, start=2))  # equal ts is not new either
    windows = sliding.push(stream(3, start=3))  # the stream goes on as if the bad blocks never came
    assert [ts for ts, _ in windows] == pytest.approx([0.03, 0.05])
    np.testing.assert_array_equal(windows[0][1], expected_window(4, 4))
    np.testing.assert_array_equal(windows[1][1], expected_window(6, 4))


def test_after_a_future_dated_glitch_the_window_resyncs_on_the_third_block(caplog):
    """One message stamped in milliseconds by mistake used to make every later block out_of_order, forever."""
    sliding = SlidingWindow(window=4, hop=2, channels=2)
    assert len(sliding.push(stream(6))) == 2  # 0.00 .. 0.05
    glitch = SampleBlock(ts=np.array([6000.0]), values=stream(1, start=6).values)  # ts in ms, not s
    assert sliding.push(glitch) == []  # in order when it comes: accepted
    for start in (7, 8):  # the next two normal blocks are still rejected and reported
        with pytest.raises(InputRejected) as info:
            sliding.push(stream(1, start=start))
        assert info.value.reason == "out_of_order"
    assert sliding.resyncs == 0
    with caplog.at_level(logging.WARNING, logger="edge_runtime.window"):
        assert sliding.push(stream(1, start=9)) == []  # the third is accepted: a new, emptied window
    assert sliding.resyncs == 1
    assert any("following the new timeline" in record.getMessage() for record in caplog.records)
    windows = sliding.push(stream(5, start=10))  # windows resume on the new timeline
    assert [ts for ts, _ in windows] == pytest.approx([0.12, 0.14])
    np.testing.assert_array_equal(windows[0][1], expected_window(13, 4))


def test_a_clock_stepped_back_resyncs_and_reports_through_the_callback():
    seen: list[tuple[float, float]] = []
    sliding = SlidingWindow(window=2, hop=1, channels=2, resync_after=2, on_resync=lambda *ts: seen.append(ts))
    sliding.push(stream(10, start=1000))  # 10.00 .. 10.09
    with pytest.raises(InputRejected):
        sliding.push(stream(2, start=0))
    assert len(sliding.push(stream(2, start=2))) == 1  # resync_after=2: the second block is accepted
    assert seen == [(pytest.approx(10.09), pytest.approx(0.02))] and sliding.resyncs == 1


def test_single_out_of_order_blocks_in_a_good_stream_never_resync():
    sliding = SlidingWindow(window=4, hop=2, channels=2)
    windows, start = [], 0
    for _ in range(10):
        windows += sliding.push(stream(4, start=start))
        start += 4
        with pytest.raises(InputRejected):
            sliding.push(stream(2, start=start - 3))  # a stray duplicate after every good block
    assert sliding.resyncs == 0
    assert len(windows) == 19
    np.testing.assert_array_equal(windows[-1][1], expected_window(40, 4))


def test_repeated_copies_of_one_old_block_are_not_a_new_timeline():
    sliding = SlidingWindow(window=2, hop=1, channels=2)
    sliding.push(stream(10))
    for _ in range(5):  # the same stale message again and again (e.g. redelivered): never adopted
        with pytest.raises(InputRejected):
            sliding.push(stream(2, start=3))
    assert sliding.resyncs == 0
    assert len(sliding.push(stream(1, start=10))) == 1


def test_ts_must_increase_within_a_block():
    sliding = SlidingWindow(window=2, hop=1, channels=2)
    block = stream(4)
    shuffled = SampleBlock(ts=block.ts[[0, 2, 1, 3]], values=block.values)
    with pytest.raises(InputRejected) as info:
        sliding.push(shuffled)
    assert info.value.reason == "out_of_order" and "sample 2" in info.value.detail
    assert len(sliding.push(stream(4))) == 3  # nothing of the rejected block was kept


def test_gap_between_blocks_resets_the_window():
    sliding = SlidingWindow(window=4, hop=2, channels=2, max_gap_s=0.5)
    assert len(sliding.push(stream(5))) == 1
    assert sliding.push(stream(3, start=100)) == []  # 1 s later: the 5 buffered samples are gone
    (ts, window), = sliding.push(stream(1, start=103))
    np.testing.assert_array_equal(window, expected_window(104, 4))


def test_gap_inside_a_block_resets_the_window():
    sliding = SlidingWindow(window=3, hop=1, channels=2, max_gap_s=0.05)
    before, after = stream(4), stream(4, start=50)
    joined = SampleBlock(ts=np.concatenate([before.ts, after.ts]), values=np.concatenate([before.values,
                                                                                           after.values]))
    windows = sliding.push(joined)
    ends = [ts for ts, _ in windows]
    assert ends == pytest.approx([0.02, 0.03, 0.52, 0.53])  # no window ends at 0.50 or 0.51: they would span it
    np.testing.assert_array_equal(windows[2][1], expected_window(53, 3))


def test_without_max_gap_a_pause_is_not_a_reset():
    sliding = SlidingWindow(window=4, hop=1, channels=2)
    sliding.push(stream(3))
    assert len(sliding.push(stream(1, start=1000))) == 1


def test_for_input_uses_the_card(timeseries_card):
    sliding = SlidingWindow.for_input(timeseries_card(window=50, hop=10, rate_hz=100).input)
    assert (sliding.window, sliding.hop, sliding.channels) == (50, 10, 3)
    assert sliding.max_gap_s == pytest.approx(2.5)


def test_wrong_channel_count_is_rejected():
    with pytest.raises(InputRejected) as info:
        SlidingWindow(window=4, hop=1, channels=3).push(stream(4, channels=2))
    assert info.value.reason == "wrong_channel_count"


# -- Preprocessor --------------------------------------------------------------------------------------------
def test_time_series_normalisation_and_layouts(timeseries_card):
    normalize = {"mean": [1.0, -2.0], "std": [2.0, 0.5]}
    windows = np.arange(2 * 5 * 2, dtype=np.float32).reshape(2, 5, 2)
    expected = (windows - np.array([1.0, -2.0], dtype=np.float32)) / np.array([2.0, 0.5], dtype=np.float32)
    first = Preprocessor(timeseries_card(channels=2, window=5, hop=1, normalize=normalize)).time_series(windows)
    assert first.dtype == np.float32 and first.shape == (2, 2, 5)
    np.testing.assert_allclose(first, expected.transpose(0, 2, 1))
    last = Preprocessor(timeseries_card(channels=2, window=5, hop=1, normalize=normalize,
                                        layout="channels_last")).time_series(windows)
    assert last.shape == (2, 5, 2)
    np.testing.assert_allclose(last, expected)
    plain = Preprocessor(timeseries_card(channels=2, window=5, hop=1, layout="channels_last"))
    np.testing.assert_array_equal(plain.time_series(windows.astype(np.float64)), windows)


def test_time_series_shape_and_kind_are_checked(timeseries_card, image_card):
    with pytest.raises(ValueError, match=r"\[B, 50, 3\]"):
        Preprocessor(timeseries_card()).time_series(np.zeros((1, 49, 3)))
    with pytest.raises(ValueError, match="image"):
        Preprocessor(image_card()).time_series(np.zeros((1, 50, 3)))


def test_image_scale_normalise_and_layouts(image_card):
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    frames = [ImageFrame(ts=1.0, pixels=pixels), ImageFrame(ts=2.0, pixels=255 - pixels)]
    normalize = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.5]}
    expected = (np.stack([pixels, 255 - pixels]) / 255.0 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
    nchw = Preprocessor(image_card(normalize=normalize)).image(frames)
    assert nchw.dtype == np.float32 and nchw.shape == (2, 3, 4, 6)
    np.testing.assert_allclose(nchw, expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    nhwc = Preprocessor(image_card(normalize=normalize, layout="nhwc")).image(frames)
    np.testing.assert_allclose(nhwc, expected, rtol=1e-5, atol=1e-5)
    raw = Preprocessor(image_card(scale=1.0, layout="nhwc")).image(frames[:1])
    np.testing.assert_array_equal(raw[0], pixels)


def test_image_with_the_wrong_channel_count_is_an_error(image_card):
    with pytest.raises(ValueError, match="frame 0"):
        Preprocessor(image_card()).image([ImageFrame(ts=0.0, pixels=np.zeros((4, 6, 1), dtype=np.uint8))])


@pytest.mark.skipif(not HAS_PILLOW, reason="resizing needs Pillow")
def test_image_resize_bilinear(image_card):
    frame = ImageFrame(ts=0.0, pixels=np.full((40, 60, 3), 200, dtype=np.uint8))
    out = Preprocessor(image_card(scale=1.0, layout="nhwc")).image([frame])
    assert out.shape == (1, 4, 6, 3)
    np.testing.assert_allclose(out, 200.0)
    gray = ImageFrame(ts=0.0, pixels=np.full((8, 8, 1), 50, dtype=np.uint8))
    out = Preprocessor(image_card(channels=1, channel_order="gray", scale=1.0)).image([gray])
    assert out.shape == (1, 1, 4, 6)
    np.testing.assert_allclose(out, 50.0)


def test_image_resize_without_pillow_says_what_to_install(without_pillow, image_card):
    frame = ImageFrame(ts=0.0, pixels=np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(InputRejected, match="pip install pillow"):
        Preprocessor(image_card()).image([frame])


def test_features():
    card = ModelCard.model_validate({"name": "tab", "input": {"features": 3, "normalize": {
        "mean": [0, 1, 2], "std": [1, 2, 4]}}})
    out = Preprocessor(card).features(np.array([[0, 1, 2], [1, 3, 6]], dtype=np.float64))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0, 0, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        Preprocessor(card).features(np.zeros((2, 4)))
