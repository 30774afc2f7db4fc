"""Benchmark: fp32 vs onnxruntime's quantize_static with default arguments vs edge-convert, in one run.

    python benchmarks/convert.py [--target x86_64] [--write docs/benchmarks.md]

For each sample model (trained here on package-shipped data): model size, batch-1 latency at 1 thread (median of
interleaved runs, so all of them share the machine's state), accuracy on the held-out split, and the
QuantizeLinear/DequantizeLinear nodes left in onnxruntime's optimized graph. The peer is what a user would try by
hand: `quantize_static(model, out, reader)` with every argument left at its default. edge-convert runs twice: with
the int8 region fixed to the board's operator list (what it did before the region was measured) and as it is.

The rk3588 rows convert each model for the RK3588 with its NPU model (`make toolchain-rknn`): the int8 ONNX the
board runs on its CPU and the .rknn, both judged against the original on the held-out split, the .rknn in
rknn-toolkit2's simulator; and the toolkit's performance estimate, if it gives one without a board.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import quantize_static
from rich.console import Console

from converter import int8_region
from converter.data import load_dataset
from converter.evaluate import accuracy
from converter.int8_region import boundaries
from converter.measure import measure_latencies
from converter.options import ConvertOptions
from converter.passes.check import model_inputs
from converter.passes.quantize import DatasetReader
from converter.pipeline import convert
from converter.runner import make_session, run_dataset
from edge_runtime.bundle import read_bundle
from sample_models import build_sample

MARK_START, MARK_END = "<!-- bench:convert:start -->", "<!-- bench:convert:end -->"


def _peer_default(model_path: Path, calibration, workdir: Path) -> onnx.ModelProto:
    """onnxruntime's quantize_static as a user would call it: QDQ, signed int8 activations, per-tensor, MinMax."""
    target = workdir / "peer.onnx"
    quantize_static(str(model_path), str(target), DatasetReader(calibration, 1))
    return onnx.load(str(target))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def bench_sample(name: str, target: str, console: Console) -> list[dict]:
    sample = build_sample(name)
    original = onnx.load(str(sample.onnx_path))
    inputs = model_inputs(original)
    calibration = load_dataset(sample.calibration_path, inputs, what="calibration")
    evaluation = load_dataset(sample.eval_path, inputs, what="evaluation")
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as folder:
        workdir = Path(folder)
        peer = _peer_default(sample.onnx_path, calibration, workdir)
        bundle_path = workdir / f"{name}.bundle"
        options = ConvertOptions(
            model=sample.onnx_path,
            output=bundle_path,
            target=target,
            card=sample.card_path,
            calibration=sample.calibration_path,
            evaluation=sample.eval_path,
        )
        with mock.patch.object(int8_region, "extra_types", lambda model, base: []):  # the board's list only
            convert(replace(options, output=workdir / "board-list.bundle"), Console(stderr=True, quiet=True))
        board_list = onnx.load_from_string(read_bundle(workdir / "board-list.bundle").model_bytes())
        result = convert(options, Console(stderr=True, quiet=True))
        converted = onnx.load_from_string(read_bundle(bundle_path).model_bytes())
    models = {
        "fp32": original,
        "quantize_static defaults": peer,
        "edge-convert, board's operator list": board_list,
        "edge-convert": converted,
    }
    latencies = measure_latencies(models, evaluation.first(), threads=1, rounds=40, runs_per_round=25, budget_s=60)
    rows = []
    for label, model in models.items():
        outputs = run_dataset(make_session(model), evaluation)
        scores = next(iter(outputs.values()))
        rows.append(
            {
                "model": name,
                "variant": label,
                "size": model.ByteSize(),
                "latency_ms": latencies[label].median_ms,
                "accuracy": accuracy(scores, evaluation.labels),
                "precision": result.manifest.model.precision if label.startswith("edge-convert") else None,
                "crossings": sum(boundaries(model).values()) if label != "fp32" else 0,
                "notes": "; ".join(result.report.notes + [_region(result.report.int8_region)])
                if label == "edge-convert"
                else "",
            }
        )
    console.print(f"[{name}] done", highlight=False)
    return rows


def bench_rk3588(name: str) -> dict:
    """Fidelity of the rk3588 bundle's CPU model and of its .rknn in the simulator, from the conversion report."""
    sample = build_sample(name)
    with tempfile.TemporaryDirectory(prefix="bench-rk3588-") as folder:
        options = ConvertOptions(model=sample.onnx_path, output=Path(folder) / f"{name}.bundle", target="rk3588",
                                 card=sample.card_path, calibration=sample.calibration_path,
                                 evaluation=sample.eval_path, measure_latency=False)
        report = convert(options, Console(stderr=True, quiet=True)).report
    stages = {row.stage: row for row in report.stages}
    npu = report.npu
    rknn = next((row for stage, row in stages.items() if stage.startswith("rknn")), None)
    return {"model": name, "cpu": stages[report.final_stage], "original": report.stages[0], "rknn": rknn,
            "status": npu.get("status", "no NPU section"), "reason": npu.get("reason", ""),
            "performance": npu.get("performance", "-"), "toolkit": npu.get("toolkit", "-")}


def render_rk3588(rows: list[dict]) -> str:
    lines = [
        "",
        "RK3588 (`--target rk3588`): the CPU model the board falls back to, and the .rknn run in rknn-toolkit2's "
        "simulator on the same held-out samples (simulator outputs, not board timings: no latency here).",
        "",
        "| model | stage | size | accuracy | Δ accuracy (pt) | top-1 agreement | cosine | .rknn |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        original = row["original"]
        rknn_label = row["rknn"].stage if row["rknn"] else "rknn"
        for label, stage in (("int8 ONNX (CPU)", row["cpu"]), (rknn_label, row["rknn"])):
            if stage is None:
                lines.append(f"| {row['model']} | {label} | - | - | - | - | - | {row['status']}: {row['reason']} |")
                continue
            verdict = row["status"] if label != "int8 ONNX (CPU)" else ""
            lines.append(
                f"| {row['model']} | {label} | {stage.size_bytes / 1024:.1f} KiB | {stage.accuracy * 100:.2f}% "
                f"| {(stage.accuracy - original.accuracy) * 100:+.2f} | {stage.agreement * 100:.2f}% "
                f"| {stage.cosine_mean:.5f} | {verdict} |"
            )
    toolkits = sorted({row["toolkit"] for row in rows})
    performance = sorted({row["performance"] for row in rows})
    lines += ["", f"Toolkit: {', '.join(toolkits)}. Performance estimate: {'; '.join(performance)}"]
    return "\n".join(lines)


def _region(region: dict) -> str:
    if not region:
        return ""
    return f"int8 region {', '.join(region['op_types'])} ({region['reason']})"


def render(rows: list[dict], command: str, target: str) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Date: {datetime.date.today().isoformat()}; machine: {_cpu_name()}, {platform.machine()}, "
        f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, Python {platform.python_version()}; "
        f"target board file: `{target}`. Latency: batch 1, 1 thread, median of interleaved runs.",
        "",
        "| model | variant | size | latency (ms) | speed-up vs fp32 | vs quantize_static defaults | size vs fp32 "
        "| accuracy | Δ accuracy (pt) | Q/DQ nodes left |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_model: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], {})[row["variant"]] = row
    for model, variants in by_model.items():
        fp32, peer = variants["fp32"], variants["quantize_static defaults"]
        for label, row in variants.items():
            lines.append(
                f"| {model} | {label}{' (' + row['precision'] + ')' if row['precision'] else ''} "
                f"| {row['size'] / 1024:.1f} KiB | {row['latency_ms']:.3f} "
                f"| {fp32['latency_ms'] / row['latency_ms']:.2f}x | {peer['latency_ms'] / row['latency_ms']:.2f}x "
                f"| {row['size'] / fp32['size']:.2f}x | {row['accuracy'] * 100:.2f}% "
                f"| {(row['accuracy'] - fp32['accuracy']) * 100:+.2f} | {row['crossings']} |"
            )
    notes = [f"- {row['model']}: {row['notes']}" for row in rows if row["notes"]]
    return "\n".join(lines + ([""] + notes if notes else []))


def write_section(
    path: Path,
    text: str,
    marks: tuple[str, str] = (MARK_START, MARK_END),
    title: str = "Converter (`benchmarks/convert.py`)",
) -> None:
    """Replace the text between a benchmark's markers in a markdown file (or append a new section)."""
    start, end = marks
    body = path.read_text() if path.exists() else "# Benchmarks\n"
    section = f"{start}\n{text}\n{end}"
    if start in body:
        body = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: section, body, flags=re.S)
    else:
        body = body.rstrip() + f"\n\n## {title}\n\n" + section + "\n"
    path.write_text(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="x86_64")
    parser.add_argument("--models", default="digits,activity")
    parser.add_argument("--write", type=Path, help="replace the converter section of this markdown file")
    parser.add_argument("--no-rk3588", action="store_true", help="leave out the RK3588 NPU rows")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    rows = []
    for name in args.models.split(","):
        rows += bench_sample(name.strip(), args.target, console)
    command = "python benchmarks/convert.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(rows, command.strip(), args.target)
    if not args.no_rk3588:
        text += "\n" + render_rk3588([bench_rk3588(name.strip()) for name in args.models.split(",")])
    print(text)
    if args.write:
        write_section(args.write, text)
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
