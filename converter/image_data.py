"""Calibration and evaluation data from a folder of images (JPEG/PNG), prepared exactly as the device prepares a
frame: decoded by the device's `decode_image` (channel order from the card), resized (stretch or letterbox),
scaled and normalised by the device's `Preprocessor`. So int8 ranges and verification see what the model will see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converter.data import Dataset
from converter.errors import ConversionError
from converter.model_info import TensorInfo
from edge_runtime.card import ImageInput, ModelCard
from edge_runtime.decode import decode_image
from edge_runtime.stream import InputRejected
from edge_runtime.window import Preprocessor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: a calibration image may be a large photo; the device's MQTT limit does not apply to files on a workstation
MAX_IMAGE_BYTES = 256 * 2**20
#: frames resized at a time (a folder of thousands of photos must not all be decoded at once)
CHUNK = 32


def image_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def _target(card: ModelCard, inputs: list[TensorInfo], folder: Path) -> TensorInfo:
    if card.input.name is not None:
        found = next((info for info in inputs if info.name == card.input.name), None)
        if found is None:
            raise ConversionError(f"{folder}: the card's image input '{card.input.name}' is not a model input")
        return found
    if len(inputs) != 1:
        raise ConversionError(f"{folder}: the model takes {len(inputs)} inputs; a folder of images feeds one: name "
                              "it in the card (input.name) or give an npz with every input")
    return inputs[0]


def load_image_folder(folder: Path, card: ModelCard | None, inputs: list[TensorInfo], *, what: str) -> Dataset:
    """Every image in `folder` (name order) as model input; ConversionError naming the file for a bad one."""
    if card is None or not isinstance(card.input, ImageInput):
        raise ConversionError(
            f"{what} data {folder} is a folder of images, but nothing says how to feed them to the model: give a "
            f"--card with an image input (kind: image, height, width, ...) or a model whose exporter metadata says "
            f"so (ultralytics)")
    files = image_files(folder)
    if not files:
        raise ConversionError(f"{what} folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} files")
    target = _target(card, inputs, folder)
    if target.dtype not in ("float32", "float16", "float64"):
        raise ConversionError(f"{folder}: model input '{target.name}' is {target.dtype}; images are fed as float")
    preprocess = Preprocessor(card)
    parts = []
    for start in range(0, len(files), CHUNK):
        frames = []
        for path in files[start:start + CHUNK]:
            try:
                frames.append(decode_image(path.read_bytes(), card.input, MAX_IMAGE_BYTES, lambda: 0.0))
            except InputRejected as rejected:
                raise ConversionError(f"{path}: {rejected.detail}") from None
            except OSError as error:
                raise ConversionError(f"{path}: cannot read ({error})") from None
        parts.append(preprocess.image(frames))
    array = np.concatenate(parts).astype(target.dtype, copy=False)
    wanted = target.shape[1:]
    if len(wanted) != array.ndim - 1 or any(isinstance(w, int) and w != h for w, h in zip(wanted, array.shape[1:],
                                                                                          strict=False)):
        raise ConversionError(f"{folder}: the card makes images of shape {list(array.shape[1:])}, but model input "
                              f"'{target.name}' is {target.shape_text()}")
    return Dataset({target.name: np.ascontiguousarray(array)}, None, str(folder))
