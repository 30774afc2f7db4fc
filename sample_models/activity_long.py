"""Sample "activity_long": another 1-D CNN on the same IMU data, with 10 s windows (window 100, hop 10).

The demo's model sees 5 s windows cut inside each recording. This one is what a second user builds: longer
windows, so the recordings of one activity are streamed end to end and cut every hop (a BasicMotions recording is
exactly one window long), a narrower network with a wider kernel. Its calibration data is therefore one continuous
run per activity in which no recording boundary is visible, which is what the drift calibration has to cope with:
the between-recording spread must be estimated from the stream itself.
"""

from __future__ import annotations

from . import TrainedSample
from .activity import class_stream_windows
from .activity import train as train_activity

SAMPLE_VERSION = 1
NAME = "activity_long"
WINDOW = 100  # 10 s at 10 Hz
HOP = 10
WIDTHS = (24, 48, 48)
KERNEL = 7


def train() -> TrainedSample:
    return train_activity(NAME, WIDTHS, KERNEL, window=WINDOW, hop=HOP, cut=class_stream_windows)
