"""Inference backends, one module each, so a board without a backend's native library still loads the rest.

Plugins are found by name in `BACKEND_MODULES` and imported only when asked for. Each plugin module offers
``check_installed()`` (raises `BackendUnavailable` when its native library is missing) and
``open_backend(model_bytes, config, board, precision="fp32")``, and records every provider or delegate it
tried as an `Attempt`, so a fallback is always visible to the user (see `edge_runtime.backends.select`).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from types import ModuleType

from edge_runtime.backends.base import BackendUnavailable

__all__ = [
    "BACKEND_FORMATS",
    "BACKEND_MODULES",
    "Attempt",
    "AttemptsFailed",
    "BackendUnavailable",
    "available_backends",
    "backends_for_format",
    "load_plugin",
]

_log = logging.getLogger("edge_runtime.backends")

#: plugin name (the `type` of its config) -> module implementing it
BACKEND_MODULES: dict[str, str] = {
    "onnxruntime": "edge_runtime.backends.onnxruntime",
    "tflite": "edge_runtime.backends.tflite",
}

#: plugin name -> the bundle model format it runs: onnx bundles run on onnxruntime, tflite bundles on tflite
BACKEND_FORMATS: dict[str, str] = {"onnxruntime": "onnx", "tflite": "tflite"}


def backends_for_format(model_format: str) -> list[str]:
    """Names of the plugins that can run a model of this format (in `BACKEND_MODULES` order)."""
    return [name for name in BACKEND_MODULES if BACKEND_FORMATS.get(name) == model_format]


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


def load_plugin(name: str) -> ModuleType:
    """Import a backend plugin and check its native library; BackendUnavailable with the reason if it can't run.

    A missing native library is a normal state for a board (a Pi without onnxruntime), not a crash.
    """
    module_name = BACKEND_MODULES.get(name)
    if module_name is None:
        raise BackendUnavailable(f"unknown backend '{name}' (known: {', '.join(BACKEND_MODULES)})")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailable(f"cannot import {module_name}: {exc}") from None
    check = getattr(module, "check_installed", None)
    if check is not None:
        check()
    return module


def available_backends() -> dict[str, str | None]:
    """Every known backend -> None when it can run here, else why not (logged at WARNING, the rest still load)."""
    status: dict[str, str | None] = {}
    for name in BACKEND_MODULES:
        try:
            load_plugin(name)
        except BackendUnavailable as exc:
            _log.warning("backend %s disabled: %s", name, exc)
            status[name] = str(exc)
        else:
            status[name] = None
    return status
