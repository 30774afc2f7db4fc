"""Image files (JPEG/PNG) from a folder, in name order, one every `interval_s`: a camera stand-in for image models.

The folder is listed when the source is made (files added later are not seen); each file is read and decoded
when its turn comes, through the same `decode_image` as MQTT images, so a corrupt file is rejected like a bad
message (the detail names the file) and the next one follows. Needs Pillow, checked at construction.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from edge_runtime.card import ImageInput
from edge_runtime.decode import decode_image
from edge_runtime.plugin import ConfigPath
from edge_runtime.sources.base import BaseSourceConfig, SourceContext, ThreadedSource, require_pillow_for
from edge_runtime.stream import InputRejected

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

SOURCE_KEY = "folder"


class FolderSourceConfig(BaseSourceConfig):
    """Image files (JPEG/PNG) from a folder, in name order, one every `interval_s`."""

    order = 60
    type: Literal[SOURCE_KEY]
    path: ConfigPath
    interval_s: float = Field(1.0, ge=0)
    loop: bool = False


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} does not exist")
    images = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not images:
        raise ValueError(f"image folder {folder} has no {'/'.join(IMAGE_SUFFIXES)} files")
    return images


class FolderSource(ThreadedSource):
    type = SOURCE_KEY
    config: FolderSourceConfig

    def __init__(self, config: FolderSourceConfig, context: SourceContext):
        super().__init__(config, context)
        if not isinstance(context.card.input, ImageInput):
            raise ValueError(f"the folder source feeds image models; {context.card.name} takes "
                             f"{context.card.input.kind} input")
        self.spec = context.card.input
        self.images = list_images(Path(config.path))
        require_pillow_for("folder")

    def describe(self) -> str:
        return f"folder:{Path(self.config.path).name}"

    def deliver(self, path: Path) -> None:
        """Read and decode one file; deliver the frame or reject it naming the file."""
        try:
            payload = path.read_bytes()
            frame = decode_image(payload, self.spec, self.context.max_message_bytes, time.time)
        except OSError as error:
            rejected = InputRejected("sensor_read_error", f"{path.name}: {error}")
        except InputRejected as error:
            rejected = InputRejected(error.reason, f"{path.name}: {error.detail}")
        else:
            self.context.sink.accept(frame)
            return
        self.context.sink.reject(rejected, source=self.describe())

    def _run(self) -> None:
        try:
            self._play()
        except Exception:
            log.exception("folder source %s stopped", self.config.path)

    def _play(self) -> None:
        interval = self.config.interval_s
        due = time.monotonic()  # when the next frame is due; drift-free like a camera's frame clock
        while True:
            for path in self.images:
                delay = due - time.monotonic()
                if delay < -interval:  # decoding is slower than the interval: do not try to catch up
                    due = time.monotonic()
                if self._stop.wait(delay) if delay > 0 else self._stop.is_set():
                    return
                self.deliver(path)
                due += interval
            if not self.config.loop:
                self._finished = True
                return
