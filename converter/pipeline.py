"""The conversion pipeline: load and check -> fuse -> prune -> quantize -> verify -> reference statistics -> bundle.

Every graph pass is followed by a verification of its output against the original model on real data, so the
report can say which step cost what. Passes can be switched off by name (`--skip fuse,quantize`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from rich.console import Console

from converter.data import Dataset, load_dataset
from converter.errors import ConversionError
from converter.evaluate import Fidelity, compare, quality_loss
from converter.measure import measure_latencies
from converter.package import BundleContents, write_model_bundle
from converter.passes.check import check_model, detect_format, load_onnx, model_inputs, model_outputs
from converter.passes.fuse import fuse
from converter.passes.prune import AUTO, parse_prune, prune
from converter.passes.quantize import (
    CALIBRATION_METHODS,
    CalibrationTrial,
    QuantizeSettings,
    quantize_fp16,
    quantize_int8,
    sensitive_nodes,
)
from converter.progress import Progress
from converter.prune.flops import model_flops
from converter.reference import reference_statistics
from converter.report import Report, StageResult
from converter.runner import make_session, run_dataset
from edge_runtime.board import Board, load_board
from edge_runtime.bundle import Manifest
from edge_runtime.card import ModelCard
from edge_runtime.yaml_source import load_model

SKIPPABLE_PASSES = ("fuse", "quantize", "verify", "reference")
# int8 must beat the float model by this much on a board measurable here, or the float model is kept.
MIN_INT8_SPEEDUP = 1.05
MAX_EXCLUSION_ROUNDS = 4
#: Share of --max-accuracy-drop that `--prune auto` may spend when int8 follows (which gets the rest; fp16 costs
#: next to nothing and leaves pruning the whole budget).
PRUNE_SHARE_BEFORE_QUANTIZATION = 0.75


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


@dataclass
class ConvertResult:
    manifest: Manifest
    report: Report


class GateFailed(ConversionError):
    """The accuracy gate refused the bundle; carries the report that says which step cost what."""

    def __init__(self, message: str, report: Report):
        super().__init__(message)
        self.report = report


def resolve_precision(requested: str, board: Board) -> str:
    """`auto` means what the board runs best; an explicit choice must be one the board supports."""
    support = board.quantization.supports
    if requested == "auto":
        return board.quantization.preferred
    if requested not in support:
        raise ConversionError(
            f"board '{board.name}' does not support --quantize {requested}; it supports {', '.join(support)}"
        )
    return requested


def is_classifier(card: ModelCard | None, outputs: dict[str, np.ndarray]) -> bool:
    if card is not None:
        return card.output.kind == "classification"
    first = next(iter(outputs.values()))
    return first.ndim == 2 and first.shape[1] > 1


def primary_output(card: ModelCard | None, names: list[str]) -> str:
    if card is not None and card.output.name:
        return card.output.name
    return names[0]


class Conversion:
    """One run of the pipeline for one ONNX model; holds the state that passes and verification share."""

    def __init__(self, options: ConvertOptions, board: Board, card: ModelCard | None, console: Console):
        self.options = options
        self.board = board
        self.card = card
        self.console = console
        self.progress = Progress(console)
        self.report = Report(model=options.model.name, target=board.name)
        self.models: dict[str, onnx.ModelProto] = {}
        self.precisions: dict[str, str] = {}
        self.fidelity: dict[str, Fidelity] = {}

    # -- verification ---------------------------------------------------------------------------------------
    def run(self, model: onnx.ModelProto, dataset: Dataset, label: str) -> dict[str, np.ndarray]:
        session = make_session(model, threads=self.board.threads if self.board.runs_on_this_host() else 1)
        with self.progress.bar(f"verify {label}", len(dataset)) as advance:
            return run_dataset(session, dataset, advance=advance)

    def record(self, name: str, model: onnx.ModelProto, precision: str, note: str = "") -> StageResult:
        """Verify a stage's model against the original and add its row to the report."""
        outputs = self.run(model, self.verify_data, name)
        fidelity = compare(
            self.reference_outputs,
            outputs[self.output_name],
            classification=self.classification,
            labels=self.verify_data.labels,
        )
        self.models[name], self.precisions[name], self.fidelity[name] = model, precision, fidelity
        return self.report.add_stage(
            StageResult(
                stage=name,
                precision=precision,
                size_bytes=model.ByteSize(),
                nodes=len(model.graph.node),
                flops=model_flops(model),
                accuracy=fidelity.accuracy,
                agreement=fidelity.agreement,
                cosine_mean=round(fidelity.cosine_mean, 6),
                note=note,
            )
        )

    def loss(self, name: str) -> float:
        return quality_loss(self.fidelity["original"], self.fidelity[name])

    def data_loss(self, data: Dataset, reference: np.ndarray, candidate: np.ndarray) -> float:
        """The gate's measure for any data set: `candidate` outputs against the original model's `reference`."""
        labels = data.labels
        baseline = compare(reference, reference, classification=self.classification, labels=labels)
        return quality_loss(baseline, compare(reference, candidate, classification=self.classification, labels=labels))

    def prune(self, model: onnx.ModelProto, quantizing: bool) -> tuple[onnx.ModelProto, str]:
        """Prune before quantization; `auto` spends part of the accuracy budget and leaves the rest to int8."""
        setting = self.options.prune or ""
        share = PRUNE_SHARE_BEFORE_QUANTIZATION if quantizing else 1.0
        budget = self.options.max_accuracy_drop * share
        with self.progress.status(f"prune {setting}") as update:
            result = prune(
                model,
                self.calibration,
                setting,
                output_name=self.output_name,
                loss=self.data_loss,
                budget=budget,
                evaluation=self.evaluation,
                advance=update,
            )
        self.report.pruning = result.as_report()
        if setting == AUTO:
            self.report.pruning["budget_share"] = share
            if self.evaluation is None:
                self.report.notes.append(
                    "--prune auto without --eval data: candidates were judged on cross-fitted calibration data only"
                )
        changed = sum(group["before"] != group["after"] for group in result.groups)
        if not changed:
            why = (
                "no channel group could be pruned within the accuracy budget"
                if setting == AUTO
                else "the ratio removes no channel once kept counts are rounded (to whole channels, and to a "
                "multiple of 8 in groups of 16 or more); use a larger one"
            )
            self.report.notes.append(f"--prune {setting}: {why}")
            self.report.passes["prune"] = f"ran ({result.mode}): nothing pruned"
            return model, ""
        stage = f"pruned ({result.mode.split(',')[0]})"
        self.record(stage, result.model, "fp32", note=f"{changed} channel group(s) pruned")
        self.report.passes["prune"] = f"ran ({result.mode})"
        loss = self.loss(stage)
        enforced = "verify" not in self.options.skip
        if setting != AUTO and enforced and loss > self.options.max_accuracy_drop:
            raise GateFailed(
                f"bundle refused: --prune {setting} alone loses {loss * 100:.2f} points against the original "
                f"(allowed: {self.options.max_accuracy_drop * 100:.2f}); try a smaller ratio, or --prune auto to "
                f"spend the budget where it costs least",
                self.report,
            )
        return result.model, stage

    # -- passes ---------------------------------------------------------------------------------------------
    def load_data(self, inputs) -> None:
        options = self.options
        self.calibration = (
            load_dataset(options.calibration, inputs, what="calibration") if options.calibration else None
        )
        self.evaluation = load_dataset(options.evaluation, inputs, what="evaluation") if options.evaluation else None
        if self.calibration is None and self.evaluation is None:
            raise ConversionError(
                "edge-convert verifies every model on real data: give --eval DATA.npz and/or --calibration DATA.npz"
            )
        self.verify_data = self.evaluation or self.calibration
        if self.evaluation is None:
            self.report.notes.append("no --eval data: verified on the calibration data, which flatters int8")
        self.report.eval_source = Path(self.verify_data.source).name
        self.report.eval_samples = len(self.verify_data)

    def choose_calibration(self, model: onnx.ModelProto, settings: QuantizeSettings) -> str:
        """Quantize with each calibration method on 3/4 of the calibration data, keep the one whose outputs
        stay closest to the float model on the held-out quarter."""
        data = self.calibration
        if len(data) < 8:
            self.report.notes.append("fewer than 8 calibration samples: calibration method fixed to minmax")
            return "minmax"
        index = np.arange(len(data))
        fit, held_out = data.subset(index % 4 != 3), data.subset(index % 4 == 3)
        float_out = self.run(model, held_out, "held-out (float)")[self.output_name]
        trials = []
        for method in CALIBRATION_METHODS:
            with self.progress.bar(f"calibrate {method}", len(fit)) as advance:
                candidate = quantize_int8(model, settings, fit, method=method, advance=advance)
            out = self.run(candidate, held_out, f"held-out ({method})")[self.output_name]
            fidelity = compare(float_out, out, classification=self.classification)
            trials.append(CalibrationTrial(method, fidelity.agreement, round(fidelity.cosine_mean, 6)))
        best = max(trials, key=lambda t: (t.agreement if t.agreement is not None else 0.0, t.cosine_mean))
        best.chosen = True
        self.report.calibration = [trial.__dict__ for trial in trials]
        return best.method

    def quantize_int8(self, model: onnx.ModelProto) -> str | None:
        """Quantize, then while the accuracy gate fails leave the most sensitive nodes in float."""
        if self.calibration is None:
            raise ConversionError("int8 quantization needs --calibration DATA.npz (or use --quantize none)")
        settings = QuantizeSettings.for_board(self.board)
        method = self.choose_calibration(model, settings)
        with self.progress.bar(f"calibrate {method} (all data)", len(self.calibration)) as advance:
            quantized = quantize_int8(model, settings, self.calibration, method=method, advance=advance)
        stage = f"int8 {settings.describe()}, {method}"
        self.record(stage, quantized, "int8")
        excluded: list[str] = []
        rounds = 0
        while self.loss(stage) > self.options.max_accuracy_drop and rounds < MAX_EXCLUSION_ROUNDS:
            rounds += 1
            samples = self.calibration.subset(slice(0, min(64, len(self.calibration))))
            ranking = [name for name, _ in sensitive_nodes(model, quantized, samples) if name not in excluded]
            if not ranking:
                break
            excluded += ranking[: 2 ** (rounds - 1)]
            with self.progress.bar(f"re-quantize without {len(excluded)} node(s)", len(self.calibration)) as adv:
                quantized = quantize_int8(
                    model, settings, self.calibration, method=method, nodes_to_exclude=excluded, advance=adv
                )
            stage = f"int8, {len(excluded)} node(s) in float"
            self.record(stage, quantized, "mixed", note="excluded: " + ", ".join(excluded))
        self.report.excluded_nodes = excluded
        return stage


def _measure(conversion: Conversion, report: Report) -> None:
    """Batch-1 latency of every stage, interleaved in one run."""
    board = conversion.board
    threads = 1
    feed = conversion.verify_data.first()
    latencies = measure_latencies(conversion.models, feed, threads=threads)
    for stage in report.stages:
        stage.latency_ms = round(latencies[stage.stage].median_ms, 4)
    where = f"this host ({report.host}), {threads} thread"
    if not board.runs_on_this_host():
        where += f"; the target is {board.arch}, so these are not the board's latencies"
    report.latency_measured_on = where


def _pick_final(conversion: Conversion, float_stage: str, quantized_stage: str | None) -> str:
    """The quantized model unless it is not faster on a board whose speed this machine can stand in for."""
    report, board = conversion.report, conversion.board
    if quantized_stage is None:
        return float_stage
    float_latency = report.stage(float_stage).latency_ms
    quant_latency = report.stage(quantized_stage).latency_ms
    if board.runs_on_this_host() and float_latency and quant_latency:
        speedup = float_latency / quant_latency
        if speedup < MIN_INT8_SPEEDUP:
            report.notes.append(
                f"{conversion.precisions[quantized_stage]} is not faster than float on this {board.arch} host "
                f"({speedup:.2f}x): keeping the float model"
            )
            return float_stage
    elif not board.runs_on_this_host():
        report.notes.append(
            f"int8 speed not verified: the target '{board.name}' is {board.arch}; run `edge-runtime bench` on it"
        )
    return quantized_stage


def convert_onnx(options: ConvertOptions, board: Board, card: ModelCard | None, console: Console) -> ConvertResult:
    conversion = Conversion(options, board, card, console)
    report = conversion.report
    if board.requires_tflite:
        raise ConversionError(
            f"board '{board.name}' runs only TFLite models (compiled for its accelerator); convert the model to a "
            f"full-int8 .tflite, compile it with edgetpu_compiler and pass that file"
        )
    model, notes = check_model(load_onnx(options.model), card)
    report.notes += notes
    report.passes["check"] = "ran"
    inputs, outputs = model_inputs(model), model_outputs(model)
    conversion.load_data(inputs)
    precision = resolve_precision(options.quantize, board)
    output_names = [info.name for info in outputs]
    conversion.output_name = primary_output(card, output_names)
    conversion.classification = True  # decided from the first run below
    first = conversion.run(model, conversion.verify_data, "original")
    conversion.classification = is_classifier(card, first)
    conversion.reference_outputs = first[conversion.output_name]
    conversion.record("original", model, "fp32")

    current, current_stage = model, "original"
    if "fuse" in options.skip:
        report.passes["fuse"] = "skipped (--skip)"
    else:
        current = fuse(model, board)
        current_stage = "fused"
        conversion.record(current_stage, current, "fp32")
        report.passes["fuse"] = "ran"

    if options.prune:
        quantizing = "quantize" not in options.skip and precision == "int8"
        pruned, stage = conversion.prune(current, quantizing)
        if stage:
            current, current_stage = pruned, stage

    quantized_stage = None
    if "quantize" in options.skip or precision == "none":
        report.passes["quantize"] = "skipped (--skip)" if "quantize" in options.skip else "off (--quantize none)"
    elif precision == "int8":
        quantized_stage = conversion.quantize_int8(current)
        report.passes["quantize"] = "ran (int8)"
    elif precision == "fp16":
        quantized_stage = "fp16"
        conversion.record(quantized_stage, quantize_fp16(current), "fp16")
        report.passes["quantize"] = "ran (fp16)"

    if options.measure_latency:
        _measure(conversion, report)
    final = _pick_final(conversion, current_stage, quantized_stage)
    report.final_stage = final
    loss = conversion.loss(final)
    basis = "accuracy" if conversion.fidelity["original"].accuracy is not None else "top-1 agreement"
    if not conversion.classification:
        basis = "cosine similarity"
    passed = "verify" in options.skip or loss <= options.max_accuracy_drop
    report.gate = {
        "max_accuracy_drop": options.max_accuracy_drop,
        "loss": round(loss, 6),
        "basis": basis,
        "passed": passed,
    }
    report.passes["verify"] = "skipped (--skip): gate not enforced" if "verify" in options.skip else "ran"
    if not passed:
        raise GateFailed(
            f"bundle refused: the {final} model loses {loss * 100:.2f} points of {basis} against the original "
            f"(allowed: {options.max_accuracy_drop * 100:.2f}); see the report above for the cost of each step. "
            f"Try --quantize none, more representative --calibration data, or a larger --max-accuracy-drop",
            report,
        )

    final_model = conversion.models[final]
    reference = {}
    if "reference" in options.skip:
        report.passes["reference"] = "skipped (--skip)"
    else:
        source = conversion.calibration or conversion.verify_data
        scores = conversion.run(final_model, source, "reference statistics")[conversion.output_name]
        reference = reference_statistics(source, scores, card, classification=conversion.classification)
        report.passes["reference"] = "ran"
        if conversion.calibration is None:
            report.notes.append("reference statistics taken from the --eval data (no --calibration given)")

    golden_inputs = conversion.verify_data.first()
    session = make_session(final_model)
    golden_outputs = dict(zip(output_names, session.run(output_names, golden_inputs), strict=True))
    contents = BundleContents(
        name=card.name if card else options.model.stem,
        version=card.version if card else "1",
        model_bytes=final_model.SerializeToString(),
        model_format="onnx",
        precision=conversion.precisions[final],
        inputs=model_inputs(final_model),
        outputs=model_outputs(final_model),
        golden_inputs=golden_inputs,
        golden_outputs=golden_outputs,
        verification=report.as_dict(),
        reference=reference,
    )
    manifest = write_model_bundle(options.output, contents, board, card, options.sign_key)
    return ConvertResult(manifest, report)


def convert(options: ConvertOptions, console: Console) -> ConvertResult:
    """Run the whole pipeline; every user-fixable problem surfaces as a ConversionError."""
    unknown = options.skip - set(SKIPPABLE_PASSES)
    if unknown:
        raise ConversionError(
            f"unknown pass(es) for --skip: {', '.join(sorted(unknown))}; passes: {', '.join(SKIPPABLE_PASSES)}"
        )
    if not 0 <= options.max_accuracy_drop < 1:
        raise ConversionError(f"--max-accuracy-drop must be a fraction in [0, 1), got {options.max_accuracy_drop}")
    options.prune = parse_prune(options.prune)
    board = load_board(options.target)
    card = load_model(options.card, ModelCard) if options.card else None
    model_format = detect_format(options.model)
    if model_format == "tflite" and options.prune:
        raise ConversionError(
            "--prune works on ONNX graphs; a TFLite model is packaged as it is. Prune the ONNX model before "
            "exporting it to TFLite, or convert the ONNX model with --prune"
        )
    if model_format == "tflite":
        from converter.tflite_package import package_tflite

        return package_tflite(options, board, card, console)
    return convert_onnx(options, board, card, console)


ConvertFunction = Callable[[ConvertOptions, Console], ConvertResult]
