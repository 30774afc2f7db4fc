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
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

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


#: deeper nesting is refused: no config, card or board nests more than a few levels, and building the nodes of a
#: 20,000-deep file took PyYAML 17 s here before it hit the recursion limit
MAX_DEPTH = 64


def _refuse_aliases(path: str | os.PathLike[str], text: str) -> None:
    """YAML aliases (`*name`) are refused: a few hundred bytes of nested aliases expand into millions of nodes (the
    "billion laughs"), and no config, card or board needs them. So is nesting deeper than MAX_DEPTH. Checked on the
    event stream (PyYAML's parser is not recursive), before any node is built."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1
                raise ConfigError(path, [f"[{path}:{line}] nested more than {MAX_DEPTH} levels deep"])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            line = event.start_mark.line + 1
            raise ConfigError(path, [f"[{path}:{line}] YAML aliases (*{event.anchor}) are not allowed: write the "
                                     "value out"])


def read_yaml(path: str | os.PathLike[str]) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file into plain data plus a map from key path to line number."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"[{path}] not a UTF-8 text file ({exc.reason} at byte {exc.start})"]) from None
    try:
        _refuse_aliases(path, text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [f"[{where}] not valid YAML: {problem}"]) from None
    except RecursionError:
        raise ConfigError(path, [f"[{path}] not valid YAML: nested too deeply"]) from None
    lines: dict[tuple, int] = {}
    if node is not None:
        try:
            _line_map(node, (), lines)
        except RecursionError:
            raise ConfigError(path, [f"[{path}] not valid YAML: nested too deeply"]) from None
    return data, lines


def _members(annotation: Any) -> list[tuple[str | None, Any]]:
    """(tag, type) for each alternative of an annotation: unions split, Annotated[..., Tag(x)] tagged."""
    from pydantic import Tag

    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        tag = next((item.tag for item in metadata if isinstance(item, Tag)), None)
        field = next((item.discriminator for item in metadata if isinstance(getattr(item, "discriminator", None), str)),
                     None)
        return [(tag or found_tag or _literal_tag(found, field), found) for found_tag, found in _members(inner)]
    if origin in (Union, UnionType):
        return [member for arg in get_args(annotation) for member in _members(arg)]
    return [(None, annotation)]


def _literal_tag(member: Any, field: str | None) -> str | None:
    """The tag pydantic uses for `member` in a union discriminated by `field` (a `Literal[...]` field)."""
    if field is None or not (isinstance(member, type) and issubclass(member, BaseModel)):
        return None
    info = member.model_fields.get(field)
    values = get_args(info.annotation) if info is not None and get_origin(info.annotation) is Literal else ()
    return str(values[0]) if len(values) == 1 else None


def _walk(model: type[BaseModel], loc: tuple[str | int, ...]) -> tuple[tuple[str | int, ...], Any]:
    """Follow an error location through the models: drop union tags and list indexes' noise.

    Returns the location as the user wrote it in YAML and the model type found at its end (or None).
    """
    clean: list[str | int] = []
    current: Any = model
    pending: list[tuple[str | None, Any]] = [(None, model)]
    for part in loc:
        models = [member for _, member in pending if isinstance(member, type) and issubclass(member, BaseModel)]
        if isinstance(part, int):
            clean.append(part)
            pending = [(t, a) for _, m in pending for arg in get_args(m) for t, a in _members(arg)] or pending
            continue
        tagged = [member for tag, member in pending if tag == part]
        if tagged:  # pydantic puts the tag of a discriminated union into the location; YAML has no such key
            pending = [(None, tagged[0])]
            continue
        clean.append(part)
        owner = next((m for m in models if part in m.model_fields), None)
        if owner is None:
            return tuple(clean), None
        info = owner.model_fields[part]
        pending = _members(info.annotation)
        if isinstance(info.discriminator, str):  # pydantic moved `Field(discriminator=...)` off the annotation
            pending = [(tag or _literal_tag(member, info.discriminator), member) for tag, member in pending]
    current = next((m for _, m in pending if isinstance(m, type) and issubclass(m, BaseModel)), None)
    if current is None:
        inner = [a for _, m in pending for arg in get_args(m) for _, a in _members(arg)]
        current = next((m for m in inner if isinstance(m, type) and issubclass(m, BaseModel)), None)
    return tuple(clean), current


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
        raw = tuple(part for part in item["loc"] if not (isinstance(part, str) and "[" in part))
        if item["type"] == "extra_forbidden":
            parent, parent_model = _walk(model, raw[:-1])
            loc = (*parent, raw[-1])
        else:
            loc, _ = _walk(model, raw)
        key = ".".join(str(part) for part in loc) or "(top level)"
        line = _nearest_line(loc, lines)
        where = f"{path}:{line}" if line else str(path)
        if item["type"] == "extra_forbidden":
            fields = getattr(parent_model, "model_fields", None) or {}
            allowed = [info.alias or name for name, info in fields.items()]
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
