"""WAV files into float samples, with nothing but numpy: the replay source and the converter's WAV folders read
recordings through here.

Accepted: RIFF/WAVE with integer PCM (8-bit unsigned, 16, 24 or 32-bit signed) or IEEE float (32 or 64-bit),
also as WAVE_FORMAT_EXTENSIBLE; any number of channels, of which the first is used. Samples come out as float32
in [-1, 1). There is no resampling: a recording at another rate than the model's is refused by the caller, in
one line that names both rates (`check_rate`). Anything else (compressed formats, truncated files) is a
ValueError naming the file and what is wrong with it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


@dataclass(frozen=True)
class Recording:
    """The first channel of a WAV file: `samples` [n] float32 in [-1, 1) at `rate_hz`."""

    path: Path
    rate_hz: int
    samples: np.ndarray
    channels: int  # in the file; only the first is in `samples`

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate_hz


def _chunks(data: bytes, path: Path) -> dict[bytes, bytes]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file (no RIFF/WAVE header)")
    chunks: dict[bytes, bytes] = {}
    offset = 12
    while offset + 8 <= len(data):
        name, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = data[offset + 8:offset + 8 + size]
        if name == b"data" and len(body) < size:  # a recorder that died before fixing the header: keep what is there
            size = len(body)
        chunks.setdefault(name, body)
        offset += 8 + size + (size & 1)  # chunks are padded to an even size
    return chunks


def read_wav(path: str | Path) -> Recording:
    """The first channel of a WAV file as float32; ValueError with the file name if it cannot be used."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    chunks = _chunks(data, path)
    fmt, body = chunks.get(b"fmt "), chunks.get(b"data")
    if fmt is None or len(fmt) < 16 or body is None:
        raise ValueError(f"{path}: a WAV file needs a 'fmt ' and a 'data' chunk")
    code, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", fmt)
    if code == _EXTENSIBLE and len(fmt) >= 26:
        code = struct.unpack_from("<H", fmt, 24)[0]  # the first two bytes of the sub-format GUID
    if channels < 1 or rate < 1 or block < 1:
        raise ValueError(f"{path}: invalid WAV header ({channels} channels, {rate} Hz)")
    width = bits // 8
    if code == _PCM and bits in (8, 16, 24, 32):
        frames = len(body) // block
        raw = np.frombuffer(body[:frames * block], dtype=np.uint8).reshape(frames, block)[:, :width]
        if bits == 8:
            samples = (raw[:, 0].astype(np.float32) - 128.0) / 128.0
        else:
            padded = np.zeros((frames, 4), dtype=np.uint8)
            padded[:, 4 - width:] = raw  # left-align in 32 bits: the sign bit lands where int32 has it
            samples = padded.view("<i4")[:, 0].astype(np.float32) / 2.0**31
    elif code == _FLOAT and bits in (32, 64):
        frames = len(body) // block
        dtype = "<f4" if bits == 32 else "<f8"
        raw = np.frombuffer(body[:frames * block], dtype=np.uint8).reshape(frames, block)[:, :width]
        samples = np.ascontiguousarray(raw).view(dtype)[:, 0].astype(np.float32)
    else:
        kind = {_PCM: "PCM", _FLOAT: "float"}.get(code, f"format code {code}")
        raise ValueError(f"{path}: {kind} with {bits} bits per sample is not supported; use 16-bit PCM or float32")
    if not len(samples):
        raise ValueError(f"{path}: no samples")
    if not np.isfinite(samples).all():
        raise ValueError(f"{path}: sample {int(np.argmax(~np.isfinite(samples)))} is not a finite number")
    return Recording(path, int(rate), samples, int(channels))


def check_rate(recording: Recording, rate_hz: float) -> None:
    """A recording must be at the model's rate: resampling would change what the model hears."""
    if recording.rate_hz != rate_hz:
        raise ValueError(f"{recording.path}: recorded at {recording.rate_hz} Hz but the model takes {rate_hz:g} Hz "
                         f"audio (card input.rate_hz); resample it first, e.g. sox IN -r {rate_hz:g} OUT.wav")


def write_wav(path: str | Path, samples: np.ndarray, rate_hz: int) -> None:
    """Mono 16-bit PCM (for tests and tools): samples in [-1, 1), clipped."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0 - 2.0**-15) * 32768.0).round().astype("<i2")
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + pcm.nbytes, b"WAVE", b"fmt ", 16, _PCM, 1, rate_hz,
                         rate_hz * 2, 2, 16, b"data", pcm.nbytes)
    Path(path).write_bytes(header + pcm.tobytes())
