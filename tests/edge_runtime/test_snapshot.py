"""Snapshots: which detections trigger one, the interval, the size bound, the boxes drawn on a real photo."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from edge_runtime.snapshot import SnapshotConfig, SnapshotTaker, render_jpeg
from tests.support.video import photo_frames

PERSON = {"label": "person", "score": 0.8, "box": [100.0, 50.0, 300.0, 400.0]}
CAT = {"label": "cat", "score": 0.95, "box": [10.0, 10.0, 50.0, 50.0]}


def test_only_chosen_labels_above_min_score_trigger_and_at_most_once_per_interval():
    now = [0.0]
    taker = SnapshotTaker(SnapshotConfig(labels=["person"], min_score=0.5, interval_s=10), clock=lambda: now[0])
    assert taker.trigger([CAT]) is None
    assert taker.trigger([{**PERSON, "score": 0.4}]) is None
    assert taker.trigger([CAT, PERSON]) == PERSON
    photo = photo_frames(("astronaut",))[0]
    document = taker.take(photo, [CAT, PERSON], PERSON, model="m", seq=3, ts=12.5)
    assert document["seq"] == 3 and document["frame"] == {"width": 640, "height": 480}
    now[0] = 9.9
    assert taker.trigger([PERSON]) is None
    now[0] = 10.0
    assert taker.trigger([PERSON]) == PERSON
    assert SnapshotTaker(SnapshotConfig(min_score=0.9)).trigger([PERSON, CAT]) == CAT  # any label by default


def test_the_jpeg_shows_the_boxes_and_keeps_within_max_bytes():
    photo = photo_frames(("astronaut",))[0]
    jpeg, width, height = render_jpeg(photo, [PERSON], max_bytes=200_000)
    drawn = np.asarray(Image.open(io.BytesIO(jpeg)))
    assert (width, height) == (640, 480)
    # the box outline is drawn: its left edge differs from the photo there
    assert np.abs(drawn[200:300, 100].astype(int) - photo[200:300, 100]).mean() > 40
    small, width, height = render_jpeg(photo, [PERSON], max_bytes=10_000)
    assert len(small) <= 10_000 and width <= 640
    big = np.random.default_rng(0).integers(0, 255, (2000, 3000, 3), dtype=np.uint8)  # noise does not compress
    jpeg, width, height = render_jpeg(big, [], max_width=1280, max_bytes=50_000)
    assert len(jpeg) <= 50_000 and width <= 1280 and abs(width / height - 1.5) < 0.01
    assert render_jpeg(big, [], max_bytes=100) is None
