"""Calibration and evaluation data (``DATA.npz``): one array per model input, optional integer labels ``y``.

Models whose card has constants or state (converter/sequence.py) and folders of WAV files (converter/audio_data.py)
are read into the same `Dataset`, with the card's constants beside the arrays and, for a recurrent model, the
recordings' boundaries so every stage is run over each recording in order with its own state carried.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from converter.dims import BATCH_DIM
from converter.errors import ConversionError
from converter.model_info import TensorInfo
from edge_runtime.feeds import InputPlan


@dataclass(frozen=True)
class Sequence:
    """Rows are consecutive windows of recordings; each recording starts at a row of `starts` with fresh state
    (converter/sequence.py runs a model over them)."""

    plan: InputPlan
    starts: np.ndarray
    recordings: list[str]

    def describe(self, rows: int) -> dict:
        return {"recordings": len(self.recordings), "windows": rows,
                "state": {slot.input: slot.output for slot in self.plan.state}}


@dataclass
class Dataset:
    """Model-ready inputs (by input name, batch first) and optional class labels.

    `constants` go with every batch as they are (a scalar sample rate has no batch axis). Inputs in `unbatched`
    are stored one full model input per row (a state tensor keeps its own batch axis, which need not be axis 0), so
    such a data set is fed one row at a time. With a `sequence`, rows are consecutive windows of recordings and a
    model is run over them in order with its state carried (converter/sequence.py); the state rows stored here are
    the ones the original model produced, fed where the order is broken (a subset, a calibrator).
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    #: input name -> the model axis its samples go to, where that is not axis 0 (a recurrent state
    #: `[layers, batch, hidden]`); arrays are stored samples first either way
    batch_axes: dict[str, int] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    unbatched: frozenset[str] = frozenset()
    sequence: Sequence | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def _feed(self, name: str, array: np.ndarray) -> np.ndarray:
        axis = self.batch_axes.get(name, 0)
        return np.ascontiguousarray(np.moveaxis(array, 0, axis)) if axis else array

    def batches(self, size: int = 1) -> Iterator[dict[str, np.ndarray]]:
        if self.unbatched:
            size = 1
        for start in range(0, len(self), size):
            feed = {name: array[start] if name in self.unbatched else self._feed(name, array[start : start + size])
                    for name, array in self.inputs.items()}
            yield {**feed, **self.constants}

    def subset(self, index: np.ndarray | slice) -> Dataset:
        """Some rows; a subset of recordings' windows is no longer a sequence: it is fed the stored state."""
        labels = None if self.labels is None else self.labels[index]
        inputs = {name: array[index] for name, array in self.inputs.items()}
        return replace(self, inputs=inputs, labels=labels, sequence=None)

    def first(self) -> dict[str, np.ndarray]:
        return next(self.batches(1))

    def golden(self) -> dict[str, np.ndarray]:
        """The bundle's golden input: the first row, or for a recurrent model a row from the middle of the data,
        so the golden check runs with a state that is not all zeros."""
        if self.sequence is None:
            return self.first()
        return next(self.subset(slice(len(self) // 2, len(self) // 2 + 1)).batches(1))


_FLOAT_KINDS = {"float16", "float32", "float64"}


def _fit_dtype(path: Path, name: str, array: np.ndarray, expected: str) -> np.ndarray:
    """Accept the model's dtype, or another float width for a float input; refuse anything else."""
    if str(array.dtype) == expected:
        return array
    if expected in _FLOAT_KINDS and str(array.dtype) in _FLOAT_KINDS:
        return array.astype(expected)
    raise ConversionError(f"{path}: input '{name}' has dtype {array.dtype}, but the model expects {expected}")


def batch_axis(info: TensorInfo) -> int:
    """The axis the check pass left dynamic for the batch (converter/dims.py), else 0."""
    return info.shape.index(BATCH_DIM) if BATCH_DIM in info.shape else 0


def _fit_shape(path: Path, name: str, array: np.ndarray, info: TensorInfo) -> None:
    axis = batch_axis(info)
    expected = [info.shape[axis], *info.shape[:axis], *info.shape[axis + 1 :]]  # samples first, like the data
    if array.ndim != len(expected):
        raise ConversionError(
            f"{path}: input '{name}' has shape {list(array.shape)} ({array.ndim} dimensions), "
            f"but the model expects {info.shape_text()} ({len(expected)} dimensions, samples first)"
        )
    for index, (given, wanted) in enumerate(zip(array.shape[1:], expected[1:], strict=True), start=1):
        if isinstance(wanted, int) and given != wanted:
            raise ConversionError(
                f"{path}: input '{name}' has shape {list(array.shape)}, but the model expects "
                f"{info.shape_text()} (dimension {index} is {given}, expected {wanted})"
            )
    if isinstance(expected[0], int) and expected[0] not in (1, array.shape[0]):
        raise ConversionError(
            f"{path}: input '{name}' has {array.shape[0]} samples but the model's batch is fixed at {expected[0]}"
        )


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConversionError(f"{path}: not a readable .npz file ({exc})") from None


def _checked_rows(path: Path, info: TensorInfo, array: np.ndarray) -> np.ndarray:
    """The model's dtype (any float width for a float input), its shape, finite values; contiguous."""
    array = _fit_dtype(path, info.name, array, info.dtype)
    _fit_shape(path, info.name, array, info)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if bad.any():
            raise ConversionError(
                f"{path}: input '{info.name}' has NaN or infinite values in {int(bad.sum())} of "
                f"{len(array)} samples (first: sample {int(np.argmax(bad))}); clean the data first"
            )
    return np.ascontiguousarray(array)


def fit_input(path: Path, info: TensorInfo, array: np.ndarray) -> np.ndarray:
    """One model input's rows, checked (`_checked_rows`), at least one."""
    array = _checked_rows(path, info, array)
    if not len(array):
        raise ConversionError(f"{path}: input '{info.name}' has no samples")
    return array


def load_dataset(path: str | Path, inputs: list[TensorInfo], *, what: str) -> Dataset:
    """Read and check an npz against the model inputs; every problem names the input, expected and given."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{what} data not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConversionError(f"{path}: not a readable .npz file ({exc})") from None
    names = [info.name for info in inputs]
    if len(inputs) == 1 and names[0] not in arrays and "x" in arrays:
        arrays[names[0]] = arrays.pop("x")
    missing = [name for name in names if name not in arrays]
    if missing:
        keys = ", ".join(sorted(arrays)) or "none"
        hint = " (or 'x' for a single-input model)" if len(inputs) == 1 else ""
        raise ConversionError(f"{path}: no array for model input(s) {', '.join(missing)}{hint}; the file has: {keys}")
    unknown = sorted(set(arrays) - set(names) - {"y"})
    if unknown:
        raise ConversionError(f"{path}: arrays {', '.join(unknown)} match no model input ({', '.join(names)})")
    model_inputs: dict[str, np.ndarray] = {}
    for info in inputs:
        model_inputs[info.name] = _checked_rows(path, info, arrays[info.name])
    counts = {len(array) for array in model_inputs.values()}
    if len(counts) != 1 or 0 in counts:
        raise ConversionError(f"{path}: inputs must have the same, non-zero number of samples; got {counts}")
    labels = arrays.get("y")
    if labels is not None:
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ConversionError(
                f"{path}: 'y' must be a 1-D array of integer class labels, got {labels.dtype} {list(labels.shape)}"
            )
        if len(labels) != counts.pop():
            raise ConversionError(f"{path}: 'y' has {len(labels)} labels for {len(arrays[names[0]])} samples")
        labels = labels.astype(np.int64)
    axes = {info.name: batch_axis(info) for info in inputs if batch_axis(info)}
    return Dataset(model_inputs, labels, str(path), axes)


def array_shapes(path: str | Path | None, what: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Array name -> (shape, "<what> data") from an npz's headers, without reading the arrays; {} when the file
    cannot be read (loading it later says why)."""
    if path is None or not Path(path).is_file():
        return {}
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as stream:
                    major, _ = np.lib.format.read_magic(stream)
                    header = np.lib.format
                    read = header.read_array_header_1_0 if major == 1 else header.read_array_header_2_0
                    shape, _, _ = read(stream)
                shapes[member[: -len(".npy")]] = (tuple(int(size) for size in shape), f"{what} data")
    except (OSError, ValueError, zipfile.BadZipFile):
        return {}
    return shapes
