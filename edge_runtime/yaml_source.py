"""YAML files validated by pydantic models, with errors that point at the file and line.

Every YAML the project reads (device config, model card, board file) goes through `load_model`, so a typo
in any of them reads the same way: ``[card.yaml:7] input.windw: unknown key. Did you mean 'window'?``.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)
_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A YAML file that does not fit its schema; `problems` holds one line per finding."""

    def __init__(self, path: str | os.PathLike[str], problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(problems))


def _line_map(node: yaml.Node, prefix: tuple[str | int, ...], lines: dict[tuple, int]) -> None:
    """Record the 1-based line of every key and list item below `node`."""
    lines[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[prefix + (key,)] = key_node.start_mark.line + 1
            _line_map(value_node, prefix + (key,), lines)
            lines[prefix + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, prefix + (index,), lines)


def _substitute_env(value: Any, path: str, missing: list[str]) -> Any:
    """Replace ``${NAME}`` and ``${NAME:-default}`` in strings; secrets stay out of the file."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            missing.append(name)
            return match.group(0)

        return _ENV_PATTERN.sub(replace, value)
    if isinstance(value, list):
        return [_substitute_env(item, path, missing) for item in value]
    if isinstance(value, dict):
        return {key: _substitute_env(item, path, missing) for key, item in value.items()}
    return value


def read_yaml(path: str | os.PathLike[str]) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file into plain data plus a map from key path to line number."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [f"[{where}] not valid YAML: {problem}"]) from None
    lines: dict[tuple, int] = {}
    if node is not None:
        _line_map(node, (), lines)
    return data, lines


def _fields_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names (YAML keys) a model accepts at `loc`, for did-you-mean suggestions."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        annotation = fields[part].annotation
        current = _unwrap_model(annotation)
        if current is None:
            return []
    fields = getattr(current, "model_fields", None)
    return [info.alias or name for name, info in fields.items()] if fields else []


def _unwrap_model(annotation: Any) -> Any:
    """Find the pydantic model inside Optional[...], list[...] or a plain annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _nearest_line(loc: tuple, lines: Mapping[tuple, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def describe_errors(
    path: str | os.PathLike[str], error: ValidationError, model: type[BaseModel], lines: Mapping[tuple, int]
) -> list[str]:
    """Turn a pydantic ValidationError into `[file:line] key.path: message` lines with suggestions."""
    problems = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if not (isinstance(part, str) and "[" in part))
        key = ".".join(str(part) for part in loc) or "(top level)"
        line = _nearest_line(loc, lines)
        where = f"{path}:{line}" if line else str(path)
        if item["type"] == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            message = "unknown key"
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
            if close:
                message += f". Did you mean '{close[0]}'?"
            elif allowed:
                message += f". Known keys here: {', '.join(sorted(allowed))}"
        elif item["type"] == "missing":
            message = "required key is missing"
        else:
            message = item["msg"]
            if "input" in item and not isinstance(item["input"], dict | list):
                message += f" (got {item['input']!r})"
        problems.append(f"[{where}] {key}: {message}")
    return problems


def load_model(path: str | os.PathLike[str], model: type[ModelT], *, substitute_env: bool = False) -> ModelT:
    """Read `path` and validate it as `model`; raise ConfigError naming file, line and key."""
    if not Path(path).is_file():
        raise ConfigError(path, [f"[{path}] file not found"])
    data, lines = read_yaml(path)
    if data is None:
        data = {}
    if substitute_env:
        missing: list[str] = []
        data = _substitute_env(data, str(path), missing)
        if missing:
            names = ", ".join(sorted(set(missing)))
            raise ConfigError(path, [f"[{path}] environment variable(s) not set: {names}"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, describe_errors(path, exc, model, lines)) from None
