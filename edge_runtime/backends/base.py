"""What every inference backend offers the daemon, what choosing one reports, and all a backend plugin imports
from this package.

A backend plugin is one module in this package that defines a `BaseBackendConfig` subclass (`type:
Literal[KEY]`, `model_format` the bundle format it runs) and the functions `check_installed()` (raises
`BackendUnavailable` with the pip command when its native library is missing) and
`open_backend(model_bytes, config, board, precision="fp32")`, which returns a `LoadedBackend` or raises
`BackendUnavailable` / `AttemptsFailed` with a reason. A plugin whose config sets `uses_bundle = True` is also given
`bundle=BundleModels(...)`: the portable model's tensor names and the bundle's models compiled for an accelerator
(a `.rknn`, an Edge TPU-compiled TFLite), so it can run one of those and fall back to the portable model. The
native library is imported inside those functions, never at module level, so discovery (`edge_runtime.backends`)
reads every plugin's config on any board.

The fallback order is the user's; whenever the backend that runs is not the first one asked for, the choice
says `degraded` and why. Never a silent fallback.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from edge_runtime.plugin import PluginConfig


class BaseBackendConfig(PluginConfig):
    """Base of every backend's config: a subclass with `type: Literal[KEY]` makes KEY a valid `backends:` type."""

    #: the bundle model format this backend runs ("onnx", "tflite", or "rknn": a model compiled for an accelerator)
    model_format: ClassVar[str]
    #: `open_backend` also takes `bundle=BundleModels(...)`
    uses_bundle: ClassVar[bool] = False


@dataclass(frozen=True)
class BundleModels:
    """What a bundle carries besides the model handed to `open_backend`: the portable model's input and output names
    (a compiled model's runtime may not say them) and the models compiled for an accelerator, by format."""

    input_names: list[str]
    output_names: list[str]
    accelerated: Mapping[str, bytes] = field(default_factory=dict)


class BackendUnavailable(RuntimeError):
    """This backend (or accelerator) cannot run here; the reason is shown to the user."""


@dataclass(frozen=True)
class Attempt:
    """One thing tried while choosing a backend: a provider, a delegate, or a backend as a whole.

    `outcome` is "ok" for what runs, otherwise what went wrong in words a user can act on, e.g.
    "unavailable (not in this onnxruntime build: CPUExecutionProvider)" or "failed to load (...)".
    """

    backend: str
    device: str | None
    outcome: str
    is_delegate: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def target(self) -> str:
        """``backend:device`` as `BackendChoice.active` spells it, or the backend alone."""
        return f"{self.backend}:{self.device}" if self.device else self.backend

    def sentence(self) -> str:
        """The attempt as a clause of a fallback reason: "delegate libedgetpu.so.1 failed to load (...)"."""
        if self.device is None:
            return f"{self.backend} {self.outcome}"
        return f"{'delegate ' if self.is_delegate else ''}{self.device} {self.outcome}"

    def __str__(self) -> str:
        return f"{self.target}: {self.outcome}"


class AttemptsFailed(BackendUnavailable):
    """A plugin could run nothing it was asked to; `attempts` says why for each provider or delegate."""

    def __init__(self, message: str, attempts: list[Attempt]):
        super().__init__(message)
        self.attempts = attempts


class LoadedBackend(ABC):
    """A model loaded on one backend, ready to run batches."""

    #: plugin name, e.g. "onnxruntime" or "tflite"
    name: str
    #: what actually executes, e.g. "CPUExecutionProvider" or "libedgetpu.so.1" or "XNNPACK"
    device: str
    input_names: list[str]
    output_names: list[str]
    #: largest batch the model accepts in one run; None when the batch dimension is dynamic
    max_batch: int | None
    #: which of the bundle's accelerator models runs ("rknn", "edgetpu"); None: the portable model
    accelerated: str | None = None

    @abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch (batch first) and return every output by name."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release native resources."""


@dataclass
class BackendChoice:
    """The backend that runs a model, and whether that is a fallback."""

    backend: LoadedBackend
    degraded: bool = False
    reason: str | None = None
    attempts: list[str] = field(default_factory=list)

    @property
    def active(self) -> str:
        return f"{self.backend.name}:{self.backend.device}"

    def describe(self) -> dict:
        return {"active": self.active, "degraded": self.degraded, "reason": self.reason, "attempts": self.attempts}
