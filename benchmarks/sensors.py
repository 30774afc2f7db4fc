"""Benchmark: the camera and microphone paths against the loops a person would write by hand.

    python benchmarks/sensors.py [--write docs/benchmarks.md] [--frames 150]

Camera: an H.264 video (640x480, real photos from scikit-image, made here by PyAV) through NudeNet's YOLOv8n
(320x320, float bundle, onnxruntime, 1 thread), every frame run (`realtime: false`):
- the daemon's path in process: the `camera` source (PyAV decode in its thread) -> the model worker (letterbox,
  batching, inference, detection decoding + NMS, JSON predictions to a no-op publisher);
- the bare peer: PyAV decode, a Pillow letterbox, `session.run` on a session opened from the bundle's own model file
  (extracted once, the same bytes; the backend's session options: 1 thread, every graph optimisation), in one loop,
  no decoding of the boxes;
each in its own process that imports only what its path needs (frames/s, peak resident memory (VmHWM), and the
resident memory once its imports are done (VmRSS), both from /proc/self/status). Then the per-frame costs on the same
frames: video decode, preprocessing (`Preprocessor.images`), inference, detection decoding + NMS.
Goals: the camera path at least 0.9x the bare loop's frames/s, at most +30 MB; decode + NMS at most 5% of inference.

Microphone: real speech (pyannote's sample, 30 s at 16 kHz) through Silero VAD (recurrent state), the `audio`
source from a WAV file into the model worker, against a bare `session.run` loop with the state carried: the real-time
factor (processing time / audio duration) of each.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MARK = ("<!-- bench:sensors:start -->", "<!-- bench:sensors:end -->")
WORK = Path(tempfile.gettempdir()) / "edge-bench-sensors"


def prepare(frames: int) -> dict:
    """The video, the NudeNet bundle and the Silero bundle (made once per machine, under WORK)."""
    from converter.cli import main as convert
    from tests.support.detectors import write_photo_folders
    from tests.support.speech import write_folders, write_silero_card
    from tests.support.third_party import model_path
    from tests.support.video import photo_frames, write_video

    WORK.mkdir(parents=True, exist_ok=True)
    photos = photo_frames()
    video = write_video(WORK / f"photos-{frames}.mp4", photos, fps=30, repeat=max(1, frames // len(photos)))
    nudenet = WORK / "nudenet.bundle"
    if not nudenet.exists():
        _, evaluation = write_photo_folders(WORK / "photos")
        assert convert([str(model_path("nudenet-yolov8n")), "-o", str(nudenet), "--target", "x86_64", "--eval",
                        str(evaluation), "--quantize", "none", "--no-latency"]) == 0
    silero = WORK / "silero.bundle"
    if not silero.exists():
        calibration, evaluation = write_folders(WORK / "speech")
        card = write_silero_card(WORK / "silero.card.yaml")
        assert convert([str(model_path("silero-vad")), "-o", str(silero), "--target", "x86_64", "--card",
                        str(card), "--calibration", str(calibration), "--eval", str(evaluation), "--quantize",
                        "none", "--no-latency"]) == 0
    nudenet_model = WORK / "nudenet.model.onnx"  # the bundle's model, for the bare loop: the very same bytes
    nudenet_model.write_bytes(_bundle_model(str(nudenet)))
    return {"video": str(video), "nudenet": str(nudenet), "silero": str(silero),
            "nudenet_model": str(nudenet_model), "speech": str(WORK / "speech" / "eval" / "sample.wav")}


def _resident_mb(field: str = "VmRSS") -> float:
    """VmRSS (resident now) or VmHWM (the peak), in MB, of this process's own memory.

    Not getrusage's ru_maxrss: Linux carries the peak of the memory a process replaced at exec into it, and a
    child spawned by subprocess (vfork, then exec) starts with its parent's peak, here the harness that made the
    bundles: the figure then said how big the parent was, not the path."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


def _session(model: str):
    """A session as the onnxruntime backend makes it (1 thread, ORT_ENABLE_ALL), from the model file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _worker(bundle: str, source: dict):
    """A model worker on the bundle (1 thread), publishing to nothing, as the daemon wires it."""
    from edge_runtime.board import load_board
    from edge_runtime.config import ModelConfig
    from edge_runtime.error_reporter import ErrorReporter
    from edge_runtime.model_loader import load_bundle_model
    from edge_runtime.model_worker import ModelWorker
    from edge_runtime.sources import create_source  # noqa: F401  (imported here: counted with the imports)

    imported = _resident_mb()
    config = ModelConfig.model_validate({"bundle": bundle, "source": source, "max_batch": 1,
                                         "backends": [{"type": "onnxruntime", "threads": 1}]})
    model = load_bundle_model(Path(bundle), name=None, backends=config.backends, board=load_board("x86_64"),
                              trusted_keys=None, require_signature=False)
    published = [0]

    def publish(name: str, payloads: list[bytes]) -> None:
        published[0] += len(payloads)

    worker = ModelWorker(model, config, publish=publish, reserve_seqs=lambda name, count: range(count),
                         errors=ErrorReporter(lambda payload: None, 100, "bench"))
    return worker, published, imported


def _run_source(worker) -> float:
    """Seconds from start until the source finished and the worker ran everything."""
    from edge_runtime.sources import create_source
    from edge_runtime.sources.base import SourceContext

    worker.start()
    source = create_source(worker.config.source, SourceContext(card=worker.card, sink=worker))
    started = time.perf_counter()
    source.start()
    while not (source.finished and worker.idle and worker.queue_depth == 0):
        time.sleep(0.002)
    elapsed = time.perf_counter() - started
    source.stop()
    worker.stop(drain=True)
    return elapsed


def variant_camera(paths: dict) -> dict:
    source = {"type": "camera", "url": paths["video"], "realtime": False}
    import av  # noqa: F401  (what the camera path imports on its way: counted with the imports, as in the bare loop)
    import onnxruntime  # noqa: F401
    import PIL.Image  # noqa: F401

    worker, published, imported = _worker(paths["nudenet"], source)
    elapsed = _run_source(worker)
    return {"frames": published[0], "seconds": elapsed, "imports_mb": imported}


def variant_bare(paths: dict) -> dict:
    import av
    import numpy as np
    import onnxruntime  # noqa: F401  (imported here: counted with the imports)
    import PIL.Image  # noqa: F401

    from tests.support.detectors import letterboxed

    imported = _resident_mb()
    session = _session(paths["nudenet_model"])
    name = session.get_inputs()[0].name
    frames = 0
    started = time.perf_counter()
    with av.open(paths["video"]) as container:
        for frame in container.decode(video=0):
            canvas = letterboxed(frame.to_ndarray(format="rgb24"), 320, 114.0)[0]
            session.run(None, {name: np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]) / np.float32(255)})
            frames += 1
    return {"frames": frames, "seconds": time.perf_counter() - started, "imports_mb": imported}


def variant_audio(paths: dict) -> dict:
    source = {"type": "audio", "path": paths["speech"], "realtime": False}
    worker, published, _ = _worker(paths["silero"], source)
    elapsed = _run_source(worker)
    return {"windows": published[0], "seconds": elapsed}


def variant_audio_bare(paths: dict) -> dict:
    import numpy as np
    import onnxruntime as ort

    from edge_runtime.audio.wav import read_wav

    samples = read_wav(paths["speech"]).samples
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(_bundle_model(paths["silero"]), options, providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    windows = 0
    started = time.perf_counter()
    for end in range(576, len(samples) + 1, 512):
        _, state = session.run(["output", "stateN"], {"input": samples[None, end - 576:end], "state": state})
        windows += 1
    return {"windows": windows, "seconds": time.perf_counter() - started}


def _bundle_model(bundle: str) -> bytes:
    from edge_runtime.bundle import read_bundle

    return read_bundle(Path(bundle)).model_bytes()


VARIANTS = {"camera": variant_camera, "bare": variant_bare, "audio": variant_audio, "audio-bare": variant_audio_bare}


def in_subprocess(variant: str, paths: dict) -> dict:
    """One variant in a fresh interpreter: its speed, and its peak resident memory."""
    done = subprocess.run([sys.executable, __file__, "--variant", variant, "--paths", json.dumps(paths)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def frame_costs(paths: dict) -> dict[str, float]:
    """Median ms per frame of each stage, on the same frames."""
    import av

    from edge_runtime.bundle import read_bundle
    from edge_runtime.card import ModelCard
    from edge_runtime.detection import DetectionDecoder
    from edge_runtime.stream import ImageFrame
    from edge_runtime.window import Preprocessor

    card = ModelCard.model_validate(read_bundle(Path(paths["nudenet"])).manifest.card)
    preprocess, decoder = Preprocessor(card), DetectionDecoder(card)
    session = _session(paths["nudenet_model"])
    names = [output.name for output in session.get_outputs()]
    times: dict[str, list[float]] = {"video decode": [], "preprocessing": [], "inference": [],
                                     "detection decoding + NMS": []}
    with av.open(paths["video"]) as container:
        stream = container.streams.video[0]
        iterator = container.decode(stream)
        while True:
            start = time.perf_counter()
            frame = next(iterator, None)
            if frame is None:
                break
            pixels = frame.to_ndarray(format="rgb24")
            times["video decode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            inputs, transforms = preprocess.images([ImageFrame(0.0, pixels)])
            times["preprocessing"].append(time.perf_counter() - start)
            start = time.perf_counter()
            outputs = dict(zip(names, session.run(names, {session.get_inputs()[0].name: inputs}), strict=True))
            times["inference"].append(time.perf_counter() - start)
            start = time.perf_counter()
            decoder.decode(outputs, transforms)
            times["detection decoding + NMS"].append(time.perf_counter() - start)
    return {stage: statistics.median(values) * 1e3 for stage, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:  # a child process: one measurement, printed as JSON
        result = VARIANTS[args.variant](json.loads(args.paths))
        result["max_rss_mb"] = _resident_mb("VmHWM")
        print(json.dumps(result))
        return 0
    from benchmarks.convert import _cpu_name, write_section  # the parent only: the children import what they run

    paths = prepare(args.frames)
    runs = {name: [] for name in ("camera", "bare")}
    for _ in range(3):  # interleaved: the machine's load drifts alike for both
        for name in runs:
            runs[name].append(in_subprocess(name, paths))
    fps = {name: statistics.median(r["frames"] / r["seconds"] for r in results) for name, results in runs.items()}
    rss = {name: statistics.median(r["max_rss_mb"] for r in results) for name, results in runs.items()}
    imports = {name: statistics.median(r["imports_mb"] for r in results) for name, results in runs.items()}
    frames = runs["camera"][0]["frames"]
    assert frames == runs["bare"][0]["frames"], "both paths must run every frame"
    costs = frame_costs(paths)
    audio = [in_subprocess("audio", paths) for _ in range(3)]
    audio_bare = [in_subprocess("audio-bare", paths) for _ in range(3)]
    duration = 30.0
    rtf = statistics.median(r["seconds"] for r in audio) / duration
    rtf_bare = statistics.median(r["seconds"] for r in audio_bare) / duration
    ratio = fps["camera"] / fps["bare"]
    box_share = costs["detection decoding + NMS"] / costs["inference"]
    lines = [
        f"Command: `python benchmarks/sensors.py {' '.join(sys.argv[1:] if argv is None else argv)}`".strip() + "  ",
        f"Date: {datetime.date.today().isoformat()}; machine: {_cpu_name()}, {platform.machine()}; 1 inference "
        f"thread; medians of 3 interleaved runs, each in its own process.",
        "",
        f"Camera: {frames} frames of H.264 640x480 (real photos) through NudeNet YOLOv8n 320x320 (float), every "
        "frame run.",
        "",
        "| path | frames/s | peak RSS | of which after imports |",
        "|---|---|---|---|",
        f"| bare loop: PyAV decode + Pillow letterbox + `session.run` (the bundle's model file) | {fps['bare']:.1f} | "
        f"{rss['bare']:.0f} MB | {imports['bare']:.0f} MB |",
        f"| camera source -> model worker (bundle checks, letterbox, inference, drift statistics, boxes + NMS, JSON) "
        f"| {fps['camera']:.1f} | {rss['camera']:.0f} MB | {imports['camera']:.0f} MB |",
        "",
        f"Camera path / bare loop: **{ratio:.2f}x** frames/s (goal >= 0.9x: {'met' if ratio >= 0.9 else 'missed'}); "
        f"memory **{rss['camera'] - rss['bare']:+.0f} MB** (goal <= +30 MB: "
        f"{'met' if rss['camera'] - rss['bare'] <= 30 else 'missed'}). The camera source decodes in its own thread "
        "while the model runs (and lets FFmpeg use frame threads), so decoding overlaps inference; the bare loop "
        "does one after the other. Memory: both processes import only what their path runs (the bare one numpy, "
        "onnxruntime, PyAV and Pillow; the camera one edge_runtime's worker, loader and sources on top: pydantic "
        f"models, cryptography for signatures, YAML), {imports['camera'] - imports['bare']:+.0f} MB of the "
        "difference.",
        "",
        "| per frame (median) | ms | share of inference |",
        "|---|---|---|",
        *(f"| {stage} | {ms:.2f} | {ms / costs['inference']:.1%} |" for stage, ms in costs.items()),
        "",
        f"Detection decoding + NMS: **{box_share:.1%}** of inference (goal <= 5%: "
        f"{'met' if box_share <= 0.05 else 'missed'}). Video decoding is listed apart: the bare loop pays it too.",
        "",
        f"Microphone: 30 s of speech through Silero VAD (576-sample windows every 512, state carried): real-time "
        f"factor **{rtf:.3f}** through the audio source and the model worker, {rtf_bare:.3f} for a bare "
        f"`session.run` loop ({rtf / rtf_bare:.2f}x its time).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, text, MARK, "Sensors (`benchmarks/sensors.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
