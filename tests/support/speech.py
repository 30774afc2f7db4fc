"""Real speech for the audio tests: pyannote.audio's sample recording (from its pinned wheel, see third_party.py),
cut into calibration and evaluation folders, and the Silero VAD card.

The recording is 30 s of a two-speaker conversation at 16 kHz with no speech for the first 6.7 s and pauses
between turns, so a voice-activity model has both speech and non-speech windows to decide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from edge_runtime.audio.wav import read_wav, write_wav
from tests.support.third_party import data_path, model_path

RATE = 16000
#: Silero VAD v5 at 16 kHz takes 512 new samples plus the last 64 of the previous call (livekit's wrapper does the
#: same): a 576-sample window every 512 samples
SILERO_CARD = {
    "name": "silero-vad",
    "description": "Silero VAD v5: speech probability for every 32 ms of 16 kHz audio",
    "input": {"kind": "audio", "name": "input", "rate_hz": RATE, "window": 576, "hop": 512},
    "constants": {"sr": RATE},
    "state": {"state": "stateN"},
    "output": {"kind": "regression", "name": "output", "threshold": 0.5},
}


def speech() -> np.ndarray:
    return read_wav(data_path("pyannote-sample-speech")).samples


def speech_turns() -> list[tuple[float, float]]:
    """(start, end) seconds of every speaker turn of the sample (its RTTM)."""
    turns = []
    for line in data_path("pyannote-sample-speech-turns").read_text().splitlines():
        fields = line.split()
        turns.append((float(fields[3]), float(fields[3]) + float(fields[4])))
    return turns


def write_folders(root: Path) -> tuple[Path, Path]:
    """Calibration: the two halves of the sample at 70% of its level; evaluation: the whole sample as it is."""
    samples = speech()
    calibration, evaluation = root / "calibration", root / "eval"
    calibration.mkdir(parents=True)
    evaluation.mkdir(parents=True)
    half = len(samples) // 2
    write_wav(calibration / "first-half.wav", samples[:half] * 0.7, RATE)
    write_wav(calibration / "second-half.wav", samples[half:] * 0.7, RATE)
    write_wav(evaluation / "sample.wav", samples, RATE)
    return calibration, evaluation


def write_silero_card(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**SILERO_CARD, **changes}, sort_keys=False))
    return path


def silero_model() -> Path:
    return model_path("silero-vad")


def silero_direct(samples: np.ndarray, window: int = 576, hop: int = 512) -> np.ndarray:
    """The original model run directly, as its wrapper runs it: every window in order, the state carried, the
    sample rate fed as an int64 scalar. One speech probability per window."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(silero_model()), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    rate = np.array(RATE, dtype=np.int64)
    probabilities = []
    for end in range(window, len(samples) + 1, hop):
        output, state = session.run(None, {"input": samples[None, end - window:end], "state": state, "sr": rate})
        probabilities.append(float(output[0, 0]))
    return np.asarray(probabilities)
