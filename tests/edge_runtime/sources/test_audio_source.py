"""The audio source: a real WAV file (pyannote's speech sample) delivered sample for sample, paced at its own rate
against an injected clock; a microphone through a stand-in sounddevice module (there is no sound card here):
samples, a timeline counted in samples, overruns, a device that falls silent and is reopened; one-line errors."""

from __future__ import annotations

import sys
import threading
import time
import types

import numpy as np
import pytest

from edge_runtime.audio.wav import write_wav
from edge_runtime.card import ModelCard
from edge_runtime.sources import SourceUnavailable, create_source
from edge_runtime.sources.audio import AudioSource, AudioSourceConfig, SampleClock
from tests.support.speech import RATE, speech


def audio_card(window: int = 576, hop: int = 512) -> ModelCard:
    return ModelCard.model_validate({"name": "vad", "input": {"kind": "audio", "rate_hz": RATE, "window": window,
                                                              "hop": hop}})


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Five seconds of real speech (from 6.5 s: the first words of the conversation)."""
    samples = speech()[int(6.5 * RATE):int(11.5 * RATE)]
    path = tmp_path_factory.mktemp("audio") / "speech.wav"
    write_wav(path, samples, RATE)
    return path, samples


def test_config_needs_a_device_or_a_path():
    with pytest.raises(ValueError, match="exactly one of `device:`"):
        AudioSourceConfig(type="audio")
    with pytest.raises(ValueError, match="exactly one of `device:`"):
        AudioSourceConfig(type="audio", device="default", path="a.wav")
    assert AudioSourceConfig(type="audio", path="a.wav", realtime=False).waits_for_model
    assert not AudioSourceConfig(type="audio", device=2).waits_for_model


def test_a_wav_file_as_fast_as_the_model_goes_delivers_every_sample(recording, sink, make_context):
    path, samples = recording
    source = AudioSource(AudioSourceConfig(type="audio", path=path, realtime=False), make_context(audio_card()))
    source.start()
    sink.wait_until(lambda: source.finished)
    source.stop()
    np.testing.assert_allclose(sink.values()[:, 0], samples, atol=1 / 32768)  # 16-bit PCM round trip
    assert {len(block) for block in sink.blocks[:-1]} == {512}  # hop-sized blocks
    np.testing.assert_allclose(np.diff(sink.ts()), 1 / RATE, atol=1e-6)
    assert source.health()["samples"] == len(samples) and source.health()["state"] == "finished"


def test_a_wav_file_plays_at_its_own_rate(recording, sink, make_context):
    path, samples = recording
    now = [0.0]

    def wait(seconds: float) -> bool:
        now[0] += seconds
        return False

    source = AudioSource(AudioSourceConfig(type="audio", path=path), make_context(audio_card()),
                         clock=lambda: now[0], wait=wait)
    source.start()
    sink.wait_until(lambda: source.finished)
    source.stop()
    assert now[0] == pytest.approx(len(samples) / RATE)  # the last block is due when its last sample was recorded
    assert sink.samples() == len(samples)


def test_loop_keeps_the_timeline_increasing(recording, sink, make_context):
    path, samples = recording
    source = AudioSource(AudioSourceConfig(type="audio", path=path, realtime=False, loop=True),
                         make_context(audio_card()))
    source.start()
    sink.wait_until(lambda: sink.samples() > 2 * len(samples))
    source.stop()
    assert (np.diff(sink.ts()) > 0).all()


def test_wav_errors_are_one_line(tmp_path, make_context, image_card):
    write_wav(tmp_path / "8k.wav", np.zeros(800, np.float32), 8000)
    with pytest.raises(ValueError, match="8000"):
        AudioSource(AudioSourceConfig(type="audio", path=tmp_path / "8k.wav"), make_context(audio_card()))
    with pytest.raises(ValueError, match="feeds audio models"):
        AudioSource(AudioSourceConfig(type="audio", path=tmp_path / "8k.wav"), make_context(image_card()))


def test_sample_clock_counts_samples_and_reanchors_after_a_loss():
    now = [100.0]
    clock = SampleClock(1000, now=lambda: now[0])
    first = clock.stamp(100)
    assert first[-1] == pytest.approx(99.999)
    now[0] += 0.103  # callback jitter: the next block still follows sample for sample
    second = clock.stamp(100)
    assert second[0] == pytest.approx(first[-1] + 0.001)
    now[0] += 0.5  # an overrun lost samples: the timeline jumps to now (a gap the model worker sees)
    third = clock.stamp(100, lost=True)
    assert third[-1] == pytest.approx(now[0] - 0.001) and clock.reanchored == 1


class FakeInputStream:
    """sounddevice.InputStream as the source uses it: a thread calls back with `blocksize` frames of the fake's
    recording, an overrun flagged on the third block; `silent_after` blocks, it stops calling (unplugged)."""

    recording: np.ndarray = np.zeros(0, np.float32)
    silent_after: int | None = None
    opened: list[dict] = []

    def __init__(self, *, device, channels, samplerate, dtype, blocksize, callback):
        self.kwargs = {"device": device, "channels": channels, "samplerate": samplerate, "dtype": dtype,
                       "blocksize": blocksize}
        FakeInputStream.opened.append(self.kwargs)
        self.callback, self.blocksize, self.channels = callback, blocksize, channels
        self.running = threading.Event()
        self.active = True

    def __enter__(self):
        self.running.set()
        threading.Thread(target=self._pump, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.running.clear()

    def _pump(self):
        starts = range(0, len(self.recording) - self.blocksize + 1, self.blocksize)
        for block, start in enumerate(starts):
            if not self.running.is_set() or (self.silent_after is not None and block >= self.silent_after):
                return
            mono = self.recording[start:start + self.blocksize]
            indata = np.stack([mono * (channel + 1) for channel in range(self.channels)], axis=1)
            self.callback(indata, self.blocksize, None, types.SimpleNamespace(input_overflow=block == 2))
            time.sleep(0.001)


@pytest.fixture
def fake_sounddevice(monkeypatch):
    module = types.ModuleType("sounddevice")
    module.InputStream = FakeInputStream
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    FakeInputStream.opened = []
    FakeInputStream.silent_after = None
    return FakeInputStream


def test_a_microphone_feeds_its_samples_with_overruns_counted(fake_sounddevice, recording, sink, make_context):
    _, samples = recording
    fake_sounddevice.recording = samples[:512 * 20]
    source = create_source(AudioSourceConfig(type="audio", device="default", channel=1), make_context(audio_card()))
    source.start()
    sink.wait_until(lambda: sink.samples() == 512 * 20)
    health = source.health()
    source.stop()
    assert fake_sounddevice.opened[0] == {"device": None, "channels": 2, "samplerate": RATE, "dtype": "float32",
                                          "blocksize": 512}
    np.testing.assert_array_equal(sink.values()[:, 0], samples[:512 * 20] * 2)  # channel 1 of the device
    assert health["state"] == "connected" and health["overruns"] == 1 and health["samples"] == 512 * 20
    assert (np.diff(sink.ts()) > 0).all()


def test_a_microphone_that_falls_silent_is_reopened(fake_sounddevice, recording, sink, make_context):
    _, samples = recording
    fake_sounddevice.recording = samples[:512 * 10]
    fake_sounddevice.silent_after = 3
    source = create_source(AudioSourceConfig(type="audio", device="USB", timeout_s=0.1, reconnect_min_s=0.01),
                           make_context(audio_card()))
    source.start()
    try:
        sink.wait_until(lambda: source.health()["connects"] >= 3)
    finally:
        source.stop()
    health = source.health()
    assert health["last_error"].startswith("TimeoutError: no samples for")
    assert [opened["device"] for opened in fake_sounddevice.opened[:2]] == ["USB", "USB"]


def test_a_missing_sounddevice_names_the_extra(monkeypatch, make_context):
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(SourceUnavailable, match=r"pip install 'edge-runtime\[audio\]'"):
        create_source(AudioSourceConfig(type="audio", device="default"), make_context(audio_card()))
