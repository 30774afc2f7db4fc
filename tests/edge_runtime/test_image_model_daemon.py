"""An image model end to end: PNG files replayed from a folder, decoded, resized, scaled per the card."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from converter.cli import main as convert
from tests.support.broker import Collector
from tests.support.daemon import DaemonProcess, messages, wait_until, write_config


@pytest.fixture(scope="module")
def digits_bundle(digits_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "digits.bundle"
    assert convert([str(digits_sample.onnx_path), "-o", str(out), "--target", "x86_64", "--card",
                    str(digits_sample.card_path), "--calibration", str(digits_sample.calibration_path), "--eval",
                    str(digits_sample.eval_path), "--no-latency"]) == 0
    return out


def test_folder_of_digit_images(tmp_path, broker, digits_sample, digits_bundle):
    evaluation = np.load(digits_sample.eval_path)
    images = tmp_path / "images"
    images.mkdir()
    count = 12
    for index in range(count):
        # the card scales raw pixels by 1/16: sklearn's digits are 0..16, stored here as 8-bit PNG at 16x16
        pixels = np.clip(np.round(evaluation["x"][index, 0] * 16), 0, 255).astype(np.uint8)
        Image.fromarray(pixels[::2, ::2], mode="L").save(images / f"{index:03d}.png")
    config = write_config(tmp_path / "daemon.yaml", broker_url=broker.url, bundle=digits_bundle,
                          source={"type": "folder", "path": str(images), "interval_s": 0})
    with Collector(broker.port, "edge/dev-1/predictions/#") as collector:
        daemon = DaemonProcess(config, "--exit-when-done")
        assert daemon.wait(60) == 0, daemon.output()
        assert wait_until(lambda: len(messages(collector, "/predictions/digits")) == count, 10)
    labels = [int(p["label"]) for p in messages(collector, "/predictions/digits")]
    truth = evaluation["y"][:count].tolist()
    assert sum(a == b for a, b in zip(labels, truth, strict=True)) >= count - 2  # downsampled 2x and resized back
