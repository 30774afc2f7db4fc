"""The verification report: stage by stage, what each pass did to size, latency and accuracy.

Kept as plain data so the same report goes into the bundle as JSON and onto the terminal as a table.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table

PASS_ORDER = ["check", "fuse", "prune", "quantize", "verify", "npu", "edgetpu", "reference"]


@dataclass
class StageResult:
    """One row of the report: the model as it stood after a pass."""

    stage: str
    precision: str
    size_bytes: int
    nodes: int
    flops: int | None = None  # Conv/Gemm/MatMul FLOPs at batch 1
    accuracy: float | None = None
    agreement: float | None = None
    cosine_mean: float | None = None
    latency_ms: float | None = None
    boxes: dict | None = None  # detectors: boxes found and matched against the original (detection_fidelity.py)
    note: str = ""


@dataclass
class Report:
    model: str
    target: str
    host: str = field(default_factory=platform.machine)
    latency_measured_on: str = ""
    eval_source: str = ""
    eval_samples: int = 0
    stages: list[StageResult] = field(default_factory=list)
    passes: dict[str, str] = field(default_factory=dict)
    dimensions: list[dict] = field(default_factory=list)  # dynamic input dimensions and what fixed them
    calibration: list[dict] = field(default_factory=list)
    excluded_nodes: list[str] = field(default_factory=list)
    int8_region: dict = field(default_factory=dict)  # the operator types quantized and the candidates measured
    pruning: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)
    #: recurrent models and thresholded outputs: recordings, windows, state pairs, and per stage the decision
    #: agreement and value error against the original over the eval recordings (converter/conversion.py)
    sequence: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    final_stage: str = ""
    inferred: dict = field(default_factory=dict)  # card fields taken from the exporter's metadata, and from where
    detection: dict = field(default_factory=dict)  # detectors: what the original model finds in the eval images
    #: the board's accelerator model (converter/passes/npu.py, edgetpu.py): built or not and why, operators the
    #: toolkit rejected, the simulator's stage row, the toolkit's performance estimate or why there is none
    npu: dict = field(default_factory=dict)

    def add_stage(self, stage: StageResult) -> StageResult:
        self.stages.append(stage)
        return stage

    def stage(self, name: str) -> StageResult:
        return next(stage for stage in self.stages if stage.stage == name)

    def as_dict(self) -> dict:
        return asdict(self)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1024:.1f} KiB" if num_bytes < 1024 * 1024 else f"{num_bytes / 2**20:.2f} MiB"


def render_report(report: dict, console: Console) -> None:
    """Print a report dict (as stored in a bundle) as a table plus its decisions and notes."""
    stages = report.get("stages", [])
    title = f"{report['model']} for {report['target']}"
    table = Table(title=title, title_justify="left")
    for column in (
        "stage",
        "precision",
        "size",
        "nodes",
        "MFLOPs",
        "latency",
        "speed-up",
        "accuracy",
        "cost",
        "agreement",
        "cosine",
    ):
        table.add_column(column, justify="left" if column in ("stage", "precision") else "right")
    base_latency = stages[0].get("latency_ms") if stages else None
    previous_accuracy = None
    for stage in stages:
        latency = stage.get("latency_ms")
        speedup = f"{base_latency / latency:.2f}x" if latency and base_latency else "-"
        accuracy = stage.get("accuracy")
        cost = "-"
        if accuracy is not None and previous_accuracy is not None:
            cost = f"{(previous_accuracy - accuracy) * 100:+.2f} pt"
        if accuracy is not None:
            previous_accuracy = accuracy
        marker = " *" if stage["stage"] == report.get("final_stage") else ""
        table.add_row(
            stage["stage"] + marker,
            stage["precision"],
            _size(stage["size_bytes"]),
            str(stage["nodes"]),
            "-" if stage.get("flops") is None else f"{stage['flops'] / 1e6:.1f}",
            "-" if latency is None else f"{latency:.3f} ms",
            speedup,
            _percent(accuracy),
            cost,
            _percent(stage.get("agreement")),
            "-" if stage.get("cosine_mean") is None else f"{stage['cosine_mean']:.5f}",
        )
    console.print(table)
    render_detection(report, console)
    console.print(
        f"* = the model in the bundle. Accuracy and agreement on {report.get('eval_samples', 0)} samples of "
        f"{report.get('eval_source') or '-'}; 'cost' = accuracy points lost by that stage. Latency: batch 1, median, "
        f"{report.get('latency_measured_on') or 'not measured'}."
    )
    render_inferred(report.get("inferred") or {}, console)
    passes = report.get("passes", {})
    if passes:  # the manifest stores keys sorted; show them in pipeline order
        ordered = sorted(passes, key=lambda name: PASS_ORDER.index(name) if name in PASS_ORDER else len(PASS_ORDER))
        console.print("passes: " + ", ".join(f"{name} {passes[name]}" for name in ordered))
    for fix in report.get("dimensions", []):
        console.print(f"dimension: {_dimension(fix)}", markup=False)
    for trial in report.get("calibration", []):
        chosen = "  <- chosen" if trial.get("chosen") else ""
        agreement = _percent(trial.get("agreement"))
        loss = "" if trial.get("loss") is None else f", loss {trial['loss'] * 100:.2f} pt (error {trial['error']:.4f})"
        console.print(
            f"calibration {trial['method']:<10} held-out agreement {agreement}, cosine {trial['cosine_mean']:.5f}"
            f"{loss}{chosen}"
        )
    render_int8_region(report.get("int8_region") or {}, console)
    render_pruning(report.get("pruning") or {}, console)
    render_sequence(report.get("sequence") or {}, console)
    if report.get("excluded_nodes"):
        console.print(f"left in float (most sensitive): {', '.join(report['excluded_nodes'])}")
    render_npu(report.get("npu") or {}, console)
    gate = report.get("gate") or {}
    if gate:
        verdict = "passed" if gate.get("passed") else "FAILED"
        console.print(
            f"accuracy gate {verdict}: {gate['basis']} lost {gate['loss'] * 100:.2f} pt, "
            f"allowed {gate['max_accuracy_drop'] * 100:.2f} pt"
        )
    for note in report.get("notes", []):
        console.print(f"note: {note}")


def render_npu(npu: dict, console: Console) -> None:
    """The accelerator model: bundled or not and why, the operators the toolkit rejected, performance estimate."""
    if not npu:
        return
    console.print(f"{npu['accelerator']}: {npu['status']}" + (f" ({npu['reason']})" if npu.get("reason") else ""),
                  markup=False)
    for operator in npu.get("operators", []):
        node = f" '{operator['node']}'" if operator.get("node") else ""
        console.print(f"  rejected: {operator['op']}{node}: {operator['problem']}", markup=False)
    for key in ("toolkit", "normalisation", "performance"):
        if npu.get(key):
            console.print(f"  {key}: {npu[key]}", markup=False)


def render_inferred(inferred: dict, console: Console) -> None:
    """The card fields no card file gave: where they came from and their values."""
    if not inferred:
        return
    fields = ", ".join(f"{key}={value}" for key, value in inferred.get("fields", {}).items())
    console.print(f"inferred from the {inferred.get('from', 'model')}: {fields}")


def render_detection(report: dict, console: Console) -> None:
    """Detectors: boxes each stage finds on the verification images, and how many match the original's."""
    found = report.get("detection") or {}
    if not found:
        return
    labels = ", ".join(f"{label} {count}" for label, count in list(found.get("by_label", {}).items())[:6])
    console.print(f"detections: the original finds {found['boxes']} box(es) in {found['images_with_boxes']} of "
                  f"{found['images']} images" + (f" ({labels})" if labels else ""))
    for stage in report.get("stages", []):
        boxes = stage.get("boxes")
        if boxes:
            console.print(f"  {stage['stage']}: {boxes['candidate']} box(es), {boxes['matched']} matched "
                          f"(IoU >= 0.5, same class): matched-box rate {boxes['rate'] * 100:.2f}%")


def _dimension(fix: dict) -> str:
    where = f"input '{fix['input']}' axis {fix['axis']} (written {fix['written']})"
    if fix["value"] == "batch":
        return f"{where}: the batch axis, kept dynamic"
    return f"{where} fixed to {fix['value']} from the {fix['source']}"


def render_int8_region(region: dict, console: Console) -> None:
    """The operator types quantized, why, and every candidate region measured: Q/DQ nodes left in onnxruntime's
    optimized graph, latency and held-out loss."""
    if not region:
        return
    console.print(f"int8 region: {', '.join(region['op_types'])} ({region['reason']})", markup=False)
    for candidate in region.get("candidates", []):
        latency = "-" if candidate.get("latency_ms") is None else f"{candidate['latency_ms']:.3f} ms"
        loss = "-" if candidate.get("loss") is None else f"{candidate['loss'] * 100:.2f} pt"
        chosen = "  <- chosen" if candidate.get("chosen") else ""
        left = f"{candidate['quantize_nodes']} Q + {candidate['dequantize_nodes']} DQ"
        console.print(
            f"  {candidate['name']:<26} Q/DQ left: {left}, latency {latency}, held-out loss {loss}{chosen}",
            markup=False,
        )


def render_sequence(sequence: dict, console: Console) -> None:
    """Recurrent / thresholded models: how each stage's decisions and values compare with the original's over the
    eval recordings, the state carried through each."""
    if not sequence:
        return
    state = sequence.get("state") or {}
    carried = (", state " + ", ".join(f"{name} <- {output}" for name, output in state.items())) if state else ""
    threshold = sequence.get("threshold")
    console.print(
        f"sequence: {sequence.get('recordings', 1)} recording(s), {sequence.get('windows', 0)} windows{carried}; "
        f"'{sequence.get('output')}'" + (f" decision at >= {threshold:g}" if threshold is not None else "")
    )
    for stage, row in (sequence.get("stages") or {}).items():
        agreement = row.get("decision_agreement")
        decided = f"decision agreement {_percent(agreement)}, " if agreement is not None else ""
        console.print(f"  {stage}: {decided}value error max {row['max_abs_error']:.4g}, mean "
                      f"{row['mean_abs_error']:.4g}")


def render_pruning(pruning: dict, console: Console) -> None:
    """Output channels before and after per layer (layers joined by a residual Add share a group number, and
    their channels), the groups left alone and why, and the auto search's steps."""
    if not pruning:
        return
    table = Table(title=f"pruning: {pruning['mode']}", title_justify="left")
    for column in ("layer", "group", "output channels", "kept"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for number, group in enumerate(pruning.get("groups", []), start=1):
        kept = group["after"] / group["before"] if group["before"] else 1.0
        for layer in group["producers"]:
            table.add_row(layer, str(number), f"{group['before']} -> {group['after']}", f"{kept:.0%}")
    console.print(table)
    before, after = pruning.get("flops_before") or 0, pruning.get("flops_after") or 0
    if before:
        console.print(f"pruning: {before / 1e6:.1f} -> {after / 1e6:.1f} MFLOPs ({before / max(after, 1):.2f}x fewer)")
    for group in pruning.get("left_alone", []):
        console.print(f"left alone: {group['name']} ({group['channels']} channels): {'; '.join(group['reasons'])}")
    for step in sorted(pruning.get("search", []), key=lambda step: -step["macs"]):
        verdict = "within budget" if step["within_budget"] else "over budget"
        console.print(f"auto search: {2 * step['macs'] / 1e6:.1f} MFLOPs, loss {step['loss'] * 100:.2f} pt, {verdict}")
