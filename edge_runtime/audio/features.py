"""Log-mel and MFCC features in numpy: the on-device front end of `input: {kind: audio, features: ...}`.

The same function runs in the daemon (per batch of windows) and in the converter (on WAV folders), so a model is
calibrated and verified on the features the device will compute. The conventions are librosa's defaults where
they exist (Slaney mel scale, area-normalised triangles, periodic Hann window, power spectrum, orthonormal
DCT-II), so a model trained on librosa features gets the same numbers, except that frames are not centred
(no padding): every frame lies inside the window, because the samples around it belong to other windows.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from edge_runtime.card import AudioFeatures, AudioInput

_MEL_BREAK_HZ = 1000.0
_MEL_LINEAR_STEP = 200.0 / 3  # Hz per mel below the break
_MEL_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _MEL_LINEAR_STEP
    above = _MEL_BREAK_HZ / _MEL_LINEAR_STEP + np.log(np.maximum(hz, 1e-12) / _MEL_BREAK_HZ) / _MEL_LOG_STEP
    return np.where(hz >= _MEL_BREAK_HZ, above, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    break_mel = _MEL_BREAK_HZ / _MEL_LINEAR_STEP
    return np.where(mel >= break_mel, _MEL_BREAK_HZ * np.exp(_MEL_LOG_STEP * (mel - break_mel)),
                    mel * _MEL_LINEAR_STEP)


@lru_cache(maxsize=8)
def mel_filterbank(rate_hz: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular filters, each normalised to unit area (librosa's `norm='slaney'`)."""
    bins = np.linspace(0.0, rate_hz / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    """The periodic Hann window (what an FFT of overlapping frames wants)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


@lru_cache(maxsize=8)
def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] orthonormal DCT-II (scipy's `dct(type=2, norm='ortho')`), first n_out coefficients."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    matrix = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    matrix[0] /= np.sqrt(2.0)
    return matrix.astype(np.float32)


def log_mel(samples: np.ndarray, rate_hz: int, spec: AudioFeatures) -> np.ndarray:
    """[batch, window] samples -> [batch, frames, n_mels] log mel power."""
    samples = np.asarray(samples, dtype=np.float32)
    frames = spec.frames(samples.shape[-1])
    if frames < 1:
        raise ValueError(f"a window of {samples.shape[-1]} samples is shorter than one frame (n_fft {spec.n_fft})")
    starts = np.arange(frames) * spec.hop_length
    framed = samples[:, starts[:, None] + np.arange(spec.n_fft)[None, :]]  # [batch, frames, n_fft]
    power = np.abs(np.fft.rfft(framed * _hann(spec.n_fft), axis=-1)) ** 2
    bank = mel_filterbank(rate_hz, spec.n_fft, spec.n_mels, float(spec.f_min), float(spec.f_max or rate_hz / 2))
    return np.log(power.astype(np.float32) @ bank.T + np.float32(spec.log_offset))


def features(samples: np.ndarray, rate_hz: int, spec: AudioFeatures) -> np.ndarray:
    """[batch, window] samples -> [batch, *spec.shape(window)] float32, as the card's layout says."""
    values = log_mel(samples, rate_hz, spec)  # [batch, frames, n_mels]
    if spec.type == "mfcc":
        values = values @ _dct_matrix(spec.n_mels, spec.bands()).T
    if spec.layout == "bands_first":
        values = values.transpose(0, 2, 1)
    if spec.channel_dim:
        values = values[:, None]
    return np.ascontiguousarray(values, dtype=np.float32)


def model_input(spec: AudioInput, samples: np.ndarray) -> np.ndarray:
    """[batch, window] samples -> exactly what the model takes: the samples, or their features."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 2 or samples.shape[1] != spec.window:
        raise ValueError(f"expected audio windows [B, {spec.window}], got {list(samples.shape)}")
    if spec.features is None:
        return np.ascontiguousarray(samples)
    return features(samples, spec.rate_hz, spec.features)
