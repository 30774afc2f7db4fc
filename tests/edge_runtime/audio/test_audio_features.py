"""The on-device log-mel and MFCC front end against a reference written independently here with scipy: frames cut
by index, scipy's Hann window and FFT, mel triangles built by interpolation from the Slaney formula as published,
scipy's orthonormal DCT. If the two disagree, the device would feed a model other features than it was trained
on."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.signal

from edge_runtime.audio.features import features, hz_to_mel, mel_to_hz, model_input
from edge_runtime.card import AudioFeatures, AudioInput, ModelCard

RATE = 16000


def slaney_mel(hz: float) -> float:
    """Slaney's Auditory Toolbox: 3 bands per 200 Hz up to 1 kHz, then 27 bands per factor 6.4."""
    return hz * 3 / 200 if hz < 1000 else 15 + 27 * np.log(hz / 1000) / np.log(6.4)


def slaney_hz(mel: float) -> float:
    return mel * 200 / 3 if mel < 15 else 1000 * 6.4 ** ((mel - 15) / 27)


def reference_log_mel(samples: np.ndarray, n_fft: int, hop: int, n_mels: int, f_min: float, f_max: float,
                      offset: float) -> np.ndarray:
    """[frames, n_mels] for one window, computed one frame and one band at a time."""
    hann = scipy.signal.get_window("hann", n_fft, fftbins=True)
    freqs = np.arange(n_fft // 2 + 1) * RATE / n_fft
    edges = [slaney_hz(m) for m in np.linspace(slaney_mel(f_min), slaney_mel(f_max), n_mels + 2)]
    bank = np.array([np.interp(freqs, edges[i:i + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0)
                     * 2.0 / (edges[i + 2] - edges[i]) for i in range(n_mels)])
    rows = []
    for start in range(0, len(samples) - n_fft + 1, hop):
        spectrum = scipy.fft.rfft(samples[start:start + n_fft] * hann)
        rows.append(np.log(bank @ (spectrum.real ** 2 + spectrum.imag ** 2) + offset))
    return np.array(rows)


@pytest.fixture
def windows() -> np.ndarray:
    """Two windows of a chirp plus noise: energy that moves across the bands."""
    t = np.arange(4000) / RATE
    chirp = 0.5 * scipy.signal.chirp(t, 100, t[-1], 6000)
    noise = np.random.default_rng(0).normal(0, 0.05, (2, len(t)))
    return (chirp + noise).astype(np.float32)


def test_the_mel_scale_is_slaneys():
    for hz in (0.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0):
        assert hz_to_mel(hz) == pytest.approx(slaney_mel(hz))
        assert mel_to_hz(hz_to_mel(hz)) == pytest.approx(hz)


def test_log_mel_matches_the_reference(windows):
    spec = AudioFeatures(type="log_mel", n_fft=400, hop_length=160, n_mels=40, f_min=20.0, f_max=7600.0,
                         layout="frames_first")
    got = features(windows, RATE, spec)
    assert got.shape == (2, spec.frames(4000), 40) and got.dtype == np.float32
    for row, window in zip(got, windows, strict=True):
        want = reference_log_mel(window.astype(np.float64), 400, 160, 40, 20.0, 7600.0, spec.log_offset)
        np.testing.assert_allclose(row, want, rtol=1e-4, atol=2e-3)


def test_mfcc_matches_the_reference_dct(windows):
    spec = AudioFeatures(type="mfcc", n_fft=512, hop_length=256, n_mels=32, n_mfcc=13, channel_dim=True)
    got = features(windows, RATE, spec)
    frames = spec.frames(4000)
    assert got.shape == (2, 1, 13, frames)  # [batch, 1, bands, frames]: bands_first with a channel axis
    for row, window in zip(got, windows, strict=True):
        log_mel = reference_log_mel(window.astype(np.float64), 512, 256, 32, 0.0, RATE / 2, spec.log_offset)
        want = scipy.fft.dct(log_mel, type=2, norm="ortho", axis=1)[:, :13].T
        np.testing.assert_allclose(row[0], want, rtol=1e-4, atol=5e-3)


def test_the_card_shape_is_what_the_front_end_makes():
    card = ModelCard.model_validate({"name": "kws", "input": {
        "kind": "audio", "rate_hz": RATE, "window": 16000, "hop": 8000,
        "features": {"type": "log_mel", "n_mels": 40, "n_fft": 480, "hop_length": 160}}})
    made = model_input(card.input, np.zeros((3, 16000), np.float32))
    assert list(made.shape[1:]) == card.input.model_shape() == [40, 98]
    assert np.isfinite(made).all()  # silence stays finite: log(0 + log_offset)


def test_samples_pass_through_without_a_front_end():
    spec = AudioInput(rate_hz=RATE, window=576, hop=512)
    samples = np.random.default_rng(1).uniform(-1, 1, (2, 576)).astype(np.float32)
    assert spec.model_shape() == [576]
    np.testing.assert_array_equal(model_input(spec, samples), samples)


@pytest.mark.parametrize(("features_spec", "message"), [
    ({"n_fft": 1024}, "longer than the window"),
    ({"type": "mfcc", "n_mels": 10, "n_mfcc": 13}, "exceeds n_mels"),
    ({"f_max": 9000}, "rate_hz / 2"),
    ({"n_mfcc": 13}, "n_mfcc goes with features.type: mfcc"),
])
def test_front_end_settings_that_cannot_work_are_refused(features_spec, message):
    with pytest.raises(ValueError, match=message):
        AudioInput(rate_hz=RATE, window=800, hop=400, features=features_spec)
