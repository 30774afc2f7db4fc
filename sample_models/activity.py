"""Sample "activity": a 1-D CNN that tells standing, walking, running and badminton from a smartwatch IMU.

This is the model the demo converts, so it looks like a typical sensor model: normalised raw channels in,
Conv1d + BatchNorm1d + ReLU blocks, global average pooling, a linear head. Its convolutions keep their
bias (Keras style) while the digits sample's do not, so the fuse pass sees both kinds of Conv.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from . import TrainedSample
from .datasets import BASIC_MOTIONS_CHANNELS, BASIC_MOTIONS_RATE_HZ, eval_and_held_out, load_basic_motions
from .training import TrainConfig, accuracy, train_classifier

#: Bump when anything below changes the trained model or its files; it is part of the cache key.
SAMPLE_VERSION = 4
NAME = "activity"
WINDOW = 50  # 5 s at 10 Hz
HOP = 10  # one inference per second on the device; also 6 windows per 100-sample recording
WIDTHS = (32, 64, 64)
KERNEL = 5
TRAIN_CONFIG = TrainConfig(epochs=40, batch_size=32, lr=3e-3, weight_decay=1e-4, seed=0)


class ActivityNet(nn.Module):
    """Conv1d/BatchNorm1d/ReLU stack over [batch, channels, window], averaged over time, then classified."""

    def __init__(self, channels: int, classes: int, widths: tuple[int, ...] = WIDTHS, kernel: int = KERNEL):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip((channels, *widths[:-1]), widths, strict=True):
            layers += [nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm1d(c_out), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)  # exports as GlobalAveragePool, which int8 kernels cover
        self.head = nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def sliding_windows(recordings: np.ndarray, labels: np.ndarray, window: int = WINDOW, hop: int = HOP
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Cut [N, C, T] recordings into [N * k, C, window] windows every `hop` samples, recording by recording."""
    starts = range(0, recordings.shape[2] - window + 1, hop)
    windows = np.stack([recordings[:, :, s : s + window] for s in starts], axis=1)  # [N, k, C, window]
    per_recording = windows.shape[1]
    return windows.reshape(-1, *windows.shape[2:]), np.repeat(labels, per_recording)


def class_stream_windows(recordings: np.ndarray, labels: np.ndarray, window: int, hop: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Each class's recordings end to end (data set order) as one stream, cut every `hop` samples: what a device
    sees when one activity lasts longer than a recording, and the only way to get windows longer than one."""
    xs, ys = [], []
    for cls in np.unique(labels):
        stream = np.concatenate(list(recordings[labels == cls]), axis=1)  # [C, total]
        starts = range(0, stream.shape[1] - window + 1, hop)
        xs.append(np.stack([stream[:, s : s + window] for s in starts]))
        ys.append(np.full(len(starts), cls, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


Windowing = Callable[[np.ndarray, np.ndarray, int, int], tuple[np.ndarray, np.ndarray]]


def train(name: str = NAME, widths: tuple[int, ...] = WIDTHS, kernel: int = KERNEL, *, window: int = WINDOW,
          hop: int = HOP, cut: Windowing = sliding_windows) -> TrainedSample:
    """Train on the BasicMotions train recordings and calibrate on them; evaluate on the eval half of the test
    recordings (the other half is held out from everything: `sample_models.recording`)."""
    data = load_basic_motions()
    # Statistics over every sample of every training recording, per channel: what the device will apply.
    mean = data.x_train.astype(np.float64).mean(axis=(0, 2))
    std = data.x_train.astype(np.float64).std(axis=(0, 2))
    mean_list, std_list = [float(v) for v in mean], [float(v) for v in std]

    def normalize(x: np.ndarray) -> np.ndarray:
        m = np.asarray(mean_list, dtype=np.float32)[None, :, None]
        s = np.asarray(std_list, dtype=np.float32)[None, :, None]
        return ((x - m) / s).astype(np.float32)

    evaluated, _ = eval_and_held_out(data.y_test)
    x_train, y_train = cut(normalize(data.x_train), data.y_train, window, hop)
    x_test, y_test = cut(normalize(data.x_test[evaluated]), data.y_test[evaluated], window, hop)
    torch.manual_seed(TRAIN_CONFIG.seed)
    model = train_classifier(
        ActivityNet(len(BASIC_MOTIONS_CHANNELS), len(data.label_names), widths, kernel),
        x_train,
        y_train,
        TRAIN_CONFIG,
    )
    seconds = window / BASIC_MOTIONS_RATE_HZ
    card = {
        "name": name,
        "version": str(SAMPLE_VERSION),
        "description": (
            f"1-D CNN ({'/'.join(map(str, widths))} channels, kernel {kernel}) on BasicMotions (sktime): "
            f"smartwatch accelerometer + gyroscope at 10 Hz, {seconds:g} s windows. "
            f"Test accuracy (torch, float32): {accuracy(model, x_test, y_test):.3f}."
        ),
        "labels": list(data.label_names),
        "input": {
            "kind": "timeseries",
            "name": "x",
            "window": window,
            "hop": hop,
            "rate_hz": BASIC_MOTIONS_RATE_HZ,
            "channels": len(BASIC_MOTIONS_CHANNELS),
            "layout": "channels_first",
            "channel_names": list(BASIC_MOTIONS_CHANNELS),
            "normalize": {"mean": mean_list, "std": std_list},
        },
        "output": {"kind": "classification", "name": "logits", "scores": "logits"},
    }
    return TrainedSample(model, card, x_train, y_train, x_test, y_test)
