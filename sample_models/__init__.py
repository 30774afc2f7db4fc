"""Sample models trained on real, package-shipped data: the inputs of the demo, the tests and the benchmarks.

A converter is only tested honestly on models that look like real ones: trained weights, BatchNorm to fuse,
activations with real ranges for calibration, and a test split whose accuracy a broken quantizer visibly
drops. Each sample is built once (a few seconds to a minute of CPU training) and then served from a cache.

Importing this package is cheap; torch, sktime and scikit-learn load only when a sample is built.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

SAMPLE_NAMES: tuple[str, ...] = ("activity", "activity_long", "activity_wide", "digits")
#: Calibration sets are capped: enough for stable activation ranges, small enough for fast quantization.
MAX_CALIBRATION = 512

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleModel:
    """The four files of one sample model (all inside one cache entry or one output folder)."""

    name: str
    onnx_path: Path
    card_path: Path
    calibration_path: Path
    eval_path: Path

    @classmethod
    def in_directory(cls, directory: Path, name: str) -> SampleModel:
        """The file names a sample uses wherever it lives: ``NAME.onnx``, ``NAME.card.yaml``, ..."""
        directory = Path(directory)
        return cls(
            name=name,
            onnx_path=directory / f"{name}.onnx",
            card_path=directory / f"{name}.card.yaml",
            calibration_path=directory / f"{name}.calibration.npz",
            eval_path=directory / f"{name}.eval.npz",
        )

    @property
    def paths(self) -> tuple[Path, Path, Path, Path]:
        return (self.onnx_path, self.card_path, self.calibration_path, self.eval_path)


@dataclass(frozen=True)
class TrainedSample:
    """What a sample module hands back: the eval-mode torch model and everything written beside it.

    Inputs are model-ready (normalised/scaled as the card says), labels are class indices.
    """

    model: Any  # torch.nn.Module; typed loosely so this module does not import torch
    card: dict[str, Any]
    x_calibration: np.ndarray
    y_calibration: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray


def _sample_module(name: str) -> ModuleType:
    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample model {name!r}; choose one of: {', '.join(SAMPLE_NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


def _write_data(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    np.savez(path, x=np.ascontiguousarray(x, dtype=np.float32), y=np.asarray(y, dtype=np.int64))


def write_sample(name: str, directory: Path) -> SampleModel:
    """Train sample `name` and write its four files into `directory` (no caching)."""
    import yaml

    from edge_runtime.card import ModelCard

    from .export import export_onnx

    module = _sample_module(name)
    files = SampleModel.in_directory(directory, name)
    started = time.perf_counter()
    trained: TrainedSample = module.train()
    _log.info("trained sample %r in %.1f s", name, time.perf_counter() - started)
    ModelCard.model_validate(trained.card)  # a card the converter would reject must not reach the cache
    export_onnx(trained.model, trained.x_eval[:8], files.onnx_path)
    files.card_path.write_text(yaml.safe_dump(trained.card, sort_keys=False), encoding="utf-8")
    _write_data(
        files.calibration_path,
        trained.x_calibration[:MAX_CALIBRATION],
        trained.y_calibration[:MAX_CALIBRATION],
    )
    _write_data(files.eval_path, trained.x_eval, trained.y_eval)
    return files


def build_sample(name: str, cache_dir: Path | None = None) -> SampleModel:
    """Return sample `name` (one of SAMPLE_NAMES), training it only if the cache has no entry yet.

    `cache_dir` defaults to ``$EDGE_CACHE_DIR`` or ``<repo>/.cache/models``; see `sample_models.cache`.
    """
    from .cache import cached_entry

    module = _sample_module(name)
    entry = cached_entry(
        name, str(module.SAMPLE_VERSION), lambda directory: write_sample(name, directory), cache_dir
    )
    return SampleModel.in_directory(entry, name)


__all__ = ["MAX_CALIBRATION", "SAMPLE_NAMES", "SampleModel", "TrainedSample", "build_sample", "write_sample"]
