"""What every inference backend offers the daemon, and what choosing one reports.

A backend plugin is one module in this package exposing `open_backend(model_bytes, config, board)` that returns
a `LoadedBackend` (or raises `BackendUnavailable` with a reason). The fallback order is the user's; whenever the
backend that runs is not the first one asked for, the choice says `degraded` and why. Never a silent fallback.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


class BackendUnavailable(RuntimeError):
    """This backend (or accelerator) cannot run here; the reason is shown to the user."""


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
