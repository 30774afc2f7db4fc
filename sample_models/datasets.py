"""Real data sets that installed packages ship, so the sample models train without any download.

BasicMotions comes with sktime, the digits with scikit-learn. Both loaders return arrays in a fixed,
documented order so that two builds on two machines see the same samples in the same sequence.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: BasicMotions channel order in the sktime .ts files: 3-axis accelerometer, then 3-axis gyroscope.
BASIC_MOTIONS_CHANNELS = ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
BASIC_MOTIONS_RATE_HZ = 10.0
DIGITS_SIZE = 32
DIGITS_MAX_PIXEL = 16.0
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class LabeledSplit:
    """Train and test arrays of one data set plus the class names (index i names label i)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    label_names: list[str]


def _encode_labels(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Map string labels to indices of the sorted names, so class order never depends on file order."""
    names = sorted({str(label) for label in train} | {str(label) for label in test})
    index = {name: i for i, name in enumerate(names)}
    encode = np.vectorize(lambda label: index[str(label)], otypes=[np.int64])
    return encode(train), encode(test), [name.lower() for name in names]


def _basic_motions_file(split: str) -> Path:
    """Locate the .ts file inside the installed sktime without importing sktime's heavy modules."""
    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("sktime is not installed; it ships the BasicMotions data set")
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "datasets" / "data" / "BasicMotions" / f"BasicMotions_{split.upper()}.ts"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the sktime install")
    return path


def parse_ts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse an equal-length, multivariate ``.ts`` file (sktime/UEA format) into [N, C, T] and labels.

    Each data line is ``dim0 values : dim1 values : ... : label`` with comma separated values.
    """
    series: list[list[list[float]]] = []
    labels: list[str] = []
    in_data = False
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower() == "@data"
            continue
        *dims, label = line.split(":")
        series.append([[float(value) for value in dim.split(",")] for dim in dims])
        labels.append(label.strip())
    if not series:
        raise ValueError(f"{path} has no data lines")
    return np.asarray(series, dtype=np.float32), np.asarray(labels)


def _basic_motions_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split via sktime's loader when it works offline, else straight from the shipped file."""
    try:
        from sktime.datasets import load_basic_motions

        x, y = load_basic_motions(split=split, return_type="numpy3D")
        return np.asarray(x, dtype=np.float32), np.asarray(y).astype(str)
    except Exception:  # any loader problem (API change, a download attempt): parse the shipped file
        return parse_ts(_basic_motions_file(split))


def load_basic_motions() -> LabeledSplit:
    """BasicMotions: 40 + 40 smartwatch recordings, 6 IMU channels, 100 samples at 10 Hz, 4 activities.

    Returns float32 arrays [N, 6, 100] in the data set's own recording order.
    """
    x_train, labels_train = _basic_motions_split("train")
    x_test, labels_test = _basic_motions_split("test")
    y_train, y_test, names = _encode_labels(labels_train, labels_test)
    return LabeledSplit(x_train, y_train, x_test, y_test, names)


def eval_and_held_out(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the test recordings the converter evaluates on, and of those nobody converts with.

    Whole recordings alternate between the two within each class (in the data set's order), so both halves hold
    every activity and neither is an early or a late session. The held-out half is what the drift benchmark and
    the demo replay: a drift threshold must hold on recordings that neither its calibration nor the converter's
    verification has seen, as a device's stream is.
    """
    labels = np.asarray(labels)
    position = np.zeros(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        rows = np.flatnonzero(labels == cls)
        position[rows] = np.arange(len(rows))
    return np.flatnonzero(position % 2 == 0), np.flatnonzero(position % 2 == 1)


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of [N, H, W] images to [N, size, size]; linear, so it keeps the pixel range."""
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    return resized[:, 0].numpy()


def load_digits_images() -> LabeledSplit:
    """scikit-learn's 8x8 digits (1797 images, pixels 0..16) as raw 32x32 images, stratified split.

    Pixels stay in 0..16 (the "raw" sensor values the card's ``scale: 1/16`` maps to [0, 1]); each split
    keeps the original order of the data set, so its first images are a natural calibration set.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(
        indices, test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    images = upsample(digits.images, DIGITS_SIZE)
    target = digits.target.astype(np.int64)
    names = [str(label) for label in range(10)]
    return LabeledSplit(images[train_idx], target[train_idx], images[test_idx], target[test_idx], names)
