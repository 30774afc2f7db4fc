"""The model card, from the user's card file, the exporter's metadata, or both.

Exporters write what the device needs into the model: ultralytics puts `names`, `imgsz`, `stride` and `task` in
the ONNX metadata, so a YOLO export needs no hand-written card at all. Every field the metadata gives is a
default; the card file overrides any of them (a whole `input:` or `output:` section of another kind replaces the
metadata's). What came from the metadata is listed in the report's `inferred` section.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from converter.errors import ConversionError
from edge_runtime.card import ModelCard
from edge_runtime.yaml_source import ConfigError, describe_errors, read_yaml

#: ultralytics tasks whose output the device can read, and the card output for each
_ULTRALYTICS_OUTPUTS = {
    "detect": {"kind": "detection", "format": "yolo"},
    "classify": {"kind": "classification", "scores": "probabilities"},
}


@dataclass
class CardSource:
    """The card to convert with (None: no card and nothing to infer one from) and what was inferred."""

    card: ModelCard | None
    inferred: dict[str, Any] = field(default_factory=dict)  # {"from": ..., "fields": {dotted key: value}}
    notes: list[str] = field(default_factory=list)


def onnx_metadata(path: Path) -> dict[str, str]:
    """The ONNX model's metadata_props (empty for a file onnx cannot read: the front end says why later)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return {}
    return {prop.key: prop.value for prop in model.metadata_props}


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def _labels(names: Any) -> list[str] | None:
    """ultralytics `names` ({0: 'person', ...} or a list) as a list indexed by class id."""
    if isinstance(names, list) and names:
        return [str(name) for name in names]
    if isinstance(names, dict) and names and all(isinstance(key, int) for key in names):
        return [str(names.get(index, index)) for index in range(max(names) + 1)]
    return None


def _image_size(imgsz: Any) -> tuple[int, int] | None:
    if isinstance(imgsz, int):
        return imgsz, imgsz
    if isinstance(imgsz, list | tuple) and len(imgsz) == 2 and all(isinstance(v, int) for v in imgsz):
        return int(imgsz[0]), int(imgsz[1])
    return None


def card_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", stem).lstrip("_.-")
    return name or "model"


def ultralytics_card(metadata: dict[str, str], stem: str) -> tuple[dict[str, Any], list[str]]:
    """Card defaults from ultralytics metadata ({} when the model has none), and notes on what could not be used."""
    if "names" not in metadata and "imgsz" not in metadata:
        return {}, []
    notes = []
    draft: dict[str, Any] = {"name": card_name(stem)}
    labels = _labels(_literal(metadata.get("names", "")))
    if labels:
        draft["labels"] = labels
    elif "names" in metadata:
        notes.append(f"ultralytics metadata: names {metadata['names'][:60]!r} not understood; no labels inferred")
    task = metadata.get("task", "detect")
    size = _image_size(_literal(metadata.get("imgsz", "")))
    if size:
        draft["input"] = {"kind": "image", "height": size[0], "width": size[1], "channels": 3, "channel_order": "rgb",
                          "layout": "nchw", "scale": 1.0 / 255.0,
                          "resize": "letterbox" if task == "detect" else "stretch", "pad_value": 114.0}
    else:
        notes.append(f"ultralytics metadata: imgsz {metadata.get('imgsz')!r} not understood; give the input size "
                     "in a card")
    if task in _ULTRALYTICS_OUTPUTS:
        draft["output"] = dict(_ULTRALYTICS_OUTPUTS[task])
    else:
        notes.append(f"ultralytics task '{task}' is not one the device decodes (detect, classify): describe the "
                     "output in a card")
    return draft, notes


def _merge(defaults: dict[str, Any], given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card with `given` over `defaults`, and the dotted keys whose value came from `defaults`."""
    merged = dict(given)
    taken: dict[str, Any] = {}
    for key, value in defaults.items():
        mine = given.get(key)
        if isinstance(value, dict) and (mine is None or isinstance(mine, dict)):
            mine = mine or {}
            if "kind" in mine and mine["kind"] != value.get("kind"):
                continue  # the card describes another kind of input/output: the metadata's does not apply
            merged[key] = {**value, **mine}
            taken.update({f"{key}.{inner}": item for inner, item in value.items() if inner not in mine})
        elif key not in given:
            merged[key] = value
            taken[key] = value
    return merged, taken


def _shown(key: str, value: Any) -> Any:
    if key == "labels" and isinstance(value, list):
        head = ", ".join(value[:4]) + (", ..." if len(value) > 4 else "")
        return f"{len(value)} classes: {head}"
    if isinstance(value, float):
        return round(value, 8)
    return value


def resolve_card(card_path: Path | None, model_path: Path, model_format: str) -> CardSource:
    """The card file (if any) over the model's exporter metadata (if any); ConfigError with file and line for a
    card that does not validate."""
    defaults, notes = ({}, [])
    if model_format == "onnx":
        metadata = onnx_metadata(model_path)
        defaults, notes = ultralytics_card(metadata, model_path.stem)
        exporter = f"ultralytics {metadata.get('version', '')}".strip() if defaults else ""
    if not defaults:
        if card_path is None:
            return CardSource(None, notes=notes)
        exporter = ""
    if card_path is not None and not card_path.is_file():
        raise ConfigError(card_path, [f"[{card_path}] file not found"])
    given, lines = read_yaml(card_path) if card_path else ({}, {})
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ConversionError(f"{card_path}: a model card is a mapping of keys (name, input, output, ...)")
    merged, taken = _merge(defaults, given)
    where = card_path or model_path
    try:
        card = ModelCard.model_validate(merged)
    except ValidationError as exc:
        problems = describe_errors(where, exc, ModelCard, lines)
        if taken:
            problems.append(f"[{where}] (fields inferred from the {exporter} metadata: {', '.join(taken)})")
        raise ConfigError(where, problems) from None
    inferred = {}
    if taken:
        inferred = {"from": f"{exporter} metadata in {model_path.name}",
                    "fields": {key: _shown(key, value) for key, value in taken.items()}}
    return CardSource(card, inferred, notes)
