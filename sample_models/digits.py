"""Sample "digits": a small ResNet on scikit-learn's handwritten digits, upsampled to 32x32.

It stands for the image models the converter meets: a stem, residual stages with BatchNorm and an ``Add``
per block, strided stages with 1x1 projection shortcuts, global average pooling. Its widths are chosen so
that one fp32 inference takes a few milliseconds on one core, which makes int8 convolutions, not
per-node overhead, decide the converter's latency benchmark. Its convolutions have no bias (the usual
torch style before BatchNorm), unlike the activity sample's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import TrainedSample
from .datasets import DIGITS_MAX_PIXEL, DIGITS_SIZE, load_digits_images
from .training import TrainConfig, accuracy, train_classifier

#: Bump when anything below changes the trained model or its files; it is part of the cache key.
SAMPLE_VERSION = 2
NAME = "digits"
WIDTHS = (64, 128, 256)
BLOCKS_PER_STAGE = 1
TRAIN_CONFIG = TrainConfig(epochs=6, batch_size=32, lr=3e-3, weight_decay=1e-4, seed=0)


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    ]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 Conv+BN, identity or 1x1-projection shortcut, Add, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(c_in, c_out, 3, stride), nn.ReLU(), *conv_bn(c_out, c_out, 3))
        needs_projection = stride != 1 or c_in != c_out
        self.shortcut = nn.Sequential(*conv_bn(c_in, c_out, 1, stride)) if needs_projection else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class DigitsResNet(nn.Module):
    """Stem 3x3 conv, one stage per width (the first at full resolution, later ones stride 2), GAP, Linear."""

    def __init__(self, classes: int = 10, widths: tuple[int, ...] = WIDTHS, blocks: int = BLOCKS_PER_STAGE):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, widths[0], 3), nn.ReLU())
        stages: list[nn.Module] = []
        c_in = widths[0]
        for index, width in enumerate(widths):
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                stages.append(BasicBlock(c_in, width, stride))
                c_in = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)  # exports as GlobalAveragePool
        self.head = nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def train() -> TrainedSample:
    """Train on the stratified train split; calibrate on its first images, evaluate on the test split."""
    data = load_digits_images()
    # Model input = raw pixels (0..16) times the card's scale; no per-channel normalisation.
    scale = 1.0 / DIGITS_MAX_PIXEL
    x_train = (data.x_train * scale).astype(np.float32)[:, None]
    x_test = (data.x_test * scale).astype(np.float32)[:, None]
    torch.manual_seed(TRAIN_CONFIG.seed)
    model = train_classifier(DigitsResNet(len(data.label_names)), x_train, data.y_train, TRAIN_CONFIG)
    card = {
        "name": NAME,
        "version": str(SAMPLE_VERSION),
        "description": (
            "Small ResNet on scikit-learn's 8x8 handwritten digits upsampled to 32x32 (bilinear). "
            f"Test accuracy (torch, float32): {accuracy(model, x_test, data.y_test):.3f}."
        ),
        "labels": list(data.label_names),
        "input": {
            "kind": "image",
            "name": "x",
            "height": DIGITS_SIZE,
            "width": DIGITS_SIZE,
            "channels": 1,
            "channel_order": "gray",
            "layout": "nchw",
            "scale": scale,
        },
        "output": {"kind": "classification", "name": "logits", "scores": "logits"},
    }
    return TrainedSample(model, card, x_train, data.y_train, x_test, data.y_test)
