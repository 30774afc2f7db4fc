"""Every way a sensor message is decoded or rejected, with the reason codes the errors topic counts."""

from __future__ import annotations

import importlib.util
import io
import json

import numpy as np
import pytest

from edge_runtime.decode import decode_float32, decode_image, decode_json
from edge_runtime.stream import InputRejected

HAS_PILLOW = importlib.util.find_spec("PIL") is not None


def now() -> float:
    return 1000.0


def json_block(message: object, channels: int = 3, rate_hz: float = 50.0, max_bytes: int = 10_000):
    payload = message if isinstance(message, bytes) else json.dumps(message).encode()
    return decode_json(payload, channels, rate_hz, max_bytes, now=now)


def rejected(call, *args, **kwargs) -> InputRejected:
    with pytest.raises(InputRejected) as info:
        call(*args, **kwargs)
    return info.value


# -- JSON ----------------------------------------------------------------------------------------------------
def test_json_single_sample_with_and_without_ts():
    block = json_block({"ts": 1712.5, "values": [1, 2.5, -3]})
    assert block.ts.tolist() == [1712.5]
    assert block.values.dtype == np.float32 and block.values.tolist() == [[1.0, 2.5, -3.0]]
    assert json_block({"values": [0, 0, 0]}).ts.tolist() == [1000.0]


def test_json_batch_is_spaced_by_the_rate():
    block = json_block({"ts": 10.0, "samples": [[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 0, 0]]}, rate_hz=50.0)
    assert block.ts.dtype == np.float64
    np.testing.assert_allclose(block.ts, [10.0, 10.02, 10.04, 10.06])
    assert block.values.shape == (4, 3) and block.values[2].tolist() == [7, 8, 9]
    assert json_block({"samples": [[1, 2, 3], [4, 5, 6]]}, rate_hz=10).ts.tolist() == [1000.0, 1000.1]


def test_json_ignores_extra_keys():
    assert len(json_block({"values": [1, 2, 3], "seq": 17})) == 1


def test_oversized_is_checked_before_parsing():
    error = rejected(decode_json, b"{" * 101, 3, 50.0, 100)
    assert error.reason == "oversized" and "101" in error.detail and "100" in error.detail


@pytest.mark.parametrize("payload", [b"{", b"not json", b"\xff\xfe{}", b""])
def test_malformed_json(payload):
    assert rejected(json_block, payload).reason == "malformed_json"


@pytest.mark.parametrize("message, words", [
    ([1, 2, 3], "object"),
    ({"ts": 1.0}, "exactly one"),
    ({"values": [1, 2, 3], "samples": [[1, 2, 3]]}, "exactly one"),
    ({"ts": "noon", "values": [1, 2, 3]}, "ts"),
    ({"ts": True, "values": [1, 2, 3]}, "ts"),
    ({"ts": None, "values": [1, 2, 3]}, "ts"),
    ({"values": "1,2,3"}, "values"),
    ({"values": {"x": 1}}, "values"),
    ({"samples": [1, 2, 3]}, "sample 0"),
    ({"samples": {"a": 1}}, "samples"),
    ({"values": [1, "2", 3]}, "channel 1"),
    ({"values": [1, True, 3]}, "channel 1"),
    ({"samples": [[1, 2, 3], [1, [2], 3]]}, "sample 1 channel 1"),
])
def test_bad_schema(message, words):
    error = rejected(json_block, message)
    assert error.reason == "bad_schema"
    assert words in error.detail


def test_wrong_channel_count_says_expected_and_given():
    error = rejected(json_block, {"values": [1, 2]})
    assert error.reason == "wrong_channel_count" and "2 values" in error.detail and "expected 3" in error.detail
    error = rejected(json_block, {"samples": [[1, 2, 3], [1, 2, 3, 4]]})
    assert error.reason == "wrong_channel_count" and "sample 1" in error.detail and "4 values" in error.detail


@pytest.mark.parametrize("payload, where", [
    (b'{"values": [1, NaN, 3]}', "sample 0 channel 1"),
    (b'{"values": [1, 2, Infinity]}', "sample 0 channel 2"),
    (b'{"samples": [[1, 2, 3], [1, 2, -Infinity]]}', "sample 1 channel 2"),
    (b'{"samples": [[1, 2, 3], [null, 2, 3]]}', "sample 1 channel 0 is null"),
    (b'{"values": [1, 1e39, 3]}', "out of float32 range"),
    (b'{"values": [1, 1' + b"0" * 400 + b', 3]}', "too large"),
])
def test_non_finite_says_where(payload, where):
    error = rejected(json_block, payload)
    assert error.reason == "non_finite"
    assert where in error.detail


@pytest.mark.parametrize("message", [{"values": []}, {"samples": []}])
def test_empty(message):
    assert rejected(json_block, message).reason == "empty"


# -- raw float32 ---------------------------------------------------------------------------------------------
def test_float32_rows_end_now_and_are_spaced_by_the_rate():
    rows = np.arange(12, dtype="<f4").reshape(4, 3)
    block = decode_float32(rows.tobytes(), 3, 4.0, 1000, now=now)
    assert block.values.dtype == np.float32 and block.values.flags.writeable
    np.testing.assert_array_equal(block.values, rows)
    np.testing.assert_allclose(block.ts, [999.25, 999.5, 999.75, 1000.0])


def test_float32_rejects():
    assert rejected(decode_float32, b"\0" * 13, 3, 50.0, 1000).reason == "bad_length"
    error = rejected(decode_float32, b"\0" * 16, 3, 50.0, 1000)
    assert error.reason == "bad_length" and "12 bytes" in error.detail
    assert rejected(decode_float32, b"", 3, 50.0, 1000).reason == "empty"
    assert rejected(decode_float32, b"\0" * 24, 3, 50.0, 20).reason == "oversized"
    bad = np.array([[1, 2, 3], [4, np.nan, 6]], dtype="<f4").tobytes()
    error = rejected(decode_float32, bad, 3, 50.0, 1000)
    assert error.reason == "non_finite" and "sample 1 channel 1" in error.detail


# -- images --------------------------------------------------------------------------------------------------
def _png(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def test_image_without_pillow_says_what_to_install(without_pillow, image_card):
    error = rejected(decode_image, b"\x89PNG....", image_card().input, 1000)
    assert error.reason == "image_unsupported" and "pip install pillow" in error.detail


@pytest.mark.skipif(not HAS_PILLOW, reason="needs Pillow")
def test_image_channel_orders(image_card):
    pixels = np.zeros((5, 7, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 10, 20, 30
    payload = _png(pixels)
    rgb = decode_image(payload, image_card().input, 10_000, now=now)
    assert rgb.ts == 1000.0 and rgb.pixels.shape == (5, 7, 3) and rgb.pixels[0, 0].tolist() == [10, 20, 30]
    bgr = decode_image(payload, image_card(channel_order="bgr").input, 10_000, now=now)
    assert bgr.pixels[0, 0].tolist() == [30, 20, 10]
    gray = decode_image(payload, image_card(channels=1, channel_order="gray").input, 10_000, now=now)
    assert gray.pixels.shape == (5, 7, 1) and gray.pixels.dtype == np.uint8
    jpeg = decode_image(_png(pixels, "JPEG"), image_card().input, 10_000, now=now)
    assert jpeg.pixels.shape == (5, 7, 3)


@pytest.mark.skipif(not HAS_PILLOW, reason="needs Pillow")
def test_bad_images(image_card):
    spec = image_card().input
    assert rejected(decode_image, b"definitely not an image", spec, 10_000).reason == "bad_image"
    truncated = _png(np.zeros((20, 20, 3), dtype=np.uint8))[:40]
    assert rejected(decode_image, truncated, spec, 10_000).reason == "bad_image"
    assert rejected(decode_image, b"x" * 100, spec, 10).reason == "oversized"
    assert rejected(decode_image, b"", spec, 10).reason == "empty"


@pytest.mark.skipif(not HAS_PILLOW, reason="needs Pillow")
def test_image_bomb_is_refused_before_decoding(image_card, monkeypatch):
    import edge_runtime.decode as decode

    monkeypatch.setattr(decode, "MAX_IMAGE_PIXELS", 100)
    error = rejected(decode_image, _png(np.zeros((20, 20, 3), dtype=np.uint8)), image_card().input, 10_000)
    assert error.reason == "bad_image" and "20x20" in error.detail
