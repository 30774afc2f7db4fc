"""The one training loop both sample models share: small, CPU only and repeatable.

Determinism matters more than speed here: the cache key assumes that the same code and torch version give
the same model, and the tests' accuracy floors assume a build never lands on an unlucky seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run; the defaults suit both samples' small data sets."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 2


def train_classifier(model: nn.Module, x: np.ndarray, y: np.ndarray, config: TrainConfig) -> nn.Module:
    """Fit `model` to (x, y) with Adam and cross-entropy; return it in eval mode.

    Shuffling uses its own seeded generator and the learning rate follows a cosine schedule to zero, so
    the last epoch does not leave the weights mid-jump.
    """
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    targets = torch.from_numpy(np.asarray(y, dtype=np.int64))
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = (len(inputs) + config.batch_size - 1) // config.batch_size
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), config.batch_size):
            batch = order[start : start + config.batch_size]
            if len(batch) < 2:  # BatchNorm cannot train on a single sample
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of an eval-mode model on (x, y)."""
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    predictions = torch.cat(
        [model(inputs[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
    )
    return float((predictions.numpy() == np.asarray(y)).mean())
