"""Benchmark: what decoding + NMS cost next to the detector's inference, on the real detectors and real photos.

    python benchmarks/detection.py [--write docs/benchmarks.md]

For NudeNet's YOLOv8n (320x320, 2100 boxes x 18 classes) in onnxruntime and MediaPipe's BlazeFace (128x128, 896
anchors) in LiteRT, one thread, batch 1, over the test photos (tests/support/detectors.py): the median time of
`session.run` and of `DetectionDecoder.decode` (threshold, decode, class-aware NMS, mapping back to the frame) on
the same outputs, and their ratio (the goal: decode + NMS at most 5% of inference). Also the same decode at a
score threshold of 0.01, where thousands of candidate boxes reach NMS.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.convert import _cpu_name, write_section  # noqa: E402
from converter.card_inference import resolve_card  # noqa: E402
from converter.image_data import image_files  # noqa: E402
from edge_runtime.card import ModelCard  # noqa: E402
from edge_runtime.decode import decode_image  # noqa: E402
from edge_runtime.detection import DetectionDecoder  # noqa: E402
from edge_runtime.window import Preprocessor  # noqa: E402
from tests.support.detectors import BLAZEFACE_CARD, write_photo_folders  # noqa: E402
from tests.support.third_party import model_path  # noqa: E402

REPEATS = 30


def median_ms(function, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def onnx_runner(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    feed_name = session.get_inputs()[0].name
    return lambda x: dict(zip(names, session.run(names, {feed_name: x}), strict=True))


def tflite_runner(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), num_threads=1)
    interpreter.allocate_tensors()
    feed, outputs = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()

    def run(x):
        interpreter.set_tensor(feed, x)
        interpreter.invoke()
        return {detail["name"]: interpreter.get_tensor(detail["index"]) for detail in outputs}

    return run


def measure(name: str, card: ModelCard, run, photos: list[Path]) -> str:
    preprocess = Preprocessor(card)
    low = card.model_copy(update={"output": card.output.model_copy(update={"score_threshold": 0.01})})
    decoder, decoder_low = DetectionDecoder(card), DetectionDecoder(low)
    inference, decode, crowded, boxes = [], [], [], 0
    for path in photos:
        frame = decode_image(path.read_bytes(), card.input, 2**28)
        x, transforms = preprocess.images([frame])
        outputs = run(x)
        inference.append(median_ms(lambda x=x: run(x)))
        decode.append(median_ms(lambda outputs=outputs, transforms=transforms: decoder.decode(outputs, transforms)))
        crowded.append(median_ms(lambda outputs=outputs, transforms=transforms: decoder_low.decode(outputs,
                                                                                                   transforms)))
        boxes += len(decoder.decode(outputs, transforms)[0])
    run_ms, decode_ms, crowded_ms = (statistics.median(values) for values in (inference, decode, crowded))
    return (f"| {name} | {len(photos)} | {boxes} | {run_ms:.2f} ms | {decode_ms:.3f} ms | "
            f"{100 * decode_ms / run_ms:.1f}% | {crowded_ms:.3f} ms ({100 * crowded_ms / run_ms:.1f}%) |")


MARK = ("<!-- bench:detection:start -->", "<!-- bench:detection:end -->")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="replace the detection section of this markdown file")
    args = parser.parse_args(argv)
    lines = [
        f"Command: `python benchmarks/detection.py{' --write ' + str(args.write) if args.write else ''}`  ",
        f"Date: {datetime.date.today().isoformat()}; machine: {_cpu_name()}, {platform.machine()}; 1 thread, batch 1, "
        f"medians over the photos of each photo's median of {REPEATS} runs.",
        "",
        "| model | photos | boxes | inference (median) | decode + NMS (median) | share | at threshold 0.01 |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        _, evaluation = write_photo_folders(Path(folder))
        photos = image_files(evaluation)
        nudenet = model_path("nudenet-yolov8n")
        lines.append(measure("NudeNet YOLOv8n 320 (onnxruntime)", resolve_card(None, nudenet, "onnx").card,
                             onnx_runner(nudenet), photos))
        card_path = Path(folder) / "blazeface.yaml"
        card_path.write_text(BLAZEFACE_CARD)
        blazeface = model_path("blazeface-short-range")
        lines.append(measure("BlazeFace short range 128 (LiteRT)", resolve_card(card_path, blazeface, "tflite").card,
                             tflite_runner(blazeface), photos))
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, text, MARK, "Detection decode + NMS (`benchmarks/detection.py`)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
