"""What source and backend plugins share: the config base class, the config-relative path type, and discovery.

A plugin is one module in `edge_runtime/sources/` or `edge_runtime/backends/` that defines a subclass of the
package's config base (`BaseSourceConfig`, `BaseBackendConfig`) whose `type` is `Literal[KEY]`. Discovery imports
every module of the package and keeps the config classes it defines; the daemon's config unions are built from
them, so adding a plugin is adding one file. Importing a plugin module must stay cheap: native libraries
(pyserial, Pillow, onnxruntime, LiteRT) are imported inside its functions, so a board without one still reads
configs that name it, and `edge-runtime check` can say what to install.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import Field

from edge_runtime.card import Strict

log = logging.getLogger("edge_runtime.plugin")


class _RelativeToConfigFile:
    """Marks a path field that `load_config` resolves against the config file's folder."""

    def __repr__(self) -> str:
        return "RelativeToConfigFile"


RELATIVE_TO_CONFIG_FILE = _RelativeToConfigFile()

#: a file system path in a plugin's config; relative values are relative to the config file, not the working dir
ConfigPath = Annotated[Path, RELATIVE_TO_CONFIG_FILE]


def _marked(annotation: Any) -> bool:
    if get_origin(annotation) is Annotated:
        _, *metadata = get_args(annotation)
        if any(item is RELATIVE_TO_CONFIG_FILE for item in metadata):
            return True
    return any(_marked(arg) for arg in get_args(annotation))


class PluginConfig(Strict):
    """Base of every plugin's config (`extra="forbid"` through Strict): `type: Literal[KEY]` names the plugin."""

    #: narrowed by each plugin to `Literal[KEY]`; a subclass that does not is a shared base, not a plugin
    type: str

    #: where the plugin comes in listings and in a config error's "expected tags" (lower first, then by key)
    order: ClassVar[int] = 100

    @classmethod
    def plugin_key(cls) -> str:
        """The `type` value that selects this plugin in YAML."""
        annotation = cls.model_fields["type"].annotation
        if get_origin(annotation) is not Literal or len(get_args(annotation)) != 1:
            raise TypeError(f"{cls.__qualname__}.type must be Literal[KEY], not {annotation!r}")
        return str(get_args(annotation)[0])

    @classmethod
    def config_paths(cls) -> tuple[str, ...]:
        """Fields declared as `ConfigPath` (or `ConfigPath | None`)."""
        return tuple(
            name for name, field in cls.model_fields.items()
            if RELATIVE_TO_CONFIG_FILE in field.metadata or _marked(field.annotation)
        )

    def rebase_paths(self, base: Path) -> None:
        """Make every relative `ConfigPath` field absolute against `base` (the config file's folder)."""
        for name in self.config_paths():
            value = getattr(self, name)
            if isinstance(value, Path):
                setattr(self, name, (base / value).resolve())


def plugin_modules(package: ModuleType, infrastructure: frozenset[str]) -> tuple[list[ModuleType], dict[str, str]]:
    """Import every module of `package` except `infrastructure` ones and `_private` ones.

    Returns the modules, and module name -> error for those that failed to import (logged at WARNING and
    skipped, so one broken plugin does not take the others down).
    """
    modules: list[ModuleType] = []
    failures: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        if info.name.startswith("_") or info.name in infrastructure:
            continue
        name = f"{package.__name__}.{info.name}"
        try:
            modules.append(importlib.import_module(name))
        except Exception as error:  # an ImportError of a native library, or a bug: either way, skip it
            log.warning("plugin %s skipped: %s: %s", name, type(error).__name__, error)
            failures[name] = f"{type(error).__name__}: {error}"
    return modules, failures


def configs_defined_in(module: ModuleType, base: type[PluginConfig]) -> list[type[PluginConfig]]:
    """The concrete `base` subclasses a plugin module defines (not the ones it imports)."""
    return [
        value for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, base) and value is not base
        and value.__module__ == module.__name__ and get_origin(value.model_fields["type"].annotation) is Literal
    ]


def sorted_configs(configs: list[type[PluginConfig]]) -> list[type[PluginConfig]]:
    return sorted(configs, key=lambda config: (config.order, config.plugin_key()))


def config_union(configs: list[type[PluginConfig]]) -> Any:
    """`Annotated[A | B | ..., Field(discriminator="type")]` over the discovered config classes."""
    if not configs:
        raise RuntimeError("no plugin config classes were discovered")
    members = tuple(sorted_configs(configs))
    if len(members) == 1:  # a discriminator needs a union; one plugin is just its config
        return members[0]
    return Annotated[Union[members], Field(discriminator="type")]  # noqa: UP007 - built from a tuple at run time
