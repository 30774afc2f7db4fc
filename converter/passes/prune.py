"""Prune: remove whole channels and neurons, refit what reads them, before quantization.

`--prune RATIO` removes that share of the channels of every prunable group; `--prune auto` chooses a ratio per
group that spends the accuracy budget where it removes the most work (see converter/prune/allocation.py).
Zeroed weights make nothing faster on a CPU; a Conv with half the filters does half the work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from converter.conversion import Conversion
from converter.data import Dataset
from converter.errors import ConversionError
from converter.options import GateFailed
from converter.prune.allocation import CrossFit, allocate
from converter.prune.flops import total_flops
from converter.prune.pruner import ChannelPruner
from converter.runner import make_session, run_dataset

AUTO = "auto"
#: Fewer samples than this cannot score channels or constrain a refit.
MIN_CALIBRATION = 16
#: Share of --max-accuracy-drop that `--prune auto` may spend when int8 follows (which gets the rest; fp16 costs
#: next to nothing and leaves pruning the whole budget).
PRUNE_SHARE_BEFORE_QUANTIZATION = 0.75


def parse_prune(text: str | None) -> str | None:
    """'auto' or a ratio in (0, 1) as given; anything else is one clear error."""
    if text is None or text == "":
        return None
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        ratio = float(text)
    except ValueError:
        raise ConversionError(f"--prune takes a ratio in (0, 1) such as 0.3, or 'auto'; got '{text}'") from None
    if not 0 < ratio < 1 or not np.isfinite(ratio):
        raise ConversionError(
            f"--prune {text}: the ratio is the share of channels to remove and must lie strictly between 0 and 1 "
            f"(e.g. 0.3), or use --prune auto"
        )
    return text.strip()


@dataclass
class PruneResult:
    model: onnx.ModelProto
    mode: str
    groups: list[dict]
    left_alone: list[dict]
    flops_before: int
    flops_after: int
    budget: float | None = None
    search: list[dict] = field(default_factory=list)
    sensitivity: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_report(self) -> dict:
        data = asdict(self)
        data.pop("model")
        return data


Loss = Callable[[Dataset, np.ndarray, np.ndarray], float]


def _check_calibration(calibration: Dataset | None) -> Dataset:
    if calibration is None:
        raise ConversionError(
            "--prune needs --calibration DATA.npz: channels are scored and the layers that read them are refitted "
            "on real activations"
        )
    if len(calibration) < MIN_CALIBRATION:
        raise ConversionError(
            f"--prune needs at least {MIN_CALIBRATION} calibration samples to score channels; "
            f"{calibration.source} has {len(calibration)}"
        )
    return calibration


def prune(
    model: onnx.ModelProto,
    calibration: Dataset | None,
    setting: str,
    *,
    output_name: str,
    loss: Loss,
    budget: float,
    evaluation: Dataset | None = None,
    scoring: str = "activation",
    refit: bool = True,
    advance: Callable[[str], None] | None = None,
) -> PruneResult:
    """Prune `model` by `setting` ('auto' or a ratio string).

    `loss(data, reference, candidate)` is the accuracy gate's measure of a candidate's outputs on `data` against
    the unpruned model's; `auto` keeps it within `budget` on the calibration data (cross-fitted) and on
    `evaluation` when given.
    """
    calibration = _check_calibration(calibration)
    pruner = ChannelPruner(model, scoring=scoring, refit_layers=refit)
    result_budget, search, sensitivity = None, [], {}
    if setting == AUTO:
        cross = CrossFit(pruner, calibration, output_name)
        moments = cross.total
        scores = pruner.scores(moments)
        reference = run_dataset(make_session(pruner.model), calibration)[output_name]
        evaluation_reference = (
            run_dataset(make_session(pruner.model), evaluation)[output_name] if evaluation is not None else None
        )

        def judge(ratios: dict[int, float]) -> float:
            losses = [loss(calibration, reference, cross.outputs(ratios))]
            if evaluation is not None:
                candidate = pruner.build(pruner.keep(ratios, scores), moments)
                outputs = run_dataset(make_session(candidate), evaluation)[output_name]
                losses.append(loss(evaluation, evaluation_reference, outputs))
            return max(losses)

        allocation = allocate(pruner, cross, reference=reference, judge=judge, budget=budget, advance=advance)
        ratios = allocation.ratios
        mode = f"auto, budget {budget * 100:.2f} pt"
        result_budget, sensitivity = budget, allocation.sensitivity
        search = [asdict(step) for step in allocation.steps]
    else:
        moments = pruner.moments(calibration)
        scores = pruner.scores(moments)
        ratio = float(setting)
        ratios = {group.id: ratio for group in pruner.groups}
        mode = f"ratio {ratio:g}"
    keep = pruner.keep(ratios, scores)
    pruned = pruner.build(keep, moments) if keep else pruner.model
    return PruneResult(
        model=pruned,
        mode=mode,
        groups=[asdict(change) for change in pruner.changes(keep)],
        left_alone=pruner.left_alone(),
        flops_before=total_flops(pruner.model),
        flops_after=total_flops(pruned),
        budget=result_budget,
        search=search,
        sensitivity=sensitivity,
    )


def prune_pass(conversion: Conversion[onnx.ModelProto]) -> None:
    """The pipeline's `prune` (only with --prune): prune before quantization, and refuse at once a ratio that alone
    breaks the accuracy budget. `auto` spends part of the budget and leaves the rest to int8."""
    options, report = conversion.options, conversion.report
    setting = options.prune
    if not setting:
        return
    quantizing = "quantize" not in options.skip and conversion.quantize == "int8"
    share = PRUNE_SHARE_BEFORE_QUANTIZATION if quantizing else 1.0
    budget = options.max_accuracy_drop * share
    with conversion.progress.status(f"prune {setting}") as update:
        result = prune(
            conversion.float_model,
            conversion.data.calibration,
            setting,
            output_name=conversion.output_name,
            loss=conversion.data_loss,
            budget=budget,
            evaluation=conversion.data.evaluation,
            advance=update,
        )
    report.pruning = result.as_report()
    if setting == AUTO:
        report.pruning["budget_share"] = share
        if conversion.data.evaluation is None:
            report.notes.append(
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
        report.notes.append(f"--prune {setting}: {why}")
        report.passes["prune"] = f"ran ({result.mode}): nothing pruned"
        return
    stage = f"pruned ({result.mode.split(',')[0]})"
    conversion.record(stage, result.model, "fp32", note=f"{changed} channel group(s) pruned")
    report.passes["prune"] = f"ran ({result.mode})"
    loss = conversion.loss(stage)
    if setting != AUTO and conversion.gate_enforced and loss > options.max_accuracy_drop:
        raise GateFailed(
            f"bundle refused: --prune {setting} alone loses {loss * 100:.2f} points against the original "
            f"(allowed: {options.max_accuracy_drop * 100:.2f}); try a smaller ratio, or --prune auto to "
            f"spend the budget where it costs least",
            report,
        )
    conversion.float_stage = stage
