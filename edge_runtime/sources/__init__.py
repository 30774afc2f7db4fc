"""Sensor sources, one module each, imported only when a config asks for one.

Lazy import keeps the device install small: the serial source needs pyserial, image sources need Pillow, and a
board that uses neither never imports them. A source whose optional library is missing raises
`SourceUnavailable` with the pip command that fixes it, so `edge-runtime check` can say so before a run.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from edge_runtime.card import FeatureInput, ModelCard, TimeSeriesInput
from edge_runtime.sources.base import Source, SourceContext

SOURCE_MODULES = {
    "mqtt": "edge_runtime.sources.mqtt",
    "replay": "edge_runtime.sources.replay",
    "iio": "edge_runtime.sources.iio",
    "serial": "edge_runtime.sources.serial",
    "synthetic": "edge_runtime.sources.synthetic",
    "folder": "edge_runtime.sources.folder",
}

#: optional import name -> pip package that provides it
OPTIONAL_PACKAGES = {"serial": "pyserial", "PIL": "pillow"}

#: a feature vector has no sensor rate; sources that need one use this unless their config sets rate_hz
FEATURE_RATE_HZ = 1.0


class SourceUnavailable(RuntimeError):
    """This source cannot run here (a missing optional library); the message says what to install."""


def source_class(type_name: str) -> type[Source]:
    """The `Source` subclass for a config `type`, importing its module now."""
    module_name = SOURCE_MODULES.get(type_name)
    if module_name is None:
        raise ValueError(f"unknown source type {type_name!r}; known: {', '.join(sorted(SOURCE_MODULES))}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        missing = (error.name or "").split(".")[0]
        if missing in OPTIONAL_PACKAGES:
            raise SourceUnavailable(f"the {type_name} source needs {OPTIONAL_PACKAGES[missing]}: "
                                    f"pip install {OPTIONAL_PACKAGES[missing]}") from error
        raise SourceUnavailable(f"the {type_name} source cannot load: {error}") from error
    for _, candidate in inspect.getmembers(module, inspect.isclass):
        if issubclass(candidate, Source) and getattr(candidate, "type", None) == type_name:
            return candidate
    raise SourceUnavailable(f"{module_name} has no Source subclass with type {type_name!r}")


def create_source(config: Any, context: SourceContext) -> Source:
    """A ready (not started) source for one model's `source:` config."""
    return source_class(config.type)(config, context)


def require_pillow_for(type_name: str) -> None:
    """Fail at construction, not on every frame, when an image source has no Pillow to decode with."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        message = f"the {type_name} source decodes JPEG/PNG and needs Pillow: pip install pillow"
        raise SourceUnavailable(message) from None


def stream_shape(card: ModelCard, rate_hz: float | None = None) -> tuple[int, float]:
    """Channels and sample rate a sample source produces for this card (`rate_hz` from the config wins)."""
    spec = card.input
    if isinstance(spec, TimeSeriesInput):
        return spec.channels, rate_hz or spec.rate_hz
    if isinstance(spec, FeatureInput):
        return spec.features, rate_hz or FEATURE_RATE_HZ
    raise ValueError(f"model {card.name} takes images; use an image source (folder, or mqtt with format: image)")
