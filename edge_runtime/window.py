"""From samples to model inputs: sliding windows over a stream, then the card's normalisation and layout.

`SlidingWindow` cuts the stream into [window, channels] arrays in raw units; `Preprocessor` turns a batch of
those (or of images, or of feature vectors) into exactly what the model takes. Both follow the card, so the
device never guesses window sizes, channel order or normalisation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from edge_runtime.audio.features import model_input as audio_model_input
from edge_runtime.card import AudioInput, FeatureInput, ImageInput, ModelCard, Normalize, TimeSeriesInput
from edge_runtime.decode import require_pillow
from edge_runtime.detection.geometry import ImageTransform, letterbox, stretch
from edge_runtime.stream import ImageFrame, InputRejected, SampleBlock

#: a gap longer than this many windows' duration resets the window (see SlidingWindow.for_input)
GAP_WINDOWS = 5
#: this many out-of-order blocks in a row, on a consistent timeline of their own, make the window follow them
RESYNC_AFTER = 3

log = logging.getLogger("edge_runtime.window")


class SlidingWindow:
    """Windows of `window` samples, one every `hop` samples, each with the ts of its newest sample.

    The first window is ready when `window` samples have arrived, then one every `hop` samples (with hop >
    window the samples in between are skipped). Memory is one [window, channels] ring, however long the stream.

    Time must move forward: a block whose first ts is not after the last accepted ts, or whose own ts do not
    strictly increase, is rejected (`out_of_order`) and leaves the window untouched, so a replayed or duplicated
    message cannot corrupt the stream. When `max_gap_s` is set, a pause longer than that between two samples
    (a sensor that dropped out, a daemon that was suspended) empties the window first: a window never spans a
    gap, and the first window after it needs `window` fresh samples again.

    One future-dated message (a ts sent in milliseconds by mistake) or a wall clock stepped back would otherwise
    make every later block out of order, forever. So when `resync_after` blocks in a row started before the last
    accepted ts, each following on from the previous one (a new, consistent timeline rather than a stray
    duplicate), the last of them is accepted instead: the window is emptied, the stream continues from that
    block's time, `resyncs` counts it and `on_resync(old_last_ts, new_first_ts)` is called (by default: a
    WARNING on the `edge_runtime.window` logger). The blocks before it were rejected and reported as usual.
    """

    def __init__(self, window: int, hop: int, channels: int, max_gap_s: float | None = None,
                 resync_after: int = RESYNC_AFTER, on_resync: Callable[[float, float], None] | None = None):
        if window <= 0 or hop <= 0 or channels <= 0:
            raise ValueError(f"window, hop and channels must be > 0, got {window}, {hop}, {channels}")
        if resync_after < 1:
            raise ValueError(f"resync_after must be at least 1, got {resync_after}")
        self.window, self.hop, self.channels, self.max_gap_s = window, hop, channels, max_gap_s
        self.resync_after = resync_after
        self.on_resync = on_resync or self._log_resync
        self.resyncs = 0  # times the window gave up the old timeline and followed the new one
        self._ring = np.zeros((window, channels), dtype=np.float32)
        self._head = 0  # ring slot the next sample goes to; the oldest sample sits here once the ring is full
        self._last_ts: float | None = None
        self._behind = 0  # consecutive blocks rejected for starting at or before _last_ts
        self._behind_last_ts: float | None = None  # newest ts of the last of those blocks
        self.reset()

    @classmethod
    def for_input(cls, spec: TimeSeriesInput | AudioInput, **options: Any) -> SlidingWindow:
        """The window a card asks for, resetting after a gap of more than GAP_WINDOWS windows' duration."""
        return cls(spec.window, spec.hop, spec.channels, max_gap_s=GAP_WINDOWS * spec.window / spec.rate_hz,
                   **options)

    def reset(self) -> None:
        """Forget buffered samples (the last ts is kept, so time must still move forward)."""
        self._until_ready = self.window  # samples still needed before the next window is complete

    def push(self, block: SampleBlock) -> list[tuple[float, np.ndarray]]:
        """Add a block; return every window it completed as (ts of newest sample, [window, channels] float32)."""
        if len(block) == 0:
            return []
        if block.values.shape[1] != self.channels:
            raise InputRejected("wrong_channel_count",
                                f"block has {block.values.shape[1]} channels, expected {self.channels}")
        ts = np.asarray(block.ts, dtype=np.float64)
        steps = np.diff(ts)
        if (steps <= 0).any():
            index = int(np.argmax(steps <= 0)) + 1
            raise InputRejected("out_of_order", f"ts does not increase within the block at sample {index} "
                                                f"({ts[index - 1]!r} then {ts[index]!r})")
        if self._last_ts is not None and ts[0] <= self._last_ts:
            follows = self._behind_last_ts is not None and ts[0] > self._behind_last_ts
            self._behind = self._behind + 1 if follows else 1
            self._behind_last_ts = float(ts[-1])
            if self._behind < self.resync_after:
                raise InputRejected("out_of_order", f"block starts at ts {ts[0]!r}, not after the last sample at "
                                                    f"{self._last_ts!r}")
            old_last_ts = self._last_ts
            self.resyncs += 1
            self._last_ts = None
            self.reset()
            self._notify_resync(old_last_ts, float(ts[0]))
        self._behind, self._behind_last_ts = 0, None
        starts = [0]
        if self.max_gap_s is not None:
            if self._last_ts is not None and ts[0] - self._last_ts > self.max_gap_s:
                self.reset()
            starts += [int(i) + 1 for i in np.flatnonzero(steps > self.max_gap_s)]
        self._last_ts = float(ts[-1])
        values = np.asarray(block.values, dtype=np.float32)
        ready: list[tuple[float, np.ndarray]] = []
        for segment, (start, end) in enumerate(zip(starts, starts[1:] + [len(ts)], strict=True)):
            if segment:
                self.reset()
            ready += self._add(ts[start:end], values[start:end])
        return ready

    def _log_resync(self, old_last_ts: float, new_ts: float) -> None:
        log.warning("time went back from %.6f to %.6f and stayed there for %d blocks in a row (a clock step, or a "
                    "bad timestamp before): following the new timeline, window emptied", old_last_ts, new_ts,
                    self.resync_after)

    def _notify_resync(self, old_last_ts: float, new_ts: float) -> None:
        try:
            self.on_resync(old_last_ts, new_ts)
        except Exception:  # a reporting hook must not lose the block
            log.exception("on_resync hook failed")

    def _add(self, ts: np.ndarray, values: np.ndarray) -> list[tuple[float, np.ndarray]]:
        ready = []
        done = 0
        while done < len(ts):
            take = min(self._until_ready, len(ts) - done)
            self._write(values[done:done + take])
            done += take
            self._until_ready -= take
            if self._until_ready == 0:
                oldest_first = np.concatenate((self._ring[self._head:], self._ring[:self._head]))
                ready.append((float(ts[done - 1]), oldest_first))
                self._until_ready = self.hop
        return ready

    def _write(self, rows: np.ndarray) -> None:
        head = (self._head + len(rows)) % self.window
        rows = rows[-self.window:]  # only the newest `window` rows can still be part of a window
        self._ring[(head - len(rows) + np.arange(len(rows))) % self.window] = rows
        self._head = head


def _normalizer(normalize: Normalize | None, channels: int) -> tuple[np.ndarray, np.ndarray] | None:
    if normalize is None:
        return None
    mean = np.asarray(normalize.mean, dtype=np.float32)
    std = np.asarray(normalize.std, dtype=np.float32)
    if mean.shape != (channels,):
        raise ValueError(f"normalize has {len(mean)} values for {channels} channels")
    return mean, std


class Preprocessor:
    """What the model takes, made from raw windows, frames or feature vectors exactly as the card says.

    Normalisation is per channel `(x - mean) / std`, applied with channels last (the way windows and images
    arrive), then the card's layout is applied. Output is always float32, batch first.
    """

    def __init__(self, card: ModelCard):
        self.card = card
        self.spec = card.input
        self._norm = _normalizer(self.spec.normalize, self.spec.channels)

    def _normalized(self, x: np.ndarray) -> np.ndarray:
        if self._norm is not None:
            mean, std = self._norm
            x = (x - mean) / std
        return x.astype(np.float32, copy=False)

    def _expect(self, kind: type) -> None:
        if not isinstance(self.spec, kind):
            raise ValueError(f"model {self.card.name} takes {self.spec.kind} input, not {kind.__name__}")

    def time_series(self, windows: np.ndarray) -> np.ndarray:
        """[B, window, channels] raw -> normalised, [B, channels, window] (channels_first) or as is."""
        self._expect(TimeSeriesInput)
        spec = self.spec
        if windows.ndim != 3 or windows.shape[1:] != (spec.window, spec.channels):
            raise ValueError(f"expected windows [B, {spec.window}, {spec.channels}], got {list(windows.shape)}")
        x = self._normalized(np.asarray(windows, dtype=np.float32))
        if spec.layout == "channels_first":
            x = x.transpose(0, 2, 1)
        return np.ascontiguousarray(x)

    def audio(self, windows: np.ndarray) -> np.ndarray:
        """[B, window, 1] raw samples -> the samples [B, window] or their log-mel / MFCC features, as the card says
        (edge_runtime/audio/features.py, the same code the converter calibrates with)."""
        self._expect(AudioInput)
        if windows.ndim != 3 or windows.shape[1:] != (self.spec.window, 1):
            raise ValueError(f"expected audio windows [B, {self.spec.window}, 1], got {list(windows.shape)}")
        return audio_model_input(self.spec, windows[:, :, 0])

    def image(self, frames: list[ImageFrame]) -> np.ndarray:
        """Frames of any size -> resized to the card's height x width, scaled, normalised, nchw/nhwc."""
        return self.images(frames)[0]

    def images(self, frames: list[ImageFrame]) -> tuple[np.ndarray, list[ImageTransform]]:
        """`image`, plus each frame's resize (stretch or letterbox, as the card says), so a detector's boxes can
        be mapped back onto the frame."""
        self._expect(ImageInput)
        spec = self.spec
        batch = np.empty((len(frames), spec.height, spec.width, spec.channels), dtype=np.float32)
        transforms = []
        for index, frame in enumerate(frames):
            pixels = frame.pixels
            if pixels.ndim != 3 or pixels.shape[2] != spec.channels:
                raise ValueError(f"frame {index} is {list(pixels.shape)}, expected [h, w, {spec.channels}]")
            batch[index], transform = fit_image(pixels, spec)
            transforms.append(transform)
        x = self._normalized(batch * np.float32(spec.scale))
        if spec.layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x), transforms

    def features(self, vectors: np.ndarray) -> np.ndarray:
        """[B, F] raw feature vectors -> normalised float32."""
        self._expect(FeatureInput)
        if vectors.ndim != 2 or vectors.shape[1] != self.spec.features:
            raise ValueError(f"expected vectors [B, {self.spec.features}], got {list(vectors.shape)}")
        return np.ascontiguousarray(self._normalized(np.asarray(vectors, dtype=np.float32)))


def fit_image(pixels: np.ndarray, spec: ImageInput) -> tuple[np.ndarray, ImageTransform]:
    """[h, w, c] raw pixels -> [height, width, c] as the card says (bilinear; stretched, or letterboxed: scaled to
    fit, centred, padded with `pad_value`), and the transform applied. The converter prepares image folders with
    this same function, so calibration and verification see exactly what the device feeds the model."""
    source_height, source_width = pixels.shape[:2]
    if spec.resize == "stretch":
        transform = stretch(source_width, source_height, spec.width, spec.height)
        resized = pixels if pixels.shape[:2] == (spec.height, spec.width) else _resize(pixels, spec.height, spec.width)
        return resized, transform
    transform = letterbox(source_width, source_height, spec.width, spec.height)
    width, height = transform.resized
    resized = pixels if pixels.shape[:2] == (height, width) else _resize(pixels, height, width)
    canvas = np.full((spec.height, spec.width, pixels.shape[2]), spec.pad_value, dtype=np.float32)
    left, top = int(transform.pad_x), int(transform.pad_y)
    canvas[top:top + height, left:left + width] = resized
    return canvas, transform


def _resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    image_module = require_pillow()
    pixels = pixels.astype(np.uint8, copy=False)
    bilinear = getattr(image_module, "Resampling", image_module).BILINEAR
    if pixels.shape[2] == 1:
        resized = image_module.fromarray(np.ascontiguousarray(pixels[:, :, 0])).resize((width, height), bilinear)
        return np.asarray(resized)[:, :, None]
    # the channel order (rgb or bgr) does not matter to a per-channel resize
    resized = image_module.fromarray(np.ascontiguousarray(pixels)).resize((width, height), bilinear)
    return np.asarray(resized)
