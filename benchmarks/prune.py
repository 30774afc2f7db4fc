"""Benchmark: structured pruning on the residual CNN, against the unpruned model and naive channel pruning.

    python benchmarks/prune.py [--budget 0.01] [--target x86_64] [--write docs/benchmarks.md]

One run, one machine, latencies interleaved (batch 1, 1 thread, median). The digits test split is cut in two
halves: `--prune auto` checks its candidates against the first (given as --eval, like a user's validation set),
and every model is also scored on the second, which no step of the conversion saw.

Variants:
- fp32: the trained model as exported;
- int8: `edge-convert` without pruning (the converter's own int8 bundle);
- naive: L1-norm filter pruning (Li et al., 2017) without any refit, with exactly the channel counts that
  `--prune auto` chose (and at a uniform ratio of 0.5), on the same channel groups;
- pruned: `edge-convert --prune auto --quantize none` (pruning alone spends the whole budget);
- pruned + int8: `edge-convert --prune auto` (pruning spends 3/4 of the budget, int8 the rest);
- ablations at auto's channel counts: activation scores without the refit, filter magnitude with the refit.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from rich.console import Console

from benchmarks.convert import _cpu_name, write_section
from converter.data import Dataset, load_dataset
from converter.evaluate import accuracy
from converter.measure import measure_latencies
from converter.options import ConvertOptions, ConvertResult
from converter.passes.check import model_inputs
from converter.passes.fuse import fuse
from converter.pipeline import convert
from converter.prune.flops import model_flops
from converter.prune.pruner import ChannelPruner
from converter.runner import make_session, run_dataset
from edge_runtime.board import load_board
from edge_runtime.bundle import read_bundle
from sample_models import build_sample

MARKS = ("<!-- bench:prune:start -->", "<!-- bench:prune:end -->")
GOAL_PRUNED_VS_FP32 = 1.4
GOAL_COMBINED_VS_INT8 = 1.3


def _halves(evaluation: Dataset) -> tuple[Dataset, Dataset]:
    index = np.arange(len(evaluation))
    return evaluation.subset(index % 2 == 0), evaluation.subset(index % 2 == 1)


def _convert(
    sample, workdir: Path, name: str, search_path: Path, target: str, **options
) -> tuple[onnx.ModelProto, ConvertResult]:
    bundle = workdir / f"{name}.bundle"
    result = convert(
        ConvertOptions(
            model=sample.onnx_path,
            output=bundle,
            target=target,
            card=sample.card_path,
            calibration=sample.calibration_path,
            evaluation=search_path,
            measure_latency=False,
            **options,
        ),
        Console(stderr=True, quiet=True),
    )
    return onnx.load_from_string(read_bundle(bundle).model_bytes()), result


def _ratios(pruner: ChannelPruner, counts: dict[str, tuple[int, int]] | float) -> dict[int, float]:
    """Per group name (before, after) channel counts, or one ratio for every group."""
    if isinstance(counts, float):
        return {group.id: counts for group in pruner.groups}
    return {group.id: 1 - counts[group.name][1] / counts[group.name][0] for group in pruner.groups}


def _variant(
    fused: onnx.ModelProto,
    calibration: Dataset,
    counts: dict[str, tuple[int, int]] | float,
    *,
    scoring: str,
    refit: bool,
) -> onnx.ModelProto:
    """The same channel groups and counts as edge-convert, with another score and with or without the refit."""
    pruner = ChannelPruner(fused, scoring=scoring, refit_layers=refit)
    moments = pruner.moments(calibration) if (refit or scoring == "activation") else {}
    keep = pruner.keep(_ratios(pruner, counts), pruner.scores(moments))
    return pruner.build(keep, moments if refit else None)


def run(budget: float, target: str, console: Console) -> tuple[list[dict], dict]:
    sample = build_sample("digits")
    original = onnx.load(str(sample.onnx_path))
    inputs = model_inputs(original)
    calibration = load_dataset(sample.calibration_path, inputs, what="calibration")
    evaluation = load_dataset(sample.eval_path, inputs, what="evaluation")
    search, unseen = _halves(evaluation)
    fused = fuse(original, load_board(target))
    with tempfile.TemporaryDirectory(prefix="bench-prune-") as folder:
        workdir = Path(folder)
        search_path = workdir / "search.npz"
        np.savez(search_path, x=next(iter(search.inputs.values())), y=search.labels)
        console.print("converting: int8 without pruning")
        int8, _ = _convert(sample, workdir, "int8", search_path, target, max_accuracy_drop=budget)
        console.print("converting: --prune auto --quantize none")
        pruned, pruned_result = _convert(
            sample, workdir, "pruned", search_path, target, max_accuracy_drop=budget, prune="auto", quantize="none"
        )
        console.print("converting: --prune auto (then int8)")
        combined, combined_result = _convert(
            sample, workdir, "combined", search_path, target, max_accuracy_drop=budget, prune="auto"
        )
    counts = {group["name"]: (group["before"], group["after"]) for group in pruned_result.report.pruning["groups"]}
    variants = {
        "fp32 (unpruned)": original,
        "int8 (unpruned, edge-convert)": int8,
        "naive: filter magnitude, no refit, auto's channel counts": _variant(
            fused, calibration, counts, scoring="magnitude", refit=False
        ),
        "pruned: --prune auto (fp32)": pruned,
        f"pruned + int8: --prune auto ({combined_result.manifest.model.precision})": combined,
        "naive: filter magnitude, no refit, ratio 0.5": _variant(
            fused, calibration, 0.5, scoring="magnitude", refit=False
        ),
        "pruned: ratio 0.5 (fp32)": _variant(fused, calibration, 0.5, scoring="activation", refit=True),
        "ablation: activation scores, no refit, auto's counts": _variant(
            fused, calibration, counts, scoring="activation", refit=False
        ),
        "ablation: filter magnitude + refit, auto's counts": _variant(
            fused, calibration, counts, scoring="magnitude", refit=True
        ),
    }
    console.print("measuring latency (interleaved)")
    latencies = measure_latencies(variants, evaluation.first(), threads=1, rounds=40, runs_per_round=25, budget_s=90)
    rows = []
    for label, model in variants.items():
        scores = {
            part: accuracy(run_dataset(make_session(model), data)["logits"], data.labels)
            for part, data in (("all", evaluation), ("search", search), ("unseen", unseen))
        }
        rows.append(
            {
                "variant": label,
                "flops": model_flops(model) or 0,
                "size": model.ByteSize(),
                "latency_ms": latencies[label].median_ms,
                **{f"accuracy_{part}": value for part, value in scores.items()},
            }
        )
    facts = {
        "groups": pruned_result.report.pruning["groups"],
        "combined_groups": combined_result.report.pruning["groups"],
        "calibration": len(calibration),
        "search": len(search),
        "unseen": len(unseen),
    }
    return rows, facts


def render(rows: list[dict], facts: dict, command: str, budget: float, target: str) -> str:
    fp32, int8 = rows[0], rows[1]
    lines = [
        f"Command: `{command}`  ",
        f"Date: {datetime.date.today().isoformat()}; machine: {_cpu_name()}, {platform.machine()}, "
        f"onnxruntime {ort.__version__}, Python {platform.python_version()}; target board file `{target}`. "
        f"Model: the digits residual CNN (scikit-learn digits, 32x32). Latency: batch 1, 1 thread, median of "
        f"interleaved runs. Accuracy budget: {budget * 100:.1f} pt. Calibration: {facts['calibration']} training "
        f"images; the 360 test images are split into a search half ({facts['search']}, given as --eval) and an "
        f"unseen half ({facts['unseen']}).",
        "",
        "| variant | MFLOPs | size | latency (ms) | vs fp32 | vs int8 | accuracy (all) | Δ pt | search half "
        "| unseen half |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['flops'] / 1e6:.1f} | {row['size'] / 1024:.0f} KiB "
            f"| {row['latency_ms']:.3f} | {fp32['latency_ms'] / row['latency_ms']:.2f}x "
            f"| {int8['latency_ms'] / row['latency_ms']:.2f}x | {row['accuracy_all'] * 100:.2f}% "
            f"| {(row['accuracy_all'] - fp32['accuracy_all']) * 100:+.2f} | {row['accuracy_search'] * 100:.2f}% "
            f"| {row['accuracy_unseen'] * 100:.2f}% |"
        )
    pruned, combined = rows[3], rows[4]
    lines += [
        "",
        "Channels kept by `--prune auto` (pruning alone; with int8 after it: "
        + ", ".join(f"{g['after']}" for g in facts["combined_groups"])
        + "): "
        + ", ".join(f"{g['name'].split('/')[-2]} {g['before']}->{g['after']}" for g in facts["groups"])
        + ".",
        "",
        f"Goals: pruning alone {fp32['latency_ms'] / pruned['latency_ms']:.2f}x lower latency than fp32 "
        f"(goal {GOAL_PRUNED_VS_FP32}x) at {(fp32['accuracy_all'] - pruned['accuracy_all']) * 100:.2f} pt "
        f"lost (budget {budget * 100:.1f}); pruning + int8 {int8['latency_ms'] / combined['latency_ms']:.2f}x lower "
        f"than the unpruned int8 model (goal {GOAL_COMBINED_VS_INT8}x); at the same channel counts the naive peer "
        f"keeps {rows[2]['accuracy_all'] * 100:.2f}% against {pruned['accuracy_all'] * 100:.2f}%.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.01, help="accuracy budget, fraction (default 0.01)")
    parser.add_argument("--target", default="x86_64")
    parser.add_argument("--write", type=Path, help="replace the pruning section of this markdown file")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    rows, facts = run(args.budget, args.target, console)
    command = "python benchmarks/prune.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(rows, facts, command.strip(), args.budget, args.target)
    print(text)
    if args.write:
        write_section(args.write, text, MARKS, "Pruning (`benchmarks/prune.py`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
