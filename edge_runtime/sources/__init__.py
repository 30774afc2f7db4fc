"""Sensor sources: the registry that discovers the source plugins in this package.

A source plugin is one module here that defines a `BaseSourceConfig` subclass (`type: Literal[KEY]`) and a
`Source` subclass with `type = KEY` (see `edge_runtime.sources.base`, the only module of this package a plugin
imports). Discovery imports every module of the package once, on first use; `edge_runtime.config` builds the
`source:` union from the config classes found, and `create_source` looks the class up by the config's `type`.
Plugin modules import no optional library at import time, so discovery works on a device install: a source
whose library (pyserial, Pillow) is missing is still a valid config, and making it raises `SourceUnavailable`
with the pip command, so `edge-runtime check` can say so before a run.
"""

from __future__ import annotations

import inspect
import logging
import sys
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from edge_runtime.plugin import config_union, configs_defined_in, plugin_modules, sorted_configs
from edge_runtime.sources.base import (
    FEATURE_RATE_HZ,
    BaseSourceConfig,
    Source,
    SourceContext,
    SourceUnavailable,
    require_pillow_for,
    stream_shape,
)

__all__ = [
    "FEATURE_RATE_HZ",
    "BaseSourceConfig",
    "SourcePlugin",
    "SourceUnavailable",
    "create_source",
    "require_pillow_for",
    "source_class",
    "source_config_union",
    "source_plugins",
    "stream_shape",
]

log = logging.getLogger("edge_runtime.sources")

#: modules of this package that are not plugins
_INFRASTRUCTURE = frozenset({"base", "pacing"})


@dataclass(frozen=True)
class SourcePlugin:
    """One discovered source: its YAML `type`, its config class and its `Source` class."""

    key: str
    config: type[BaseSourceConfig]
    source: type[Source]

    @property
    def module(self) -> str:
        return self.config.__module__


def _source_class_in(module: ModuleType, key: str) -> type[Source] | None:
    for _, candidate in inspect.getmembers(module, inspect.isclass):
        if issubclass(candidate, Source) and getattr(candidate, "type", None) == key:
            return candidate
    return None


@cache
def _discover() -> tuple[dict[str, SourcePlugin], dict[str, str]]:
    modules, failures = plugin_modules(sys.modules[__name__], _INFRASTRUCTURE)
    plugins: dict[str, SourcePlugin] = {}
    configs = [config for module in modules for config in configs_defined_in(module, BaseSourceConfig)]
    for config in sorted_configs(configs):
        key = config.plugin_key()
        if key in plugins:
            raise RuntimeError(f"source type {key!r} is declared by {plugins[key].module} and {config.__module__}")
        source = _source_class_in(sys.modules[config.__module__], key)
        if source is None:
            log.warning("source plugin %s skipped: it has no Source subclass with type %r", config.__module__, key)
            failures[config.__module__] = f"it has no Source subclass with type {key!r}"
            continue
        plugins[key] = SourcePlugin(key, config, source)
    return plugins, failures


def source_plugins() -> dict[str, SourcePlugin]:
    """Every discovered source by `type`, in listing order."""
    return _discover()[0]


def source_config_union() -> Any:
    """The type of a model's `source:`: the discovered config classes, discriminated by `type`."""
    return config_union([plugin.config for plugin in source_plugins().values()])


def source_class(type_name: str) -> type[Source]:
    """The `Source` subclass for a config `type`, its optional libraries checked (SourceUnavailable if missing)."""
    plugins, failures = _discover()
    plugin = plugins.get(type_name)
    if plugin is None:
        broken = failures.get(f"{__name__}.{type_name}")
        if broken is not None:
            raise SourceUnavailable(f"the {type_name} source cannot load: {broken}")
        raise ValueError(f"unknown source type {type_name!r}; known: {', '.join(sorted(plugins))}")
    plugin.source.check_requirements()
    return plugin.source


def create_source(config: Any, context: SourceContext) -> Source:
    """A ready (not started) source for one model's `source:` config."""
    return source_class(config.type)(config, context)
