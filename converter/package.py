"""Assemble and write the bundle: manifest, model, golden input and output, optional signature."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from converter.model_info import TensorInfo
from edge_runtime import __version__
from edge_runtime.board import Board
from edge_runtime.bundle import (
    AcceleratedModel,
    GoldenSpec,
    Manifest,
    ModelFile,
    Producer,
    Target,
    TensorSpec,
    pack_golden,
    write_bundle,
)
from edge_runtime.card import ModelCard
from edge_runtime.signing import load_private_key


@dataclass
class AcceleratedContents:
    """A model for the board's accelerator, bundled next to the final model: `golden_outputs` are its own outputs
    on the bundle's golden input (from a simulator), None when it could not be run here."""

    model_bytes: bytes
    format: str  # rknn | edgetpu
    accelerator: str
    precision: str
    golden_outputs: dict[str, np.ndarray] | None = None

    @property
    def path(self) -> str:
        return "model.rknn" if self.format == "rknn" else f"model_{self.format}.tflite"


@dataclass
class BundleContents:
    name: str
    version: str
    model_bytes: bytes
    model_format: str  # onnx | tflite
    precision: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    golden_inputs: dict[str, np.ndarray]
    golden_outputs: dict[str, np.ndarray]
    verification: dict
    reference: dict
    accelerated: list[AcceleratedContents] = field(default_factory=list)


def golden_tolerance(outputs: dict[str, np.ndarray], precision: str) -> tuple[float, float]:
    """How far a device may drift from the golden output and still be running the same model.

    Float models reproduce to rounding. Integer kernels differ between CPUs (x86 VNNI vs ARM dot-product, u8
    vs s8 activations), so an int8 model may move a few output quantisation steps: 2% of the output range.
    """
    spread = max((float(np.ptp(value)) for value in outputs.values()), default=1.0)
    if precision in ("int8", "mixed"):
        return 1e-2, max(1e-4, 0.02 * spread)
    if precision == "fp16":
        return 1e-2, max(1e-4, 5e-3 * spread)
    return 1e-3, max(1e-5, 1e-4 * spread)


def _layout(card: ModelCard | None, name: str) -> str | None:
    if card is not None and card.input.name in (None, name):
        return getattr(card.input, "layout", None) or card.input.kind
    return None


def write_model_bundle(
    output: Path, contents: BundleContents, board: Board, card: ModelCard | None, sign_key: Path | None
) -> Manifest:
    """Write the bundle atomically; the signature covers the manifest, which lists every member's sha256."""
    model_path = f"model.{contents.model_format}"
    rtol, atol = golden_tolerance(contents.golden_outputs, contents.precision)
    manifest = Manifest(
        name=contents.name,
        version=contents.version,
        producer=Producer(tool="edge-convert", version=__version__),
        target=Target(board=board.name, arch=board.arch, config=board.model_dump(mode="json")),
        model=ModelFile(path=model_path, format=contents.model_format, precision=contents.precision),
        inputs=[
            TensorSpec(name=info.name, shape=info.shape, dtype=info.dtype, layout=_layout(card, info.name))
            for info in contents.inputs
        ],
        outputs=[TensorSpec(name=info.name, shape=info.shape, dtype=info.dtype) for info in contents.outputs],
        card=card.model_dump(mode="json") if card else None,
        golden=GoldenSpec(
            rtol=rtol, atol=atol, top1_must_match=bool(card is None or card.output.kind == "classification")
        ),
        verification=contents.verification,
        reference=contents.reference,
    )
    members = {
        model_path: contents.model_bytes,
        "golden.npz": pack_golden(contents.golden_inputs, contents.golden_outputs),
    }
    for extra in contents.accelerated:
        golden = None
        members[extra.path] = extra.model_bytes
        if extra.golden_outputs is not None:
            rtol, atol = golden_tolerance(extra.golden_outputs, extra.precision)
            golden = GoldenSpec(path=f"golden.{extra.format}.npz", rtol=rtol, atol=atol,
                                top1_must_match=manifest.golden.top1_must_match)
            members[golden.path] = pack_golden(contents.golden_inputs, extra.golden_outputs)
        manifest.accelerated.append(AcceleratedModel(path=extra.path, format=extra.format,
                                                     accelerator=extra.accelerator, precision=extra.precision,
                                                     golden=golden))
    key = load_private_key(sign_key) if sign_key else None
    return write_bundle(output, manifest, members, signing_key=key)
