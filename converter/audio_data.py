"""A folder of WAV files as calibration or evaluation data: every recording cut into windows and featurised
exactly as the device does it (edge_runtime's SlidingWindow and audio front end), one recording after another."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converter.errors import ConversionError
from edge_runtime.audio.features import model_input
from edge_runtime.audio.wav import check_rate, read_wav
from edge_runtime.card import AudioInput
from edge_runtime.stream import SampleBlock
from edge_runtime.window import SlidingWindow


def wav_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() == ".wav")


def recording_windows(samples: np.ndarray, spec: AudioInput) -> np.ndarray:
    """[windows, window] raw samples, cut by the daemon's own SlidingWindow (first window after `window`
    samples, then one every `hop`), so the converter sees the windows the device will see."""
    window = SlidingWindow(spec.window, spec.hop, 1)
    ts = np.arange(len(samples), dtype=np.float64) / spec.rate_hz
    cut = window.push(SampleBlock(ts=ts, values=np.asarray(samples, dtype=np.float32)[:, None]))
    if not cut:
        return np.zeros((0, spec.window), dtype=np.float32)
    return np.stack([values[:, 0] for _, values in cut])


def load_wav_folder(folder: Path, spec: AudioInput, what: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Model-ready inputs [windows, *model shape], the row where each recording starts, and the file names."""
    files = wav_files(folder)
    if not files:
        raise ConversionError(f"{what} folder {folder} holds no .wav files")
    parts, starts, names, total = [], [], [], 0
    for path in files:
        try:
            recording = read_wav(path)
            check_rate(recording, spec.rate_hz)
        except ValueError as exc:
            raise ConversionError(str(exc)) from None
        windows = recording_windows(recording.samples, spec)
        if not len(windows):
            raise ConversionError(f"{path}: {len(recording.samples)} samples, shorter than one window "
                                  f"({spec.window} samples, card input.window)")
        parts.append(model_input(spec, windows))
        starts.append(total)
        names.append(path.name)
        total += len(windows)
    return np.concatenate(parts), np.asarray(starts, dtype=np.int64), names
