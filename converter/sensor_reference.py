"""The reference of image and audio drift (edge_runtime/drift/sensor.py): the range of each frame statistic
(brightness, contrast, sharpness; audio level, spectral centroid, clipping) over the calibration data.

Statistics are taken on what the device computes them on, the raw frame or window, before resizing and
normalisation: a folder of images is decoded again by the device's `decode_image`, a folder of WAV files cut by
the device's `SlidingWindow`. Model-ready npz data is mapped back to pixels (the card's scale and normalisation
undone; letterbox padding stays in, so contrast reads a little low) or, for audio without a feature front end,
used as it is; audio features cannot be undone, so such a bundle has no audio drift reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converter.data import Dataset
from edge_runtime.card import AudioInput, ImageInput, ModelCard
from edge_runtime.drift.sensor import (
    AUDIO_STATISTICS,
    audio_statistics,
    image_statistic_names,
    image_statistics,
    reference_ranges,
)

#: at most this many frames or windows go into the reference (evenly spaced): a range needs no more
MAX_ROWS = 5000


def _image_pixels(calibration: Dataset, spec: ImageInput) -> list[np.ndarray]:
    source = Path(calibration.source)
    if source.is_dir():
        from converter.image_data import MAX_IMAGE_BYTES, image_files
        from edge_runtime.decode import decode_image

        return [decode_image(path.read_bytes(), spec, MAX_IMAGE_BYTES, lambda: 0.0).pixels
                for path in image_files(source)]
    array = calibration.inputs.get(spec.name) if spec.name else next(iter(calibration.inputs.values()))
    if array is None:
        return []
    x = np.asarray(array, dtype=np.float64)
    if spec.layout == "nchw":
        x = x.transpose(0, 2, 3, 1)
    if spec.normalize is not None:
        x = x * np.asarray(spec.normalize.std) + np.asarray(spec.normalize.mean)
    pixels = np.clip(np.round(x / spec.scale), 0, 255).astype(np.uint8)
    return list(pixels)


def _audio_windows(calibration: Dataset, spec: AudioInput) -> np.ndarray | None:
    source = Path(calibration.source)
    if source.is_dir():
        from converter.audio_data import recording_windows, wav_files
        from edge_runtime.audio.wav import read_wav

        parts = [recording_windows(read_wav(path).samples, spec) for path in wav_files(source)]
        return np.concatenate(parts) if parts else None
    if spec.features is not None:
        return None
    array = calibration.inputs.get(spec.name) if spec.name else next(iter(calibration.inputs.values()))
    return None if array is None else np.asarray(array).reshape(len(array), -1)


def _evenly(rows: list | np.ndarray) -> list | np.ndarray:
    if len(rows) <= MAX_ROWS:
        return rows
    picks = np.linspace(0, len(rows) - 1, MAX_ROWS).round().astype(int)
    return [rows[i] for i in picks] if isinstance(rows, list) else rows[picks]


def sensor_drift_section(calibration: Dataset, card: ModelCard | None) -> dict | None:
    """The `sensor_drift` section of the reference for an image or audio card, else None."""
    if card is None:
        return None
    spec = card.input
    if isinstance(spec, ImageInput):
        frames = _evenly(_image_pixels(calibration, spec))
        if not len(frames):
            return None
        values = np.stack([image_statistics(pixels, spec.channel_order) for pixels in frames])
        return reference_ranges(values, image_statistic_names(spec.channel_order), "image")
    if isinstance(spec, AudioInput):
        windows = _audio_windows(calibration, spec)
        if windows is None or not len(windows):
            return None
        values = np.stack([audio_statistics(window) for window in _evenly(windows)])
        return reference_ranges(values, list(AUDIO_STATISTICS), "audio")
    return None
