"""Inference backends: the registry that discovers the backend plugins in this package.

A backend plugin is one module here that defines a `BaseBackendConfig` subclass (`type: Literal[KEY]`,
`model_format`) and the functions ``check_installed()`` and ``open_backend(model_bytes, config, board,
precision="fp32")`` (see `edge_runtime.backends.base`, the only module of this package a plugin imports).
Discovery imports every module of the package once, on first use; `edge_runtime.config` builds the `backends:`
union from the config classes found. Plugin modules import their native library (onnxruntime, LiteRT) only
inside their functions, so a board without it still loads the rest: `load_plugin` turns the missing library
into `BackendUnavailable` with the pip hint, and every provider or delegate tried is recorded as an `Attempt`,
so a fallback is always visible to the user (see `edge_runtime.backends.select`).
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from edge_runtime.backends.base import Attempt, AttemptsFailed, BackendUnavailable, BaseBackendConfig
from edge_runtime.plugin import config_union, configs_defined_in, plugin_modules, sorted_configs

__all__ = [
    "Attempt",
    "AttemptsFailed",
    "BackendPlugin",
    "BackendUnavailable",
    "BaseBackendConfig",
    "available_backends",
    "backend_config_union",
    "backend_plugins",
    "backends_for_format",
    "load_plugin",
]

_log = logging.getLogger("edge_runtime.backends")

#: modules of this package that are not plugins
_INFRASTRUCTURE = frozenset({"base", "select"})


@dataclass(frozen=True)
class BackendPlugin:
    """One discovered backend: its YAML `type`, its config class and the module with `open_backend`."""

    name: str
    config: type[BaseBackendConfig]
    module: str

    @property
    def model_format(self) -> str:
        """The bundle format it runs: onnx bundles run on onnxruntime, tflite bundles on tflite."""
        return self.config.model_format


@cache
def _discover() -> dict[str, BackendPlugin]:
    modules, _ = plugin_modules(sys.modules[__name__], _INFRASTRUCTURE)  # failures are logged there
    configs = [config for module in modules for config in configs_defined_in(module, BaseBackendConfig)]
    plugins: dict[str, BackendPlugin] = {}
    for config in sorted_configs(configs):
        name = config.plugin_key()
        if name in plugins:
            raise RuntimeError(f"backend type {name!r} is declared by {plugins[name].module} and {config.__module__}")
        plugins[name] = BackendPlugin(name, config, config.__module__)
    return plugins


def backend_plugins() -> dict[str, BackendPlugin]:
    """Every discovered backend by `type`, in listing order."""
    return _discover()


def backend_config_union() -> Any:
    """The type of one entry of a model's `backends:`: the discovered config classes, discriminated by `type`."""
    return config_union([plugin.config for plugin in backend_plugins().values()])


def backends_for_format(model_format: str) -> list[str]:
    """Names of the plugins that can run a model of this format (in listing order)."""
    return [name for name, plugin in backend_plugins().items() if plugin.model_format == model_format]


def load_plugin(name: str) -> ModuleType:
    """A backend plugin's module with its native library checked; BackendUnavailable with the reason if it can't run.

    A missing native library is a normal state for a board (a Pi without onnxruntime), not a crash.
    """
    plugins = backend_plugins()
    plugin = plugins.get(name)
    if plugin is None:
        raise BackendUnavailable(f"unknown backend '{name}' (known: {', '.join(plugins)})")
    try:
        module = importlib.import_module(plugin.module)
    except ImportError as exc:
        raise BackendUnavailable(f"cannot import {plugin.module}: {exc}") from None
    check = getattr(module, "check_installed", None)
    if check is not None:
        check()
    return module


def available_backends() -> dict[str, str | None]:
    """Every known backend -> None when it can run here, else why not (logged at WARNING, the rest still load)."""
    status: dict[str, str | None] = {}
    for name in backend_plugins():
        try:
            load_plugin(name)
        except BackendUnavailable as exc:
            _log.warning("backend %s disabled: %s", name, exc)
            status[name] = str(exc)
        else:
            status[name] = None
    return status
