"""A recorded CSV, NPZ or WAV file played back as if it were a live sensor: the way to try a model without hardware.

A WAV file (16-bit PCM or float, the first channel of a stereo file) feeds an audio model (`input: {kind:
audio}`); it must be at the card's `rate_hz`, or it is refused in one line naming both rates (no resampling).

The whole file is read and checked when the source is made, so `edge-runtime check` reports a missing file, a
bad cell or a channel-count mismatch before anything runs. Playback rebases time: the first sample gets the
wall-clock time at start() and every later one keeps its recorded spacing (also across `loop` passes), so the
stream looks live to the window and to drift monitoring. At `speed` 2 the data time runs twice as fast as the
wall clock; at speed 0 blocks go out back to back, as fast as `sink.accept` returns.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from edge_runtime import npz
from edge_runtime.audio.wav import check_rate, read_wav
from edge_runtime.card import AudioInput, TimeSeriesInput
from edge_runtime.plugin import ConfigPath
from edge_runtime.sources.base import BaseSourceConfig, SourceContext, ThreadedSource, stream_shape
from edge_runtime.sources.pacing import FREE_RUN_BLOCK, MAX_BLOCK, Clock, Pacer, Wait
from edge_runtime.stream import SampleBlock

log = logging.getLogger(__name__)

SOURCE_KEY = "replay"
#: the arrays of an NPZ recording may take at most this much memory (checked on their headers before loading)
MAX_RECORDING_BYTES = 1024 * 1024 * 1024


class ReplaySourceConfig(BaseSourceConfig):
    """A recorded CSV, NPZ or WAV file played back at `speed` times real time (0: as fast as the model takes it)."""

    order = 20
    type: Literal[SOURCE_KEY]
    path: ConfigPath
    speed: float = Field(1.0, ge=0)
    loop: bool = False
    columns: list[str] | None = Field(None, description="CSV columns to use, in channel order")
    timestamp_column: str = "ts"

@dataclass(frozen=True)
class Recording:
    """Samples of a file: `offsets` seconds from the first sample (float64, increasing), `values` [n, channels]."""

    offsets: np.ndarray
    values: np.ndarray
    step_s: float  # typical spacing, also the pause between the last sample and the first of the next loop


def _strictly_increasing(ts: np.ndarray, where: str) -> None:
    if not np.isfinite(ts).all():
        raise ValueError(f"{where}: timestamps must be finite numbers")
    steps = np.diff(ts)
    if (steps <= 0).any():
        index = int(np.argmax(steps <= 0)) + 1
        raise ValueError(f"{where}: timestamps must increase, but sample {index} is at {ts[index]!r} after "
                         f"{ts[index - 1]!r}")


def _recording(ts: np.ndarray | None, values: np.ndarray, rate_hz: float, where: str) -> Recording:
    if ts is None:
        offsets = np.arange(len(values), dtype=np.float64) / rate_hz
    else:
        _strictly_increasing(ts, where)
        offsets = ts - ts[0]
    step = float(np.median(np.diff(offsets))) if len(offsets) > 1 else 1.0 / rate_hz
    values = values.astype(np.float32)
    values.flags.writeable = False  # blocks are views into it: a consumer must not change the next loop's data
    return Recording(offsets=offsets, values=values, step_s=step)


def _float_or_none(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def load_csv(path: Path, channels: int, rate_hz: float, columns: list[str] | None, timestamp_column: str,
             timestamp_required: bool = False) -> Recording:
    """A CSV with a header row; channels are `columns`, or every numeric column but the timestamp and `label`.

    A column is numeric when its first row holds a number; later cells that do not are errors.
    """
    try:
        with path.open(newline="") as file:
            reader = csv.reader(file)
            header = [name.strip() for name in next(reader, [])]
            lines = [(reader.line_num, row) for row in reader if row]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"replay file {path}: cannot read it as CSV: {error}") from None
    if not header or not lines:
        raise ValueError(f"replay file {path}: needs a header row and at least one row of samples")
    for line, row in lines:
        if len(row) != len(header):
            raise ValueError(f"replay file {path} line {line}: {len(row)} cells, the header has {len(header)}")
    if timestamp_required and timestamp_column not in header:
        raise ValueError(f"replay file {path}: no timestamp column {timestamp_column!r}; columns: {header}")
    if columns is None:
        skip = {timestamp_column, "label"}
        # numeric by the first row, so a bad cell further down is reported by its line, not silently skipped
        columns = [name for name, cell in zip(header, lines[0][1], strict=True)
                   if name not in skip and _float_or_none(cell) is not None]
    missing = [name for name in columns if name not in header]
    if missing:
        raise ValueError(f"replay file {path}: no column {', '.join(map(repr, missing))}; columns: {header}")
    if len(columns) != channels:
        raise ValueError(f"replay file {path}: {len(columns)} value columns {columns} but the model takes "
                         f"{channels} channels; pick them with `columns:`")

    def column(name: str) -> np.ndarray:
        index = header.index(name)
        out = np.empty(len(lines), dtype=np.float64)
        for k, (line, row) in enumerate(lines):
            value = _float_or_none(row[index])
            if value is None or not math.isfinite(value):
                raise ValueError(f"replay file {path} line {line} column {name!r}: {row[index]!r} is not a "
                                 "finite number")
            out[k] = value
        return out

    values = np.stack([column(name) for name in columns], axis=1)
    ts = column(timestamp_column) if timestamp_column in header else None
    return _recording(ts, values, rate_hz, f"replay file {path}")


def load_npz(path: Path, channels: int, rate_hz: float) -> Recording:
    """An NPZ with `values` (or `x`) [n, channels] and optionally `ts` [n] seconds."""
    try:
        arrays = npz.load_npz(path, MAX_RECORDING_BYTES)  # array headers checked before anything is allocated
    except npz.NpzError as error:
        raise ValueError(f"replay file {path}: cannot read it as NPZ: {error}") from None
    key = "values" if "values" in arrays else "x" if "x" in arrays else None
    if key is None:
        raise ValueError(f"replay file {path}: needs an array 'values' (or 'x') [n, channels]; has {sorted(arrays)}")
    values = arrays[key]
    if values.ndim == 1 and channels == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[1] != channels or not len(values):
        raise ValueError(f"replay file {path}: {key!r} is {list(values.shape)}, expected [n > 0, {channels}]")
    try:
        values = values.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"replay file {path}: {key!r} holds {values.dtype}, not numbers") from None
    if not np.isfinite(values).all():
        sample = int(np.argwhere(~np.isfinite(values))[0][0])
        raise ValueError(f"replay file {path}: {key!r} sample {sample} is not finite")
    ts = arrays.get("ts")
    if ts is not None:
        ts = np.asarray(ts, dtype=np.float64).reshape(-1)
        if ts.shape != (len(values),):
            raise ValueError(f"replay file {path}: 'ts' has {ts.size} values for {len(values)} samples")
    return _recording(ts, values, rate_hz, f"replay file {path}")


def load_wav(path: Path, channels: int, rate_hz: float) -> Recording:
    """A WAV file for an audio model: its first channel, at exactly the model's sample rate."""
    if channels != 1:
        raise ValueError(f"replay file {path}: a WAV file feeds an audio model (card input kind: audio), but this "
                         f"model takes {channels} channels")
    recording = read_wav(path)
    check_rate(recording, rate_hz)
    if recording.channels > 1:
        log.info("replay file %s: %d channels, playing the first", path, recording.channels)
    return _recording(None, recording.samples[:, None], rate_hz, f"replay file {path}")


class ReplaySource(ThreadedSource):
    type = SOURCE_KEY
    config: ReplaySourceConfig

    def __init__(self, config: ReplaySourceConfig, context: SourceContext, clock: Clock = time.monotonic,
                 wait: Wait | None = None):
        """`clock` and `wait` pace the playback (default: `time.monotonic` and the stop event's wait)."""
        super().__init__(config, context)
        self.clock = clock
        self.wait = wait or self._stop.wait
        channels, rate_hz = stream_shape(context.card)
        path = Path(config.path)
        if not path.is_file():
            raise ValueError(f"replay file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            self.recording = load_csv(path, channels, rate_hz, config.columns, config.timestamp_column,
                                      timestamp_required="timestamp_column" in config.model_fields_set)
        elif suffix == ".npz":
            self.recording = load_npz(path, channels, rate_hz)
        elif suffix == ".wav":
            if not isinstance(context.card.input, AudioInput):
                raise ValueError(f"replay file {path}: a WAV file feeds an audio model; {context.card.name} takes "
                                 f"{context.card.input.kind} input")
            self.recording = load_wav(path, channels, rate_hz)
        else:
            raise ValueError(f"replay file {path}: expected a .csv, .npz or .wav file")
        spec = context.card.input
        self.free_run_block = spec.hop if isinstance(spec, TimeSeriesInput | AudioInput) else FREE_RUN_BLOCK

    def describe(self) -> str:
        return f"replay:{Path(self.config.path).name}"

    def _run(self) -> None:
        try:
            self._play()
        except Exception:  # the sink promises not to raise; anything else is a bug worth a traceback
            log.exception("replay of %s stopped", self.config.path)

    def _play(self) -> None:
        offsets, values = self.recording.offsets, self.recording.values
        count = len(offsets)
        pacer = Pacer(self.config.speed, self._stop, self.clock, self.wait)
        wall_start = time.time()
        loop_offset = 0.0  # data seconds added on every pass, so ts keep increasing when looping
        while True:
            start = 0
            while start < count:
                if not pacer.wait_for(loop_offset + offsets[start]):
                    return
                if self.config.speed == 0:
                    end = start + self.free_run_block
                else:
                    end = int(np.searchsorted(offsets, pacer.due_s() - loop_offset, side="right"))
                end = min(max(end, start + 1), start + MAX_BLOCK, count)
                block = SampleBlock(ts=wall_start + loop_offset + offsets[start:end], values=values[start:end])
                self.context.sink.accept(block)  # may wait for room in the model's queue (backpressure)
                if self._stop.is_set():  # stopped meanwhile: not one block more
                    return
                start = end
            if not self.config.loop:
                self._finished = True
                return
            loop_offset += offsets[-1] + self.recording.step_s
