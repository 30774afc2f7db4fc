"""What a caller asks of a conversion and what it gets back; shared by the pipeline, its passes and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from converter.errors import ConversionError
from converter.report import Report
from edge_runtime.bundle import Manifest


@dataclass
class ConvertOptions:
    model: Path
    output: Path
    target: str
    card: Path | None = None
    calibration: Path | None = None
    evaluation: Path | None = None
    quantize: str = "auto"
    max_accuracy_drop: float = 0.005
    sign_key: Path | None = None
    skip: set[str] = field(default_factory=set)
    measure_latency: bool = True
    prune: str | None = None  # a ratio in (0, 1) as text, or "auto"
    edgetpu_model: Path | None = None  # an Edge TPU-compiled TFLite of the model, bundled next to it


@dataclass
class ConvertResult:
    manifest: Manifest
    report: Report


class GateFailed(ConversionError):
    """The accuracy gate refused the bundle; carries the report that says which step cost what."""

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report
