"""The context every pass shares: one conversion of one model for one board.

A front end (converter/onnx_frontend.py, converter/tflite_frontend.py) checks the model and loads the data, then
`Conversion.begin` runs the original model on the verification data once and builds the context complete: every
later stage is compared with those outputs. The passes (converter/passes/) add stages and fill the few result
fields declared at the end of the class; nothing else appears on it later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np
from rich.console import Console

from converter.data import Dataset, load_dataset
from converter.detection_fidelity import match_boxes, summary
from converter.errors import ConversionError
from converter.evaluate import Fidelity, compare, quality_loss
from converter.image_data import load_image_folder
from converter.model_info import TensorInfo
from converter.options import ConvertOptions
from converter.package import AcceleratedContents
from converter.progress import Progress
from converter.report import Report, StageResult
from converter.sequence import RunOne, load_stream_data, needs_plan, plan_for, record_states, value_errors
from edge_runtime.board import Board
from edge_runtime.bundle import Manifest
from edge_runtime.card import ModelCard
from edge_runtime.detection import DetectionDecoder, Detections

M = TypeVar("M")


@dataclass(frozen=True)
class StageShape:
    """What a report row says about a model besides its fidelity."""

    size_bytes: int
    nodes: int
    flops: int | None = None
    note: str = ""


class Engine(Protocol[M]):
    """What the shared passes need from a front end: run, describe, measure and store a model of its format."""

    format: str  # the bundle's model format: onnx | tflite
    as_is: bool  # the model is bundled as given; no pass changes it

    def run(self, model: M, dataset: Dataset, advance: Callable[[int], None]) -> dict[str, np.ndarray]: ...

    def golden(self, model: M, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self, model: M) -> StageShape: ...

    def measure(self, models: dict[str, M], feed: dict[str, np.ndarray], host: str) -> tuple[dict[str, float], str]:
        """Median batch-1 latency in ms per stage, and where and how it was measured (for the report)."""
        ...

    def payload(self, model: M) -> bytes: ...

    def tensors(self, model: M) -> tuple[list[TensorInfo], list[TensorInfo]]: ...


@dataclass(frozen=True)
class VerificationData:
    """The user's data: `verify` is what every stage is judged on (--eval, else the calibration data)."""

    calibration: Dataset | None
    evaluation: Dataset | None
    verify: Dataset
    notes: tuple[str, ...] = ()  # what was read and how (WAV folders, constants, state), for the report


def _load(path: Path, inputs: list[TensorInfo], card: ModelCard | None, what: str) -> Dataset:
    """An npz, or a folder of images prepared as the card says."""
    if Path(path).is_dir():
        return load_image_folder(Path(path), card, inputs, what=what)
    return load_dataset(path, inputs, what=what)


def load_verification_data(options: ConvertOptions, inputs: list[TensorInfo], card: ModelCard | None = None,
                           outputs: list[TensorInfo] | None = None) -> VerificationData:
    """The npz files, or, for a card with constants or state and for folders of WAV files, the streamed input
    read through the card (converter/sequence.py)."""
    paths = {"calibration": options.calibration, "evaluation": options.evaluation}
    notes: list[str] = []
    plan = None
    loaded: dict[str, Dataset | None] = {}
    for what, path in paths.items():
        if path is None:
            loaded[what] = None
        elif needs_plan(card, Path(path)):
            if card is None:
                raise ConversionError(f"{what} data {path} is a folder of recordings: give a --card that says how "
                                      "to window them (input: {kind: audio, rate_hz, window, hop})")
            plan = plan or plan_for(card, options.card, inputs, outputs or [])
            loaded[what] = load_stream_data(Path(path), card, plan, inputs, what=what, notes=notes)
        else:
            loaded[what] = _load(path, inputs, card, what)
    calibration, evaluation = loaded["calibration"], loaded["evaluation"]
    verify = evaluation or calibration
    if verify is None:
        raise ConversionError(
            "edge-convert verifies every model on real data: give --eval DATA.npz and/or --calibration DATA.npz "
            "(or a folder of images)"
        )
    return VerificationData(calibration, evaluation, verify, tuple(notes))


def with_recorded_states(data: VerificationData, run_one: RunOne) -> VerificationData:
    """For a recurrent model: the state inputs the original model produces over each recording, stored with the
    data (what int8 is calibrated on); every stage is still verified with its own state carried."""
    if data.verify.sequence is None:
        return data
    calibration = record_states(data.calibration, run_one)
    evaluation = record_states(data.evaluation, run_one)
    return VerificationData(calibration, evaluation, evaluation or calibration, data.notes)


def is_classifier(card: ModelCard | None, outputs: dict[str, np.ndarray]) -> bool:
    if card is not None:
        return card.output.kind == "classification"
    first = next(iter(outputs.values()))
    return first.ndim == 2 and first.shape[1] > 1


def primary_output(card: ModelCard | None, names: list[str]) -> str:
    if card is not None and card.output.name:
        return card.output.name
    return names[0]


@dataclass
class Stage(Generic[M]):
    """A model as it stood after a pass, verified against the original; its report row has the same name."""

    model: M
    precision: str
    fidelity: Fidelity


@dataclass
class Conversion(Generic[M]):
    """One conversion: what was asked, for which board, on which data, and every stage made so far."""

    options: ConvertOptions
    board: Board
    card: ModelCard | None
    engine: Engine[M]
    data: VerificationData
    quantize: str  # what the quantize pass makes, resolved against the board: int8 | fp16 | none
    output_name: str  # the output the gate compares
    classification: bool
    reference_outputs: np.ndarray  # the original model's `output_name` on `data.verify`
    report: Report
    progress: Progress
    stages: dict[str, Stage[M]]  # in the order they were made; the first is the original
    # Results of the passes.
    float_stage: str  # the float model the next graph pass starts from: original, fused, pruned
    quantized_stage: str | None = None  # set by quantize
    reference: dict = field(default_factory=dict)  # set by reference: the statistics drift is measured against
    manifest: Manifest | None = None  # set by package
    #: set by npu (a .rknn built and simulated here) and edgetpu (a compiled model the user gave): models for the
    #: board's accelerator, bundled next to the final model, which stays the fallback
    accelerated: list[AcceleratedContents] = field(default_factory=list)
    # Detectors: every stage is judged by the boxes the device would publish (converter/detection_fidelity.py).
    detector: DetectionDecoder | None = None
    reference_detections: list[Detections] | None = None  # the original model's, on `data.verify`

    @classmethod
    def begin(
        cls,
        options: ConvertOptions,
        board: Board,
        card: ModelCard | None,
        engine: Engine[M],
        original: M,
        *,
        stage: str,
        precision: str,
        data: VerificationData,
        quantize: str,
        report: Report,
        console: Console,
    ) -> Conversion[M]:
        """Run the original model on the verification data and record it as the first stage."""
        progress = Progress(console)
        with progress.bar(f"verify {stage}", len(data.verify)) as advance:
            outputs = engine.run(original, data.verify, advance)
        output_name = primary_output(card, [info.name for info in engine.tensors(original)[1]])
        report.eval_source = Path(data.verify.source).name
        report.eval_samples = len(data.verify)
        conversion = cls(
            options=options,
            board=board,
            card=card,
            engine=engine,
            data=data,
            quantize=quantize,
            output_name=output_name,
            classification=is_classifier(card, outputs),
            reference_outputs=outputs[output_name],
            report=report,
            progress=progress,
            stages={},
            float_stage=stage,
        )
        if card is not None and card.is_detector:
            conversion.detector = DetectionDecoder(card)
            conversion.reference_detections = conversion.detections(outputs)
            report.detection = summary(conversion.reference_detections, card.labels)
            if not report.detection["boxes"]:
                report.notes.append("the original model finds no boxes in the verification images: detection "
                                    "fidelity cannot be measured; give images with objects it detects")
        conversion.add_stage(stage, original, precision, outputs)
        return conversion

    def detections(self, outputs: dict[str, np.ndarray]) -> list[Detections]:
        """A model's outputs on the verification data decoded as the device decodes them (model-input pixels)."""
        try:
            return self.detector.decode(outputs)
        except ValueError as exc:
            raise ConversionError(f"the card's detection output does not fit the model: {exc}") from None

    @property
    def gate_enforced(self) -> bool:
        """`--skip verify` measures every stage as usual but lets a bundle through that loses too much."""
        return "verify" not in self.options.skip

    @property
    def original(self) -> Stage[M]:
        return next(iter(self.stages.values()))

    @property
    def float_model(self) -> M:
        return self.stages[self.float_stage].model

    def run(self, model: M, dataset: Dataset, label: str) -> dict[str, np.ndarray]:
        with self.progress.bar(f"verify {label}", len(dataset)) as advance:
            return self.engine.run(model, dataset, advance)

    def record(self, name: str, model: M, precision: str, note: str = "") -> StageResult:
        """Verify a stage's model against the original and add its row to the report."""
        return self.add_stage(name, model, precision, self.run(model, self.data.verify, name), note)

    @property
    def threshold(self) -> float | None:
        """The card's decision threshold on a regression output: fidelity is then decision agreement."""
        return getattr(self.card.output, "threshold", None) if self.card is not None else None  # detectors: none

    def add_stage(
        self, name: str, model: M, precision: str, outputs: dict[str, np.ndarray], note: str = "",
        shape: StageShape | None = None,
    ) -> StageResult:
        """Verify a stage's outputs against the original's and add its row; `shape` describes a model the engine
        cannot (a .rknn verified in its toolkit's simulator)."""
        fidelity = compare(
            self.reference_outputs,
            outputs[self.output_name],
            classification=self.classification,
            labels=self.data.verify.labels,
            threshold=self.threshold,
        )
        boxes = None
        if self.detector is not None:
            match = match_boxes(self.reference_detections, self.detections(outputs))
            fidelity.matched_boxes = match.rate
            boxes = match.as_dict()
        self._record_sequence(name, outputs[self.output_name], fidelity)
        self.stages[name] = Stage(model, precision, fidelity)
        shape = shape or self.engine.describe(model)
        return self.report.add_stage(
            StageResult(
                stage=name,
                precision=precision,
                size_bytes=shape.size_bytes,
                nodes=shape.nodes,
                flops=shape.flops,
                accuracy=fidelity.accuracy,
                agreement=fidelity.agreement,
                cosine_mean=round(fidelity.cosine_mean, 6),
                boxes=boxes,
                note=note or shape.note,
            )
        )

    def _record_sequence(self, name: str, outputs: np.ndarray, fidelity: Fidelity) -> None:
        """For recurrent models and decisions: each stage's decision agreement and value error over the eval
        recordings, with its own state carried (the report's `sequence` section)."""
        verify = self.data.verify
        if verify.sequence is None and self.threshold is None:
            return
        if not self.report.sequence:
            self.report.sequence = {
                **(verify.sequence.describe(len(verify)) if verify.sequence is not None else {"windows": len(verify)}),
                "threshold": self.threshold,
                "output": self.output_name,
                "stages": {},
            }
        worst, mean = value_errors(self.reference_outputs, outputs)
        self.report.sequence["stages"][name] = {
            "decision_agreement": None if fidelity.agreement is None or self.threshold is None
            else round(fidelity.agreement, 6),
            "max_abs_error": round(worst, 6),
            "mean_abs_error": round(mean, 6),
        }

    def loss(self, name: str) -> float:
        """What the gate measures for a stage: its quality lost against the original's."""
        return quality_loss(self.original.fidelity, self.stages[name].fidelity)

    def data_loss(self, data: Dataset, reference: np.ndarray, candidate: np.ndarray) -> float:
        """The gate's measure for any data set: `candidate` outputs against the original model's `reference`."""
        labels = data.labels
        baseline = compare(reference, reference, classification=self.classification, labels=labels,
                           threshold=self.threshold)
        return quality_loss(baseline, compare(reference, candidate, classification=self.classification, labels=labels,
                                              threshold=self.threshold))
