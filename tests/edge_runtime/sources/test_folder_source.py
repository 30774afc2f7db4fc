"""The folder source: images in name order, a corrupt file rejected by name, and the Pillow requirement."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edge_runtime.sources import SourceUnavailable
from edge_runtime.sources.folder import FolderSource, FolderSourceConfig
from edge_runtime.stream import ImageFrame

HAS_PILLOW = importlib.util.find_spec("PIL") is not None


def folder(context, path, **options) -> FolderSource:
    return FolderSource(FolderSourceConfig(type="folder", path=path, **options), context)


def write_images(path, shades=(10, 20, 30)) -> None:
    from PIL import Image

    path.mkdir(exist_ok=True)
    for index, shade in enumerate(shades):
        suffix = "png" if index % 2 == 0 else "jpg"
        Image.fromarray(np.full((8, 8, 3), shade, dtype=np.uint8)).save(path / f"frame{index:02d}.{suffix}")


def shades(sink) -> list[int]:
    return [int(round(float(item.pixels.mean()))) for item in sink.items if isinstance(item, ImageFrame)]


def test_without_pillow_the_error_says_what_to_install(without_pillow, tmp_path, make_context, image_card):
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(SourceUnavailable, match="pip install pillow"):
        folder(make_context(image_card()), tmp_path)


@pytest.mark.skipif(not HAS_PILLOW, reason="needs Pillow")
def test_images_in_name_order_and_a_corrupt_one_rejected(tmp_path, sink, make_context, image_card):
    write_images(tmp_path / "cam")
    (tmp_path / "cam" / "frame01b.png").write_bytes(b"not a png")
    (tmp_path / "cam" / "notes.txt").write_text("ignored")
    source = folder(make_context(image_card()), tmp_path / "cam", interval_s=0)
    source.start()
    sink.wait_until(lambda: source.finished)
    source.stop()
    assert shades(sink) == [10, 20, 30]
    (rejected, where), = sink.rejections
    assert rejected.reason == "bad_image" and "frame01b.png" in rejected.detail and where == "folder:cam"


@pytest.mark.skipif(not HAS_PILLOW, reason="needs Pillow")
def test_loop_and_interval(tmp_path, sink, make_context, image_card):
    write_images(tmp_path / "cam", shades=(50, 100))
    source = folder(make_context(image_card()), tmp_path / "cam", interval_s=0.01, loop=True)
    source.start()
    sink.wait_until(lambda: len(sink.items) >= 5)
    source.stop()
    assert shades(sink)[:5] == [50, 100, 50, 100, 50]
    assert not source.finished
    ts = [item.ts for item in sink.items]
    assert (np.diff(ts) > 0).all()


def test_folder_errors(tmp_path, make_context, image_card, timeseries_card):
    with pytest.raises(ValueError, match="does not exist"):
        folder(make_context(image_card()), tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no .png/.jpg/.jpeg files"):
        folder(make_context(image_card()), tmp_path / "empty")
    with pytest.raises(ValueError, match="feeds image models"):
        folder(make_context(timeseries_card()), tmp_path)
