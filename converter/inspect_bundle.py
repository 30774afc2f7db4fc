"""`edge-convert inspect`: what is in a bundle, checked (checksums, signature) before it is shown."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from converter.report import render_report
from edge_runtime.bundle import read_bundle
from edge_runtime.signing import load_trusted_keys


def _tensor_rows(title: str, tensors: list) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("name", "shape", "dtype", "layout"):
        table.add_column(column)
    for tensor in tensors:
        shape = "[" + ", ".join(str(dim) for dim in tensor.shape) + "]"
        table.add_row(tensor.name, Text(shape), tensor.dtype, tensor.layout or "-")
    return table


def _card_summary(card: dict) -> str:
    spec = card["input"]
    parts = [f"card {card['name']} v{card['version']}", f"input {spec['kind']}"]
    if spec["kind"] == "timeseries":
        parts.append(
            f"window {spec['window']} hop {spec['hop']} at {spec['rate_hz']} Hz, {spec['channels']} ch "
            f"{spec['layout']}" + (", normalized" if spec.get("normalize") else "")
        )
    elif spec["kind"] == "image":
        parts.append(f"{spec['height']}x{spec['width']} {spec['channel_order']} {spec['layout']}")
    if card.get("labels"):
        parts.append(f"labels {', '.join(card['labels'])}")
    parts.append(f"output {card['output']['kind']}")
    return "; ".join(parts)


def inspect_bundle(path: Path, console: Console, *, as_json: bool = False, trusted: list[Path] | None = None) -> int:
    keys = load_trusted_keys(trusted) if trusted else None
    bundle = read_bundle(path, trusted_keys=keys, require_signature=bool(keys))
    manifest = bundle.manifest
    if as_json:
        document = manifest.model_dump(mode="json")
        document["signature_status"] = bundle.signature_status
        print(json.dumps(document, indent=2))
        return 0
    console.print(f"[bold]{manifest.name}[/bold] {manifest.version}  ({path})")
    console.print(
        f"built {manifest.created} by {manifest.producer.tool} {manifest.producer.version} for board "
        f"{manifest.target.board} ({manifest.target.arch})",
        highlight=False,
    )
    size = manifest.files[manifest.model.path].size
    console.print(
        f"model {manifest.model.path}: {manifest.model.format}, {manifest.model.precision}, {size / 1024:.1f} KiB",
        highlight=False,
    )
    for entry in manifest.accelerated:
        checked = "golden output from its simulator" if entry.golden else "must reproduce the model's golden output"
        console.print(f"accelerator model {entry.path}: {entry.format} for the {entry.accelerator}, {entry.precision}, "
                      f"{manifest.files[entry.path].size / 1024:.1f} KiB ({checked}); the model above is its fallback",
                      highlight=False, markup=False)
    console.print(f"signature: {bundle.signature_status}", highlight=False)
    console.print(_tensor_rows("inputs", manifest.inputs))
    console.print(_tensor_rows("outputs", manifest.outputs))
    if manifest.card:
        console.print(_card_summary(manifest.card), highlight=False)
    reference = manifest.reference
    if reference:
        channels = sum(len(entry["channels"]) for entry in reference["inputs"].values())
        per_class = any("per_class" in entry for entry in reference["inputs"].values())
        console.print(
            f"reference statistics: {reference['samples']} samples, {channels} input channel(s)"
            + (", per class" if per_class else "")
            + f", from {Path(reference['source']).name}",
            highlight=False,
        )
    files = Table(title="files", title_justify="left")
    files.add_column("member")
    files.add_column("size", justify="right")
    files.add_column("sha256")
    for name, entry in sorted(manifest.files.items()):
        files.add_row(name, str(entry.size), entry.sha256)
    console.print(files)
    if manifest.verification:
        render_report(manifest.verification, console)
    return 0
