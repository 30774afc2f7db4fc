"""Replaying a WAV file into an audio model: 16-bit PCM and float, the first channel of a stereo file, every sample
in order at the card's rate; a file at another rate, or a WAV for a model that does not take audio, refused in
one line."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io.wavfile

from edge_runtime.card import ModelCard
from edge_runtime.sources.replay import ReplaySource, ReplaySourceConfig

RATE = 16000


def audio_card(rate_hz: int = RATE) -> ModelCard:
    return ModelCard.model_validate({"name": "vad", "input": {"kind": "audio", "rate_hz": rate_hz, "window": 576,
                                                              "hop": 512}})


def play(make_context, sink, path, card: ModelCard | None = None) -> np.ndarray:
    source = ReplaySource(ReplaySourceConfig(type="replay", path=path, speed=0), make_context(card or audio_card()))
    source.start()
    sink.wait_until(lambda: source.finished, 10)
    source.stop()
    assert sink.rejections == []
    return sink.values()


@pytest.fixture
def tone() -> np.ndarray:
    return (0.4 * np.sin(2 * np.pi * 440 * np.arange(3000) / RATE)).astype(np.float32)


def test_16_bit_pcm_plays_every_sample_in_order(tmp_path, sink, make_context, tone):
    path = tmp_path / "tone.wav"
    pcm = np.round(tone * 32767).astype(np.int16)
    scipy.io.wavfile.write(path, RATE, pcm)  # written by another library than the one reading it
    values = play(make_context, sink, path)
    assert values.shape == (3000, 1) and values.dtype == np.float32
    np.testing.assert_array_equal(values[:, 0], pcm / 32768.0)
    np.testing.assert_allclose(np.diff(sink.ts()), 1 / RATE, atol=1e-6)
    assert {len(block) for block in sink.blocks[:-1]} == {512}  # hop-sized blocks at speed 0


def test_float_stereo_plays_its_first_channel(tmp_path, sink, make_context, tone):
    path = tmp_path / "stereo.wav"
    scipy.io.wavfile.write(path, RATE, np.stack([tone, -tone], axis=1))
    np.testing.assert_array_equal(play(make_context, sink, path)[:, 0], tone)


def test_a_wav_at_another_rate_is_refused_naming_both_rates(tmp_path, make_context, tone):
    path = tmp_path / "44k.wav"
    scipy.io.wavfile.write(path, 44100, tone)
    with pytest.raises(ValueError) as error:
        ReplaySource(ReplaySourceConfig(type="replay", path=path), make_context(audio_card()))
    message = str(error.value)
    assert "44100 Hz" in message and "16000 Hz" in message and "\n" not in message


def test_a_wav_for_a_model_without_audio_input_is_refused(tmp_path, make_context, timeseries_card, tone):
    path = tmp_path / "tone.wav"
    scipy.io.wavfile.write(path, RATE, tone)
    with pytest.raises(ValueError, match="a WAV file feeds an audio model"):
        ReplaySource(ReplaySourceConfig(type="replay", path=path), make_context(timeseries_card(channels=1)))


def test_a_broken_wav_is_one_line(tmp_path, make_context):
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(ValueError, match="a WAV file needs a 'fmt ' and a 'data' chunk"):
        ReplaySource(ReplaySourceConfig(type="replay", path=path), make_context(audio_card()))
