"""Sample "activity_wide": the activity 1-D CNN made wide enough to take about 1 ms per window on one core.

The daemon benchmark needs a sensor model whose inference is about 1 ms, so that what the daemon adds (MQTT,
windowing, batching, publishing) is measured against a realistic model rather than a 30 us toy.
"""

from __future__ import annotations

from . import TrainedSample
from .activity import train as train_activity

SAMPLE_VERSION = 3
NAME = "activity_wide"
WIDTHS = (192, 384, 384)
KERNEL = 9


def train() -> TrainedSample:
    return train_activity(NAME, WIDTHS, KERNEL)
