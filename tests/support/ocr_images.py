"""Real photos of text for the OCR model tests: scikit-image ships them inside its wheel (`skimage.data.page()`, a
photographed book page, and `text()`, handwriting on paper), so nothing is downloaded.

Model-ready arrays (NCHW float32) are made the way PaddleOCR feeds its models: BGR, scaled to [0, 1], normalised
per channel. Calibration and evaluation never share a crop: evaluation takes the page's text lines (and the whole
page's lower half), calibration takes other lines, the page's upper half and the handwriting.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: PP-OCR's text-direction classifier: (x / 255 - 0.5) / 0.5, BGR, 48 x 192
CLS_MEAN, CLS_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
#: PP-OCR's detectors: ImageNet statistics in BGR order
DET_MEAN, DET_STD = (0.406, 0.456, 0.485), (0.225, 0.224, 0.229)


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def model_ready(images: list[np.ndarray], mean: tuple, std: tuple) -> np.ndarray:
    """RGB uint8 HWC images -> BGR float32 NCHW, (x / 255 - mean) / std."""
    batch = np.stack(images).astype(np.float32)[..., ::-1] / 255.0
    batch = (batch - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


#: Rows of skimage.data.page() that hold one line of text each (from the row profile of dark pixels); the
#: evaluation lines and the calibration lines are different lines.
EVAL_LINES = ((64, 83), (100, 119), (168, 191))
CALIBRATION_LINES = ((10, 40), (46, 64), (83, 101), (117, 136))


def direction_crops(*, evaluation: bool, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Text-line crops, 48 x 192 (a line's height and four times as wide), upright (label 0) and turned 180
    degrees (label 1), alternately."""
    from skimage import data

    rng = np.random.default_rng(seed)
    page = _rgb(data.page())
    lines = EVAL_LINES if evaluation else CALIBRATION_LINES
    images, labels = [], []
    for index in range(count):
        top, bottom = lines[index // 2 % len(lines)]
        width = 4 * (bottom - top)
        left = int(rng.integers(0, page.shape[1] - width + 1))
        crop = _resize(page[top:bottom, left : left + width], 48, 192)
        turned = index % 2 == 1
        images.append(crop[::-1, ::-1] if turned else crop)
        labels.append(int(turned))
    return model_ready(images, CLS_MEAN, CLS_STD), np.asarray(labels, np.int64)


def detector_images(*, evaluation: bool, height: int, width: int, count: int, seed: int = 0) -> np.ndarray:
    """Views of text for a text detector, resized to height x width: crops of the page's lower half (evaluation) or
    of its upper half and of the handwriting (calibration), at random positions and scales."""
    from skimage import data

    rng = np.random.default_rng(seed)
    page = _rgb(data.page())
    half = page.shape[0] // 2
    sources = [page[half - 4 :]] if evaluation else [page[: half + 4], _rgb(data.text())]
    images = []
    for index in range(count):
        source = sources[index % len(sources)]
        crop_h = int(source.shape[0] * rng.uniform(0.6, 1.0))
        crop_w = min(source.shape[1], crop_h * width // height)
        top = int(rng.integers(0, source.shape[0] - crop_h + 1))
        left = int(rng.integers(0, source.shape[1] - crop_w + 1))
        images.append(_resize(source[top : top + crop_h, left : left + crop_w], height, width))
    return model_ready(images, DET_MEAN, DET_STD)
