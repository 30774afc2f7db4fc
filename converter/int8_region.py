"""Which operators run in int8: measured on candidate graphs, not read from a fixed list.

Quantizing only the convolutions and matrix products (the board file's `fast_ops`) leaves the operators between
them in float, and every int8 -> float -> int8 crossing costs a DequantizeLinear/QuantizeLinear pair at run time.
On a residual CNN the pooling, the residual Adds and the ReLUs after them kept six such pairs in onnxruntime's
optimized graph. Whether taking such an operator into the int8 region is faster depends on the board's kernels
(an int8 Add that is never fused can be slower than a float one), so it is measured: graphs quantized with the
board's list, with every operator the quantizer can handle, and with each of those left out in turn, timed in
one interleaved run on this host when it has the board's CPU architecture. Their fidelity is compared on
calibration samples they were not calibrated on, so coverage is never bought with accuracy.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from converter.data import Dataset
from converter.measure import measure_latencies
from converter.pass_errors import first_line

#: Beyond this many extra operator types, only the board's list and the full set are measured (each candidate
#: graph is one more quantization and timing of the model).
MAX_LEAVE_ONE_OUT = 6
#: A wider int8 region must beat the board's list by this much to be chosen: fewer changes when it is a tie.
MIN_GAIN = 1.02
#: Samples the candidates are calibrated on (the chosen set is calibrated again on all the data afterwards).
CALIBRATION_SAMPLES = 32


def quantizable_types() -> set[str]:
    """Every operator type onnxruntime's QDQ quantizer can take into the int8 region."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def extra_types(model: onnx.ModelProto, base: list[str]) -> list[str]:
    """Operator types in the graph that the quantizer handles but the board's list leaves in float."""
    present = {node.op_type for node in model.graph.node if node.domain in ("", "ai.onnx")}
    return sorted((present & quantizable_types()) - set(base))


def optimized_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph onnxruntime actually runs on this host (all optimizations, as the device applies them)."""
    with tempfile.TemporaryDirectory(prefix="edge-region-") as workdir:
        target = Path(workdir) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(target)
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(str(target))


def boundaries(model: onnx.ModelProto) -> dict[str, int]:
    """QuantizeLinear and DequantizeLinear nodes left in the optimized graph: the float <-> int8 crossings paid
    at run time (the ones onnxruntime fused into QLinear kernels are gone)."""
    counts = Counter(node.op_type for node in optimized_graph(model).graph.node)
    return {"quantize": counts["QuantizeLinear"], "dequantize": counts["DequantizeLinear"]}


@dataclass
class RegionCandidate:
    """One candidate int8 region, as the report shows it."""

    name: str
    op_types: list[str]
    quantize_nodes: int  # QuantizeLinear left in the optimized graph
    dequantize_nodes: int
    loss: float | None = None  # quality lost on held-out calibration samples, the gate's measure
    latency_ms: float | None = None
    chosen: bool = False


@dataclass
class RegionChoice:
    op_types: list[str]
    measured: bool
    reason: str
    candidates: list[RegionCandidate] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _candidate_sets(base: list[str], extra: list[str]) -> dict[str, list[str]]:
    full = sorted(set(base) | set(extra))
    sets = {"board list": list(base), "all quantizable": full}
    if 1 < len(extra) <= MAX_LEAVE_ONE_OUT:
        for op_type in extra:
            sets[f"all but {op_type}"] = [name for name in full if name != op_type]
    return sets


def choose_region(
    model: onnx.ModelProto,
    base: list[str],
    calibration: Dataset,
    quantize: Callable[[onnx.ModelProto, list[str], Dataset], onnx.ModelProto],
    loss: Callable[[onnx.ModelProto, Dataset], float],
    *,
    measurable: str,
    budget: float,
) -> RegionChoice:
    """The operator types to quantize.

    `quantize(model, op_types, data)` makes a candidate graph, `loss(graph, data)` is the gate's measure of its
    outputs against the float model's; `measurable` is empty when this host can time the board's kernels, else
    why not (then the board's list stands). A candidate may lose at most half the accuracy budget more than the
    board's list on held-out samples. The fastest of those wins if it beats the board's list by MIN_GAIN; among
    candidates within MIN_GAIN of each other, the one that leaves the fewest Q/DQ nodes, then the widest.
    """
    extra = extra_types(model, base)
    if not extra:
        return RegionChoice(list(base), False, "every quantizable operator is on the board's list")
    if measurable:
        return RegionChoice(list(base), False, f"the board's list; {measurable}")
    index = np.arange(len(calibration))
    fit = calibration.subset(index % 4 != 3)
    held_out = calibration.subset(index % 4 == 3) if len(calibration) >= 8 else calibration
    fit = fit.subset(slice(0, CALIBRATION_SAMPLES))
    graphs: dict[str, onnx.ModelProto] = {}
    candidates: dict[str, RegionCandidate] = {}
    failed: list[str] = []
    for name, op_types in _candidate_sets(base, extra).items():
        try:
            graph = quantize(model, op_types, fit)
            crossings = boundaries(graph)
        except Exception as exc:  # noqa: BLE001 - a wider region the quantizer cannot make is not a candidate
            if name == "board list":
                raise
            failed.append(f"{name}: {first_line(exc)}")
            continue
        graphs[name] = graph
        candidates[name] = RegionCandidate(
            name, op_types, crossings["quantize"], crossings["dequantize"], round(loss(graph, held_out), 6)
        )
    base_loss = candidates["board list"].loss or 0.0
    allowed = {name for name, c in candidates.items() if (c.loss or 0.0) <= base_loss + budget / 2}
    allowed.add("board list")
    latencies = measure_latencies(
        {name: graphs[name] for name in allowed}, calibration.first(), rounds=10, runs_per_round=10, budget_s=15
    )
    for name, latency in latencies.items():
        candidates[name].latency_ms = round(latency.median_ms, 4)
    best = min(latencies[name].median_ms for name in allowed)
    near = [name for name in allowed if latencies[name].median_ms <= best * MIN_GAIN]  # ties within noise
    if "board list" in near:
        fastest = "board list"
    else:  # of the ties, the one with the fewest crossings left, then the widest
        fastest = min(
            near,
            key=lambda name: (
                candidates[name].quantize_nodes + candidates[name].dequantize_nodes,
                -len(candidates[name].op_types),
            ),
        )
    candidates[fastest].chosen = True
    reason = "measured on this host: " + (
        "no wider int8 region was faster" if fastest == "board list" else f"{fastest} was fastest"
    )
    if failed:
        reason += "; could not quantize " + "; ".join(failed)
    return RegionChoice(candidates[fastest].op_types, True, reason, list(candidates.values()))
