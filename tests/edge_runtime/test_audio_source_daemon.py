"""Microphone path end to end: a WAV file made at test time from real speech (pyannote.audio's sample), played by
the `audio` source into the real Silero VAD bundle (recurrent state) in the real daemon, over the real broker.
Every window's speech / no-speech decision is the one the original model gives run directly, its state carried."""

from __future__ import annotations

import numpy as np
import pytest

from converter.cli import main as convert
from edge_runtime.audio.wav import read_wav, write_wav
from tests.support.broker import Collector
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config
from tests.support.speech import RATE, silero_direct, silero_model, speech, write_folders, write_silero_card

pytestmark = pytest.mark.slow


def test_a_wav_file_through_the_audio_source_decides_like_silero_run_directly(tmp_path, broker):
    calibration, evaluation = write_folders(tmp_path / "data")
    bundle = tmp_path / "silero.bundle"
    card = write_silero_card(tmp_path / "silero.card.yaml")
    assert convert([str(silero_model()), "-o", str(bundle), "--target", "x86_64", "--card", str(card),
                    "--calibration", str(calibration), "--eval", str(evaluation), "--quantize", "none",
                    "--no-latency"]) == 0
    samples = speech()[: 20 * RATE]  # 20 s: silence, then the conversation
    kitchen = tmp_path / "kitchen.wav"
    write_wav(kitchen, samples, RATE)
    original = silero_direct(read_wav(kitchen).samples)  # the 16-bit samples the daemon hears
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=bundle,
                          source={"type": "audio", "path": str(kitchen), "realtime": False})
    with Collector(broker.port, "edge/dev-1/predictions/#") as collector:
        daemon = DaemonProcess(config, "--exit-when-done")
        assert daemon.wait(120) == 0, daemon.output()
        assert wait_until(lambda: len(messages(collector, "/predictions/silero-vad")) == len(original), 15)
    predictions = sorted(messages(collector, "/predictions/silero-vad"), key=lambda message: message["seq"])
    decisions = [message["decision"] for message in predictions]
    assert decisions == (original >= 0.5).tolist()
    values = np.array([message["values"][0] for message in predictions])
    assert np.abs(values - original).max() < 1e-4
    assert 0.2 < np.mean(decisions) < 0.9  # both speech and silence were heard


def test_a_microphone_that_goes_silent_raises_drift(tmp_path, broker):
    """Speech, then digital silence (a dead microphone) through the audio source: drift on the audio level within
    a window of windows (30, about a second), and nothing raised while the speech played."""
    calibration, evaluation = write_folders(tmp_path / "data")
    bundle = tmp_path / "silero.bundle"
    card = write_silero_card(tmp_path / "silero.card.yaml")
    assert convert([str(silero_model()), "-o", str(bundle), "--target", "x86_64", "--card", str(card),
                    "--calibration", str(calibration), "--eval", str(evaluation), "--quantize", "none",
                    "--no-latency"]) == 0
    talk = speech()[7 * RATE: 17 * RATE]
    recording = tmp_path / "dead-mic.wav"
    write_wav(recording, np.concatenate([talk, np.zeros(3 * RATE, np.float32)]), RATE)
    spoken = (len(talk) - 576) // 512 + 1  # windows that hold speech only
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=bundle,
                          source={"type": "audio", "path": str(recording), "realtime": False},
                          model={"drift": {"interval_s": 3600}, "max_batch": 1})
    with Collector(broker.port, "edge/dev-1/drift/#") as collector:
        daemon = DaemonProcess(config, "--exit-when-done")
        assert daemon.wait(120) == 0, daemon.output()
        assert collector.sync()
    reports = messages(collector, "/drift/silero-vad")
    assert reports and reports[0]["window"]["samples_seen"] > spoken  # the speech raised nothing
    final = next(report for report in reports if report["state"] == "drift")
    assert final["window"]["samples_seen"] <= spoken + 30
    level = final["channels"]["level_db"]
    assert level["level"] == "drift" and level["mean"] < level["reference"][0]
