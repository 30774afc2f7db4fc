"""Video material for the camera tests: real photos (scikit-image's bundled images, see detectors.py) fitted into
one frame size and written as a video file by PyAV at test time, and the same file decoded independently."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support.detectors import SCENES

#: every frame of a test video has this size (a 4:3 camera); photos are fitted in with black bars
WIDTH, HEIGHT = 640, 480


def fit(pixels: np.ndarray, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """An RGB photo scaled to fit width x height (aspect kept), centred on black."""
    from PIL import Image

    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    pixels = pixels[:, :, :3]
    ratio = min(width / pixels.shape[1], height / pixels.shape[0])
    size = (max(1, round(pixels.shape[1] * ratio)), max(1, round(pixels.shape[0] * ratio)))
    resized = np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR))
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - size[1]) // 2, (width - size[0]) // 2
    canvas[top:top + size[1], left:left + size[0]] = resized
    return canvas


def photo_frames(names: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "camera", "rocket")) -> list[np.ndarray]:
    """Real photos from scikit-image's wheel, fitted to WIDTH x HEIGHT (people, a cat, a cup, a rocket)."""
    import skimage.data as data

    assert all(name in SCENES for name in names)
    return [fit(getattr(data, name)()) for name in names]


def write_video(path: Path, frames: list[np.ndarray], fps: int, codec: str = "libx264", repeat: int = 1) -> Path:
    """Each frame `repeat` times in a row, at `fps`; H.264 (yuv420p) in mp4, or MJPEG in avi/mkv."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "18", "g": str(fps)}
        for pixels in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            for _ in range(repeat):
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decoded_frames(path: Path, format: str = "rgb24") -> list[np.ndarray]:
    """Every frame of a video file, decoded by PyAV directly: what the original model is run on."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format=format) for frame in container.decode(video=0)]


class MjpegServer:
    """A loopback HTTP camera: `multipart/x-mixed-replace` JPEG frames at `fps`, as IP cameras serve MJPEG.

    `stop()` closes the listening socket and every open stream; `start()` serves again on the same port: a camera
    that goes away and comes back.
    """

    def __init__(self, frames: list[np.ndarray], fps: float, port: int = 0):
        import io

        from PIL import Image

        self.jpegs = []
        for pixels in frames:
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
            self.jpegs.append(buffer.getvalue())
        self.fps = fps
        self.port = port
        self.server = None
        self.served = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> MjpegServer:
        import threading
        import time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                index = 0
                try:
                    while owner.server is server:
                        jpeg = owner.jpegs[index % len(owner.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        self.wfile.flush()
                        owner.served += 1
                        index += 1
                        time.sleep(1.0 / owner.fps)
                except OSError:
                    pass

        ThreadingHTTPServer.allow_reuse_address = True
        ThreadingHTTPServer.daemon_threads = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, name="mjpeg-server", daemon=True).start()
        return self

    def stop(self) -> None:
        server, self.server = self.server, None  # open streams see it and end
        if server is not None:
            server.shutdown()
            server.server_close()
