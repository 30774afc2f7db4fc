"""A microphone (ALSA/PortAudio through sounddevice, `device:` by name or index) or a WAV file (`path:`) played at
its own rate, feeding an audio model (`input: {kind: audio}`): mono samples at the card's `rate_hz`, cut into the
card's windows by the model worker.

Live input: PortAudio calls back with a block of `hop` samples; the block is stamped on a sample-counted timeline
(so window boundaries never jitter) that is re-anchored to the wall clock after an overrun (samples PortAudio lost,
counted in `health()`) or when it strays from it by more than `MAX_SKEW_S`. A gap in the timeline is a gap in the
stream: the model worker starts a recurrent model's state over after it, as after any pause. No callback for
`timeout_s` (a USB microphone unplugged) closes the stream and reopens it with backoff; `health()` says connected
or reconnecting, the attempts and the last error. The device is opened at the card's rate: no resampling here
(ALSA's `default`/`plughw` devices convert; a raw `hw:` device at another rate is refused by PortAudio, reported as
the last error).

A WAV file (16-bit PCM or float, `channel` picks one of a multichannel file's channels) must be at the card's rate;
it plays at its own rate with the replay source's pacing (injectable clock), or with `realtime: false` as fast
as the model goes, and ends the source unless `loop`.

sounddevice (`pip install 'edge-runtime[audio]'`, with PortAudio: Debian's libportaudio2) is imported only for a
live device.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from edge_runtime.audio.wav import check_rate, read_wav
from edge_runtime.card import AudioInput
from edge_runtime.plugin import ConfigPath
from edge_runtime.sources.base import BaseSourceConfig, SourceContext, SourceUnavailable, ThreadedSource
from edge_runtime.sources.pacing import Clock, Pacer, Wait
from edge_runtime.stream import SampleBlock

log = logging.getLogger(__name__)

SOURCE_KEY = "audio"
#: the sample-counted timeline is re-anchored to the wall clock when it strays further than this
MAX_SKEW_S = 0.5


class AudioSourceConfig(BaseSourceConfig):
    """A microphone (`device:`, ALSA/PortAudio by name or index) or a WAV file (`path:`) for an audio model."""

    order = 70
    type: Literal[SOURCE_KEY]
    device: str | int | None = Field(None, description="input device: default, a name (or part of it), an index")
    path: ConfigPath | None = Field(None, description="a WAV file at the card's rate, played at its own rate")
    loop: bool = False
    realtime: bool = Field(True, description="a file: at its own rate; false: as fast as the model goes")
    channel: int = Field(0, ge=0, description="which input channel to use (0: the first)")
    timeout_s: float = Field(2.0, gt=0, description="no samples for this long: the device is reopened")
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _one_input(self) -> AudioSourceConfig:
        if (self.device is None) == (self.path is None):
            raise ValueError("the audio source needs exactly one of `device:` (a microphone) or `path:` (a WAV file)")
        return self

    @property
    def waits_for_model(self) -> bool:
        """A file with `realtime: false` waits for the model instead of losing windows."""
        return self.path is not None and not self.realtime


def _import_sounddevice() -> Any:
    try:
        import sounddevice
    except ImportError:
        raise SourceUnavailable("the audio source reads microphones through sounddevice: pip install "
                                "'edge-runtime[audio]'") from None
    except OSError as error:  # the Python package is there, the PortAudio library is not
        raise SourceUnavailable(f"sounddevice cannot load PortAudio ({error}): sudo apt install libportaudio2"
                                ) from None
    return sounddevice


class SampleClock:
    """Timestamps for blocks of a live stream: counted in samples, re-anchored to `now` after a loss or a skew."""

    def __init__(self, rate_hz: float, now: Clock = time.time):
        self.period = 1.0 / rate_hz
        self.now = now
        self._next: float | None = None
        self.reanchored = 0

    def stamp(self, count: int, lost: bool = False) -> np.ndarray:
        now = self.now()
        start = now - count * self.period  # the block's first sample, were it just recorded
        expected = self._next
        if expected is None or lost or abs(expected - start) > MAX_SKEW_S:
            if expected is not None:
                self.reanchored += 1
                start = max(start, expected)  # never back in time
        else:
            start = expected
        ts = start + np.arange(count, dtype=np.float64) * self.period
        self._next = float(ts[-1]) + self.period
        return ts


class AudioSource(ThreadedSource):
    type = SOURCE_KEY
    config: AudioSourceConfig

    def __init__(self, config: AudioSourceConfig, context: SourceContext, clock: Clock = time.monotonic,
                 wait: Wait | None = None):
        """`clock` and `wait` pace a file and the reconnect backoff (default: monotonic time, the stop event)."""
        super().__init__(config, context)
        spec = context.card.input
        if not isinstance(spec, AudioInput):
            raise ValueError(f"the audio source feeds audio models (card input kind: audio); {context.card.name} "
                             f"takes {spec.kind} input")
        self.spec = spec
        self.clock = clock
        self.wait = wait or self._stop.wait
        self.samples: np.ndarray | None = None
        if config.path is not None:
            recording = read_wav(config.path)  # ValueError naming the file
            check_rate(recording, spec.rate_hz)
            if config.channel >= recording.channels:
                raise ValueError(f"{config.path}: channel {config.channel} asked for, the file has "
                                 f"{recording.channels}")
            self.samples = recording.samples if config.channel == 0 else _channel(config.path, config.channel,
                                                                                   recording.channels)
        else:
            self._sd = _import_sounddevice()
        if config.reconnect_max_s < config.reconnect_min_s:
            raise ValueError("audio reconnect_max_s must be at least reconnect_min_s")
        self._lock = threading.Lock()
        self.state = "starting"
        self.connects = self.attempts = self.overruns = self.delivered = 0
        self.last_error: str | None = None
        self._last_callback = 0.0

    def describe(self) -> str:
        if self.config.path is not None:
            return f"audio:{Path(self.config.path).name}"
        return f"audio:{self.config.device}"

    def health(self) -> dict:
        with self._lock:
            return {"state": self.state, "connects": self.connects, "attempts": self.attempts,
                    "last_error": self.last_error, "overruns": self.overruns, "samples": self.delivered}

    def _run(self) -> None:
        try:
            if self.samples is not None:
                self._play_file()
            else:
                self._supervise_device()
        except Exception:
            log.exception("audio source %s stopped", self.describe())
            with self._lock:
                self.state = "failed"
        finally:
            with self._lock:
                if self.state not in ("finished", "failed"):
                    self.state = "stopped"

    # -- a WAV file ---------------------------------------------------------------------------------------------
    def _play_file(self) -> None:
        samples, hop, rate = self.samples, self.spec.hop, float(self.spec.rate_hz)
        with self._lock:
            self.state, self.connects = "playing", 1
        pacer = Pacer(1.0 if self.config.realtime else 0.0, self._stop, self.clock, self.wait)
        wall_start = time.time()
        offset = 0  # samples played, across loops: the timeline keeps increasing
        while True:
            for start in range(0, len(samples), hop):
                block = samples[start:start + hop]
                end_s = (offset + start + len(block)) / rate  # a block is due once its last sample was "recorded"
                if not pacer.wait_for(end_s):
                    return
                ts = wall_start + (offset + start + np.arange(len(block), dtype=np.float64)) / rate
                self.context.sink.accept(SampleBlock(ts=ts, values=block[:, None]))
                with self._lock:
                    self.delivered += len(block)
                if self._stop.is_set():
                    return
            if not self.config.loop:
                with self._lock:
                    self.state = "finished"
                self._finished = True
                return
            offset += len(samples)

    # -- a live device ------------------------------------------------------------------------------------------
    def _device(self) -> str | int | None:
        device = self.config.device
        return None if device == "default" else device

    def _supervise_device(self) -> None:
        backoff = self.config.reconnect_min_s
        while not self._stop.is_set():
            try:
                self._listen()
                return  # stopped
            except Exception as error:  # PortAudioError, ValueError (no such device), a silent device
                with self._lock:
                    self.attempts += 1
                    self.last_error = f"{type(error).__name__}: {error}"
                    self.state = "reconnecting"
                log.warning("audio device %s: %s; reopening in %.1f s (attempt %d)", self.config.device,
                            self.last_error, backoff, self.attempts)
                if self.wait(backoff):
                    return
                backoff = min(backoff * 2, self.config.reconnect_max_s)

    def _listen(self) -> None:
        """Open the device and deliver until stopped; raises when it fails or falls silent for `timeout_s`."""
        sample_clock = SampleClock(self.spec.rate_hz)
        channel = self.config.channel
        sink = self.context.sink

        def callback(indata, frames, time_info, status) -> None:  # PortAudio's thread: quick, never raises
            lost = bool(getattr(status, "input_overflow", False))
            try:
                block = np.array(indata[:frames, channel], dtype=np.float32)
                sink.accept(SampleBlock(ts=sample_clock.stamp(frames, lost), values=block[:, None]))
            except Exception:
                log.exception("audio callback failed")
            with self._lock:
                self._last_callback = time.monotonic()
                self.delivered += frames
                self.overruns += lost

        stream = self._sd.InputStream(device=self._device(), channels=channel + 1, samplerate=self.spec.rate_hz,
                                      dtype="float32", blocksize=self.spec.hop, callback=callback)
        with stream:
            with self._lock:
                self._last_callback = time.monotonic()
                self.state = "connected"
                self.connects += 1
                self.attempts = 0
            while not self._stop.wait(min(0.2, self.config.timeout_s / 2)):
                with self._lock:
                    silent = time.monotonic() - self._last_callback
                if silent > self.config.timeout_s:
                    raise TimeoutError(f"no samples for {silent:.1f} s")
                if not getattr(stream, "active", True):
                    raise RuntimeError("the input stream stopped")


def _channel(path: Path, channel: int, channels: int) -> np.ndarray:
    """One channel of a multichannel WAV file (read_wav keeps the first): the same decoding, another column."""
    import wave

    with wave.open(str(path), "rb") as file:
        width = file.getsampwidth()
        frames = file.readframes(file.getnframes())
    if width != 2:
        raise ValueError(f"{path}: channel {channel} of a {8 * width}-bit file: only 16-bit PCM files give channels "
                         "other than the first")
    data = np.frombuffer(frames, dtype="<i2").reshape(-1, channels)[:, channel]
    return (data.astype(np.float32) / 32768.0).copy()
