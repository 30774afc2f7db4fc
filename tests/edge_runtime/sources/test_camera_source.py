"""The camera source on real video files written by PyAV at test time (real photos): every frame in order with
`realtime: false`, pacing at the file's own rate against an injected clock, `max_fps`, channel orders, the
counters, the Pi camera through a stand-in picamera2 module, and the one-line errors."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from edge_runtime.sources import SourceUnavailable, create_source
from edge_runtime.sources.camera import CameraSource, CameraSourceConfig, url_kind
from tests.support.video import HEIGHT, WIDTH, MjpegServer, decoded_frames, photo_frames, write_video

pytest.importorskip("av")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """Five real photos, each shown for 3 frames, at 10 fps: 15 frames, 1.5 s."""
    return write_video(tmp_path_factory.mktemp("video") / "photos.mp4", photo_frames(), fps=10, repeat=3)


def camera(context, url, **options) -> CameraSource:
    return CameraSource(CameraSourceConfig(type="camera", url=str(url), **options), context)


def play(source: CameraSource, sink, timeout: float = 20.0) -> None:
    source.start()
    sink.wait_until(lambda: source.finished, timeout)
    source.stop()


def test_url_kinds():
    assert url_kind("/dev/video0") == "device"
    assert url_kind("rtsp://cam.local/stream") == "stream" and url_kind("HTTP://cam/mjpeg") == "stream"
    assert url_kind("picamera2") == "picamera2" and url_kind("clips/door.mp4") == "file"


def test_a_file_as_fast_as_the_model_goes_delivers_every_decoded_frame(video, sink, make_context, image_card):
    source = camera(make_context(image_card()), video, realtime=False)
    config = source.config
    assert config.waits_for_model and not config.latest_frame  # the worker waits instead of dropping
    play(source, sink)
    expected = decoded_frames(video)
    assert len(sink.items) == len(expected) == 15
    for frame, pixels in zip(sink.items, expected, strict=True):
        assert frame.pixels.shape == (HEIGHT, WIDTH, 3) and frame.pixels.dtype == np.uint8
        np.testing.assert_array_equal(frame.pixels, pixels)
    assert source.health() == {"state": "finished", "connects": 1, "attempts": 0, "last_error": None,
                               "frames": {"decoded": 15, "skipped": 0, "delivered": 15}}


def test_frames_larger_than_the_pixel_cap_are_rejected_before_they_become_arrays(monkeypatch, video, sink,
                                                                                   make_context, image_card):
    from edge_runtime.sources import camera as camera_module

    monkeypatch.setattr(camera_module, "MAX_IMAGE_PIXELS", WIDTH * HEIGHT - 1)  # this file's frames are one too many
    source = camera(make_context(image_card()), video, realtime=False)
    play(source, sink)
    assert sink.items == [] and sink.reasons == ["bad_image"] * 15
    assert f"frame is {WIDTH}x{HEIGHT}" in str(sink.rejections[0][0])


def test_a_file_plays_at_its_own_frame_rate(video, sink, make_context, image_card):
    """An injected clock: each frame is waited for until its presentation time, 0.1 s apart at 10 fps."""
    now = [0.0]
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        now[0] += seconds
        return False

    source = CameraSource(CameraSourceConfig(type="camera", url=str(video)), make_context(image_card()),
                          clock=lambda: now[0], wait=wait)
    assert source.config.latest_frame  # realtime: the model gets the newest frame
    play(source, sink)
    assert len(sink.items) == 15
    assert now[0] == pytest.approx(1.4)  # the last frame is due 1.4 s after the first
    ts = np.array([frame.ts for frame in sink.items])
    np.testing.assert_allclose(np.diff(ts), 0.1, atol=1e-6)  # frame times are the file's, rebased to now


def test_max_fps_hands_over_every_other_frame_of_a_10_fps_file(video, sink, make_context, image_card):
    source = camera(make_context(image_card()), video, realtime=False, max_fps=5)
    play(source, sink)
    assert len(sink.items) == 8
    expected = decoded_frames(video)[::2]
    for frame, pixels in zip(sink.items, expected, strict=True):
        np.testing.assert_array_equal(frame.pixels, pixels)
    assert source.health()["frames"] == {"decoded": 15, "skipped": 7, "delivered": 8}


@pytest.mark.parametrize(("order", "av_format"), [("gray", "gray"), ("bgr", "bgr24")])
def test_frames_come_in_the_card_channel_order(order, av_format, video, sink, make_context, image_card):
    channels = 1 if order == "gray" else 3
    source = camera(make_context(image_card(channel_order=order, channels=channels)), video, realtime=False)
    play(source, sink)
    expected = decoded_frames(video, format=av_format)
    first = sink.items[0].pixels
    assert first.shape == (HEIGHT, WIDTH, channels)
    np.testing.assert_array_equal(first.reshape(expected[0].shape), expected[0])


def test_loop_plays_the_file_again(video, sink, make_context, image_card):
    source = camera(make_context(image_card()), video, realtime=False, loop=True)
    source.start()
    sink.wait_until(lambda: len(sink.items) >= 40)
    source.stop()
    assert not source.finished and source.health()["connects"] >= 3


def test_errors_are_one_line(tmp_path, make_context, image_card, timeseries_card):
    with pytest.raises(ValueError, match="no such video file"):
        camera(make_context(image_card()), tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="feeds image models"):
        camera(make_context(timeseries_card()), tmp_path / "missing.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    source = camera(make_context(image_card()), broken, reconnect_min_s=0.01)
    source.start()  # a file that cannot be opened is retried like a device that is not there yet
    try:
        assert _eventually(lambda: source.health()["attempts"] >= 2)
    finally:
        source.stop()
    health = source.health()
    assert health["state"] in ("reconnecting", "stopped") and "cannot open" in health["last_error"]


def test_a_missing_pyav_names_the_extra(monkeypatch, video, make_context, image_card):
    monkeypatch.setitem(sys.modules, "av", None)
    config = CameraSourceConfig(type="camera", url=str(video))
    with pytest.raises(SourceUnavailable, match=r"pip install 'edge-runtime\[camera\]'"):
        create_source(config, make_context(image_card()))


class FakePicamera2:
    """picamera2's Picamera2 as the source uses it; frames are B, G, R like libcamera's RGB888."""

    frames: list[np.ndarray] = []
    instances: list[FakePicamera2] = []

    def __init__(self):
        self.configured = None
        self.started = self.closed = False
        self.index = 0
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main):
        return {"main": main}

    def configure(self, configuration):
        self.configured = configuration

    def start(self):
        self.started = True

    def capture_array(self, name="main"):
        import time

        time.sleep(0.001)
        frame = self.frames[self.index % len(self.frames)]
        self.index += 1
        return frame[:, :, ::-1].copy()  # RGB -> BGR, as the camera hands it over

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


def test_the_pi_camera_through_picamera2(monkeypatch, sink, make_context, image_card):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setitem(sys.modules, "av", None)  # the Pi camera does not need PyAV
    FakePicamera2.frames = [frame[:120, :160].copy() for frame in photo_frames(("astronaut", "coffee"))]
    FakePicamera2.instances = []
    source = create_source(CameraSourceConfig(type="camera", url="picamera2", size=(160, 120)),
                           make_context(image_card()))
    source.start()
    sink.wait_until(lambda: len(sink.items) >= 4)
    source.stop()
    np.testing.assert_array_equal(sink.items[0].pixels, FakePicamera2.frames[0])
    np.testing.assert_array_equal(sink.items[1].pixels, FakePicamera2.frames[1])
    camera_used = FakePicamera2.instances[0]
    assert camera_used.configured == {"main": {"format": "RGB888", "size": (160, 120)}} and camera_used.closed
    assert source.health()["state"] == "stopped"


def test_a_missing_picamera2_says_how_to_get_it(monkeypatch, make_context, image_card):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceUnavailable, match="python3-picamera2"):
        create_source(CameraSourceConfig(type="camera", url="picamera2"), make_context(image_card()))


@pytest.mark.slow
def test_a_stream_that_stops_and_comes_back_is_reconnected(sink, make_context, image_card):
    """A loopback HTTP camera (MJPEG, as IP cameras serve it) goes away and comes back on the same port."""
    frames = photo_frames(("astronaut", "coffee"))
    server = MjpegServer(frames, fps=20).start()
    source = camera(make_context(image_card()), server.url, reconnect_min_s=0.05, reconnect_max_s=0.2)
    assert source.config.latest_frame and not source.config.waits_for_model
    source.start()
    try:
        sink.wait_until(lambda: len(sink.items) >= 5, 20)
        assert source.health()["state"] == "connected"
        server.stop()
        assert _eventually(lambda: source.health()["attempts"] >= 2)  # refused while it is away, and says so
        away = source.health()
        assert away["state"] == "reconnecting" and away["connects"] == 1 and away["last_error"]
        before = len(sink.items)
        server.start()  # the same port again
        sink.wait_until(lambda: len(sink.items) >= before + 5, 20)
        back = source.health()
        assert back["state"] == "connected" and back["connects"] == 2 and back["attempts"] == 0
    finally:
        source.stop()
        server.stop()
    # the frames are the served JPEGs, decoded
    assert np.abs(sink.items[0].pixels.astype(int) - frames[0]).mean() < 4


def _eventually(condition, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
