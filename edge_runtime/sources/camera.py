"""A camera: a V4L2 device, an RTSP/HTTP stream or a video file, decoded by FFmpeg through PyAV; or the Raspberry
Pi camera through picamera2 (`url: picamera2`).

Built for a board slower than its camera. The decoder thread decodes every frame (inter-coded video cannot skip
one), keeps those `max_fps` lets through and hands them to the model worker, whose queue holds ONE frame for this
source (`latest_frame`): a frame that arrives while the previous one still waits replaces it, and the replaced one
is counted as dropped. So a slow model always runs on the newest frame, never lags behind the camera and never
queues megabytes of pixels. A stream or device that vanishes (EOF of a live stream, a network error, an unplugged
USB camera) is reopened with exponential backoff; `health()` says connected / reconnecting, the attempts so far
and the last error, and the frames decoded, skipped (by `max_fps`) and delivered (the daemon adds `dropped`).

A video file plays at its own frame rate (timestamps from the file, like the `replay` source, with the same
injectable clock), or with `realtime: false` as fast as the model goes: then the worker waits for room instead of
dropping, and every frame is run. A file ends the source (`finished`) unless `loop`.

PyAV (`pip install 'edge-runtime[camera]'`) and picamera2 are imported when the source is made, never at import.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edge_runtime.card import ImageInput
from edge_runtime.decode import MAX_IMAGE_PIXELS
from edge_runtime.sources.base import BaseSourceConfig, SourceContext, SourceUnavailable, ThreadedSource
from edge_runtime.sources.pacing import Clock, Pacer, Wait
from edge_runtime.stream import ImageFrame, InputRejected

log = logging.getLogger(__name__)

SOURCE_KEY = "camera"
PICAMERA2 = "picamera2"
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
#: pixel formats PyAV converts a decoded frame to, per card channel order
_PIXEL_FORMATS = {"rgb": "rgb24", "bgr": "bgr24", "gray": "gray"}


def url_kind(url: str) -> Literal["picamera2", "device", "stream", "file"]:
    if url == PICAMERA2:
        return "picamera2"
    if url.startswith("/dev/"):
        return "device"
    if url.lower().startswith(STREAM_SCHEMES):
        return "stream"
    return "file"


class CameraSourceConfig(BaseSourceConfig):
    """A camera, stream or video file (PyAV), or `picamera2`; the model always gets the newest frame."""

    order = 65
    type: Literal[SOURCE_KEY]
    url: str = Field(min_length=1, description="/dev/video0, rtsp://..., http(s)://..., a video file, or picamera2")
    max_fps: float | None = Field(None, gt=0, description="frames per second handed to the model at most")
    realtime: bool = Field(True, description="a file: at its own frame rate; false: as fast as the model goes")
    loop: bool = Field(False, description="a file: play it again from the start when it ends")
    format: str | None = Field(None, description="FFmpeg input format (default: v4l2 for /dev/*, else probed)")
    options: dict[str, str] = Field(default_factory=dict, description="FFmpeg options, e.g. video_size: 640x480, "
                                    "input_format: mjpeg, rtsp_transport: tcp")
    timeout_s: float = Field(5.0, gt=0, description="opening and reading a stream or device gives up after this")
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    size: tuple[int, int] | None = Field(None, description="picamera2: [width, height] of the frames")

    @property
    def kind(self) -> str:
        return url_kind(self.url)

    @property
    def latest_frame(self) -> bool:
        """The model worker keeps only the newest frame of this source (a live camera cannot wait)."""
        return not self.waits_for_model

    @property
    def waits_for_model(self) -> bool:
        """A file with `realtime: false` waits for the model instead of dropping frames."""
        return self.kind == "file" and not self.realtime


class CameraLost(Exception):
    """The device or stream is gone (or never came); the decoder reopens it after a backoff."""


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise SourceUnavailable("the camera source decodes video with PyAV: pip install 'edge-runtime[camera]'"
                                ) from None
    return av


def _import_picamera2() -> Any:
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise SourceUnavailable("url: picamera2 needs the picamera2 library (Raspberry Pi OS: sudo apt install "
                                "python3-picamera2; a virtual environment made with --system-site-packages sees it)"
                                ) from None
    return Picamera2


class CameraSource(ThreadedSource):
    type = SOURCE_KEY
    config: CameraSourceConfig

    def __init__(self, config: CameraSourceConfig, context: SourceContext, clock: Clock = time.monotonic,
                 wait: Wait | None = None):
        """`clock` and `wait` pace a file and the reconnect backoff (default: monotonic time, the stop event)."""
        super().__init__(config, context)
        if not isinstance(context.card.input, ImageInput):
            raise ValueError(f"the camera source feeds image models; {context.card.name} takes "
                             f"{context.card.input.kind} input")
        self.spec = context.card.input
        self.kind = config.kind
        if self.kind == "picamera2":
            self._picamera2 = _import_picamera2()
        else:
            self._av = _import_av()
        if self.kind == "file" and not Path(config.url).is_file():
            raise ValueError(f"camera url {config.url}: no such video file (a device is /dev/videoN, a stream "
                             f"rtsp://... or http(s)://...)")
        if config.reconnect_max_s < config.reconnect_min_s:
            raise ValueError("camera reconnect_max_s must be at least reconnect_min_s")
        self.clock = clock
        self.wait = wait or self._stop.wait
        self._lock = threading.Lock()
        self.state = "starting"
        self.decoded = self.skipped = self.delivered = 0
        self.connects = 0
        self.attempts = 0  # failed opens since the last good one
        self.last_error: str | None = None
        self._next_due: float | None = None  # max_fps: media time of the next frame to hand over

    def describe(self) -> str:
        return f"camera:{self.config.url}"

    def health(self) -> dict:
        """The source's part of this model's stats (the daemon adds the frames the model dropped)."""
        with self._lock:
            return {"state": self.state, "connects": self.connects, "attempts": self.attempts,
                    "last_error": self.last_error,
                    "frames": {"decoded": self.decoded, "skipped": self.skipped, "delivered": self.delivered}}

    def _set(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self, key, value)

    # -- the decoder thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._supervise()
        except Exception:  # a bug, not a camera problem: say so, and let `finished` tell the daemon
            log.exception("camera %s stopped", self.config.url)
            self._set(state="failed")
        finally:
            if self.state not in ("finished", "failed"):
                self._set(state="stopped")

    def _supervise(self) -> None:
        """Open, read until lost, back off, reopen; a file ends the source at its end (unless `loop`)."""
        backoff = self.config.reconnect_min_s
        while not self._stop.is_set():
            try:
                ended = self._read_once()
            except CameraLost as lost:
                with self._lock:
                    self.attempts += 1
                    self.last_error = str(lost)
                    self.state = "reconnecting"
                log.warning("camera %s: %s; reopening in %.1f s (attempt %d)", self.config.url, lost, backoff,
                            self.attempts)
                if self.wait(backoff):
                    return
                backoff = min(backoff * 2, self.config.reconnect_max_s)
                continue
            backoff = self.config.reconnect_min_s
            if ended and not (self.kind == "file" and self.config.loop):
                self._set(state="finished")
                self._finished = True
                return

    def _read_once(self) -> bool:
        """Read until the stop flag (False) or the end of a file (True); CameraLost when it goes away."""
        if self.kind == "picamera2":
            return self._read_picamera2()
        return self._read_av()

    def _connected(self) -> None:
        with self._lock:
            self.state = "connected"
            self.connects += 1
            if self.connects > 1:
                log.info("camera %s: connected again after %d failed attempt(s)", self.config.url, self.attempts)
            self.attempts = 0

    def _open_av(self) -> Any:
        config, av = self.config, self._av
        options = dict(config.options)
        kind = self.kind
        fmt = config.format or ("v4l2" if kind == "device" else None)
        if config.url.lower().startswith(("rtsp://", "rtsps://")):
            options.setdefault("rtsp_transport", "tcp")  # UDP loses packets on busy Wi-Fi: smeared frames
        try:
            timeout = None if kind == "file" else (config.timeout_s, config.timeout_s)
            return av.open(config.url, format=fmt, options=options, timeout=timeout)
        except Exception as error:  # av.FFmpegError subclasses (OSError), ValueError for bad options
            raise CameraLost(f"cannot open: {type(error).__name__}: {error}") from None

    def _read_av(self) -> bool:
        container = self._open_av()
        try:
            if not container.streams.video:
                raise CameraLost("no video stream in it")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with a large stream
            base = float(stream.time_base) if stream.time_base else None
            self._connected()
            pacer = Pacer(1.0 if self.config.realtime and self.kind == "file" else 0.0, self._stop, self.clock,
                          self.wait)
            wall_start = time.time()
            first_pts: float | None = None
            self._next_due = None
            try:
                for frame in container.decode(stream):
                    with self._lock:
                        self.decoded += 1
                    media_s = self._media_time(frame, base)
                    if first_pts is None:
                        first_pts = media_s
                    offset = None if media_s is None else media_s - first_pts
                    if self._stop.is_set():
                        return False
                    if not self._wanted(offset):
                        with self._lock:
                            self.skipped += 1
                        continue
                    if self.kind == "file":
                        if offset is not None and not pacer.wait_for(offset):
                            return False
                        ts = wall_start + (offset or 0.0)
                    else:
                        ts = time.time()
                    if frame.width * frame.height > MAX_IMAGE_PIXELS:  # bounded before it becomes an array
                        self.context.sink.reject(InputRejected(
                            "bad_image", f"frame is {frame.width}x{frame.height}, more than {MAX_IMAGE_PIXELS} "
                            "pixels: lower the camera's resolution"), source=self.describe())
                        continue
                    self._deliver(frame.to_ndarray(format=_PIXEL_FORMATS[self.spec.channel_order]), ts)
                    if self._stop.is_set():
                        return False
            except Exception as error:  # a network error, a device unplugged mid-read, a corrupt packet
                if self._stop.is_set():
                    return False
                if self.kind == "file":
                    log.warning("camera %s: %s: %s; the rest of the file is skipped", self.config.url,
                                type(error).__name__, error)
                    return True
                raise CameraLost(f"read failed: {type(error).__name__}: {error}") from None
            if self.kind == "file":
                return True
            raise CameraLost("the stream ended")
        finally:
            try:
                container.close()
            except Exception:
                log.debug("closing %s failed", self.config.url, exc_info=True)

    @staticmethod
    def _media_time(frame: Any, base: float | None) -> float | None:
        pts = frame.pts
        if pts is None or base is None:
            return None
        return float(pts) * base

    def _wanted(self, offset: float | None) -> bool:
        """`max_fps`: is this frame (at `offset` s of media time, else now) due? Drift-free, no catching up."""
        if self.config.max_fps is None:
            return True
        now = offset if offset is not None else self.clock()
        period = 1.0 / self.config.max_fps
        if self._next_due is None or now - self._next_due > period:  # the first frame, or a gap: start over
            self._next_due = now
        if now + 1e-6 < self._next_due:
            return False
        self._next_due += period
        return True

    def _deliver(self, pixels: np.ndarray, ts: float) -> None:
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        self.context.sink.accept(ImageFrame(ts=ts, pixels=np.ascontiguousarray(pixels)))
        with self._lock:
            self.delivered += 1

    # -- picamera2 ----------------------------------------------------------------------------------------------
    def _read_picamera2(self) -> bool:
        try:
            camera = self._picamera2()
            main: dict[str, Any] = {"format": "RGB888"}  # libcamera's RGB888 is B, G, R in memory
            if self.config.size:
                main["size"] = tuple(self.config.size)
            camera.configure(camera.create_video_configuration(main=main))
            camera.start()
        except Exception as error:
            raise CameraLost(f"cannot open the Pi camera: {type(error).__name__}: {error}") from None
        try:
            self._connected()
            while not self._stop.is_set():
                try:
                    bgr = camera.capture_array("main")
                except Exception as error:
                    raise CameraLost(f"capture failed: {type(error).__name__}: {error}") from None
                with self._lock:
                    self.decoded += 1
                if not self._wanted(None):
                    with self._lock:
                        self.skipped += 1
                    continue
                pixels = np.asarray(bgr)[:, :, :3]
                order = self.spec.channel_order
                if order == "rgb":
                    pixels = pixels[:, :, ::-1]
                elif order == "gray":  # ITU-R 601 luma, as FFmpeg's gray conversion
                    pixels = (pixels[:, :, 0] * 0.114 + pixels[:, :, 1] * 0.587 + pixels[:, :, 2] * 0.299
                              ).round().astype(np.uint8)
                self._deliver(pixels, time.time())
            return False
        finally:
            try:
                camera.stop()
                camera.close()
            except Exception:
                log.debug("closing the Pi camera failed", exc_info=True)
