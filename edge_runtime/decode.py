"""One sensor message in, one `SampleBlock` (or `ImageFrame`) out, or an `InputRejected` that says why not.

Every source funnels its bytes through here, so a bad message is rejected the same way whether it came over
MQTT, a serial line or a file, with a stable `reason` code the errors topic and stats can count on:

    oversized, malformed_json, bad_schema, wrong_channel_count, non_finite, empty,   (JSON)
    bad_length,                                                                      (raw float32)
    image_unsupported, bad_image                                                     (JPEG/PNG)

The size limit is checked before anything is parsed: a message can be hostile, and the device has little RAM.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from edge_runtime.card import ImageInput
from edge_runtime.stream import ImageFrame, InputRejected, SampleBlock

log = logging.getLogger("edge_runtime.decode")

#: largest image (width * height) decode_image accepts: a PNG of a few KB can expand to gigabytes
MAX_IMAGE_PIXELS = 4096 * 4096


def _check_size(payload: bytes, max_bytes: int) -> None:
    if len(payload) > max_bytes:
        raise InputRejected("oversized", f"message is {len(payload)} bytes, the limit is {max_bytes}")


def _number(value: Any) -> bool:
    # bool is an int subclass: `true` in a sensor message is a bug in the sender, not the value 1
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rows(message: dict, channels: int) -> list[list[Any]]:
    """The message's samples as rows, after checking their shape and types (values are not yet finite-checked)."""
    has_values, has_samples = "values" in message, "samples" in message
    if has_values == has_samples:
        raise InputRejected("bad_schema", 'the message needs exactly one of "values" (one sample) or "samples" '
                                          f"(a batch), got keys {sorted(message)}")
    if has_values:
        values = message["values"]
        if not isinstance(values, list):
            raise InputRejected("bad_schema", f'"values" must be a list of numbers, got {type(values).__name__}')
        if not values:
            raise InputRejected("empty", '"values" is an empty list')
        rows = [values]
    else:
        rows = message["samples"]
        if not isinstance(rows, list):
            raise InputRejected("bad_schema", f'"samples" must be a list of lists, got {type(rows).__name__}')
        if not rows:
            raise InputRejected("empty", '"samples" is an empty list')
    for index, row in enumerate(rows):
        where = "values" if has_values else f"sample {index}"
        if not isinstance(row, list):
            raise InputRejected("bad_schema", f"{where} must be a list of numbers, got {type(row).__name__}")
        if len(row) != channels:
            raise InputRejected("wrong_channel_count", f"{where} has {len(row)} values, expected {channels} channels")
        for channel, value in enumerate(row):
            if value is not None and not _number(value):
                raise InputRejected("bad_schema", f"{where} channel {channel} is {value!r}, not a number")
    return rows


def _finite_float(value: float) -> bool:
    """Finite as a float64: an integer of 309 digits is a valid JSON number that float() cannot hold."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _check_finite(values: np.ndarray, rows: list[list[Any]] | None = None) -> None:
    """Reject NaN/inf (or JSON null): one bad value would poison a whole window of predictions."""
    finite = np.isfinite(values)
    if finite.all():
        return
    sample, channel = (int(i) for i in np.argwhere(~finite)[0])
    raw = rows[sample][channel] if rows is not None else float(values[sample, channel])
    if raw is None:
        shown = "null"
    elif math.isfinite(raw):
        shown = f"{raw!r} (out of float32 range)"
    else:
        shown = str(raw)
    raise InputRejected("non_finite", f"sample {sample} channel {channel} is {shown}; every value must be finite")


def decode_json(
    payload: bytes, channels: int, rate_hz: float, max_bytes: int, now: Callable[[], float] = time.time
) -> SampleBlock:
    """Decode `{"ts": 1712.5, "values": [..]}` (one sample) or `{"ts": .., "samples": [[..], ..]}` (a batch).

    `ts` (seconds) is optional and defaults to `now()`; sample i of a batch is at `ts + i / rate_hz`, so a
    microcontroller can send a burst without stamping every row. Other keys (e.g. a sequence number) are ignored.
    """
    _check_size(payload, max_bytes)
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as error:
        raise InputRejected("malformed_json", f"not valid JSON: {error}") from None
    except RecursionError:  # `[[[[...` thousands deep: the parser's stack, not a sensor message
        raise InputRejected("malformed_json", "not valid JSON: nested too deeply") from None
    if not isinstance(message, dict):
        raise InputRejected("bad_schema", f"the message must be a JSON object, got {type(message).__name__}")
    if "ts" in message:
        ts = message["ts"]
        if not _number(ts) or not _finite_float(ts):
            shown = repr(ts) if not isinstance(ts, int) else f"an integer of {len(str(abs(ts)))} digits"
            raise InputRejected("bad_schema", f'"ts" must be a finite number of seconds, got {shown[:80]}')
    else:
        ts = now()
    rows = _rows(message, channels)
    try:
        with np.errstate(over="ignore"):
            values = np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=np.float32)
    except OverflowError:  # an integer with hundreds of digits
        raise InputRejected("non_finite", "an integer value is too large for float32") from None
    _check_finite(values, rows)
    times = float(ts) + np.arange(len(rows), dtype=np.float64) / rate_hz
    return SampleBlock(ts=times, values=values)


def decode_float32(
    payload: bytes, channels: int, rate_hz: float, max_bytes: int, now: Callable[[], float] = time.time
) -> SampleBlock:
    """Decode raw little-endian float32 rows of `channels` values; the newest row is at `now()`.

    Raw payloads carry no time, so the rows are taken to have just been sampled at `rate_hz`.
    """
    _check_size(payload, max_bytes)
    if not payload:
        raise InputRejected("empty", "the payload has no bytes")
    row_bytes = 4 * channels
    if len(payload) % row_bytes:
        raise InputRejected("bad_length", f"{len(payload)} bytes is not a whole number of rows of {channels} "
                                          f"float32 values ({row_bytes} bytes each)")
    values = np.frombuffer(payload, dtype="<f4").reshape(-1, channels).astype(np.float32)
    _check_finite(values)
    count = len(values)
    times = now() - np.arange(count - 1, -1, -1, dtype=np.float64) / rate_hz
    return SampleBlock(ts=times, values=values)


#: an arrival-stamped block overlapping the previous one is moved after it when the shift is below this ...
MAX_SHIFT_S = 2.0
#: ... or below this many durations of the block itself, whichever is larger
MAX_SHIFT_BLOCKS = 3


class ArrivalClock:
    """A decoder's `now` for one message that remembers whether it was called: whether the message had no ts
    of its own and was stamped on arrival."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self.used = False

    def __call__(self) -> float:
        self.used = True
        return self._clock()


class ArrivalCursor:
    """Keeps one stream's arrival-stamped blocks in order despite jitter.

    A message without a ts is stamped when it arrives (`decode_json` starts it at now(), `decode_float32` ends it
    at now()), so a message that arrives 40 ms early overlaps the previous one and the window would reject it as
    out_of_order. The cursor remembers the newest ts delivered; an arrival-stamped block that starts at or before
    it is moved to start one sample period after it when that shift is small: less than `MAX_SHIFT_S`, or
    `MAX_SHIFT_BLOCKS` durations of the block, whichever is larger. A bigger overlap is not jitter (the wall
    clock stepped back, or the sensor runs faster than the card's rate and the cursor ran ahead): the block keeps
    its arrival time (re-anchored to now; the window resynchronises after a few such blocks). A ts sent by the
    sensor is never shifted, only remembered. Thread-safe.
    """

    def __init__(self, rate_hz: float, name: str = "stream"):
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self.period = 1.0 / rate_hz
        self.name = name
        self.shifted = 0  # blocks moved after the previous one (jitter absorbed)
        self.reanchored = 0  # blocks that overlapped too much to be moved
        self._last_ts: float | None = None
        self._lock = threading.Lock()

    def place(self, block: SampleBlock, stamped_on_arrival: bool) -> SampleBlock:
        """The block to deliver: moved just after the previous one if it was stamped on arrival and overlaps it
        a little, else as it is."""
        if not len(block):
            return block
        with self._lock:
            last = self._last_ts
            if stamped_on_arrival and last is not None and block.ts[0] <= last:
                shift = last + self.period - float(block.ts[0])
                if shift < max(MAX_SHIFT_S, MAX_SHIFT_BLOCKS * len(block) * self.period):
                    block = SampleBlock(ts=np.asarray(block.ts, dtype=np.float64) + shift, values=block.values)
                    self.shifted += 1
                else:
                    self.reanchored += 1
                    log.warning("%s: a message stamped on arrival starts %.3f s before the previous one ended (the "
                                "clock stepped back?): kept at its arrival time", self.name, shift)
            self._last_ts = float(block.ts[-1])
        return block


def require_pillow() -> ModuleType:
    """`PIL.Image`, or the rejection that tells the user what to install (the device install has no Pillow)."""
    try:
        from PIL import Image
    except ImportError:
        raise InputRejected("image_unsupported", "decoding JPEG/PNG needs Pillow: pip install pillow") from None
    return Image


def decode_image(
    payload: bytes, card_input: ImageInput, max_bytes: int, now: Callable[[], float] = time.time
) -> ImageFrame:
    """Decode a JPEG or PNG into [height, width, channels] uint8 in the card's channel order (gray/rgb/bgr).

    Only JPEG and PNG are opened: every other Pillow decoder is attack surface a sensor never needs. The
    image keeps its size; resizing to the model's input is the preprocessor's job.
    """
    _check_size(payload, max_bytes)
    if not payload:
        raise InputRejected("empty", "the payload has no bytes")
    image_module = require_pillow()
    try:
        image = image_module.open(io.BytesIO(payload), formats=["JPEG", "PNG"])
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise InputRejected("bad_image", f"image is {width}x{height}, more than {MAX_IMAGE_PIXELS} pixels")
        image = image.convert("L" if card_input.channel_order == "gray" else "RGB")
        pixels = np.asarray(image, dtype=np.uint8)
    except InputRejected:
        raise
    except Exception as error:  # Pillow raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        # Pillow names its file object in some messages ("cannot identify image file <_io.BytesIO ...>"): say
        # what happened without that
        detail = re.sub(r"\s*<[^>]*>", "", str(error)).strip() or type(error).__name__
        raise InputRejected("bad_image", f"not a decodable JPEG or PNG: {detail}") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if card_input.channel_order == "bgr":
        pixels = pixels[:, :, ::-1]
    return ImageFrame(ts=now(), pixels=np.ascontiguousarray(pixels))
