"""The serial source with a fake port (needs pyserial, which the device install does not have)."""

from __future__ import annotations

import queue
import time

import numpy as np
import pytest

serial = pytest.importorskip("serial")

from edge_runtime.sources import source_class  # noqa: E402
from edge_runtime.sources.serial import SerialSource, SerialSourceConfig  # noqa: E402


class FakePort:
    """Hands out queued chunks; a queued exception is raised instead, like an unplugged USB adapter."""

    def __init__(self, chunks: queue.Queue) -> None:
        self.chunks = chunks
        self.closed = False
        self.in_waiting = 0

    def read(self, size: int) -> bytes:
        try:
            chunk = self.chunks.get(timeout=0.02)
        except queue.Empty:
            return b""
        if isinstance(chunk, Exception):
            raise chunk
        return chunk

    def close(self) -> None:
        self.closed = True


def serial_source(context, monkeypatch, chunks, **options) -> tuple[SerialSource, list[FakePort]]:
    opened: list[FakePort] = []

    def open_port(self):
        opened.append(FakePort(chunks))
        return opened[-1]

    monkeypatch.setattr(SerialSource, "open_port", open_port)
    monkeypatch.setattr("edge_runtime.sources.serial.RETRY_S", 0.01)
    return SerialSource(SerialSourceConfig(type="serial", port="/dev/ttyACM0", **options), context), opened


def test_registry_finds_it_when_pyserial_is_installed():
    assert source_class("serial") is SerialSource


def test_csv_lines_split_across_reads(monkeypatch, sink, make_context):
    chunks: queue.Queue = queue.Queue()
    source, opened = serial_source(make_context(), monkeypatch, chunks)
    for chunk in (b"1,2,3\n4,5", b",6\r\n\n", b"7,8\n", b"x,y,z\n", b"1,2,nan\n", b"9,9,9\n"):
        chunks.put(chunk)
    source.start()
    sink.wait_until(lambda: sink.samples() >= 3)
    source.stop()
    np.testing.assert_array_equal(sink.values(), [[1, 2, 3], [4, 5, 6], [9, 9, 9]])
    assert sink.reasons == ["wrong_channel_count", "malformed_csv", "non_finite"]
    assert opened[0].closed


def test_json_lines(monkeypatch, sink, make_context):
    chunks: queue.Queue = queue.Queue()
    chunks.put(b'{"ts": 3.0, "samples": [[1, 2, 3], [4, 5, 6]]}\n{"values": [1]}\n')
    source, _ = serial_source(make_context(), monkeypatch, chunks, format="json")
    source.start()
    sink.wait_until(lambda: sink.samples() >= 2 and sink.rejections)
    source.stop()
    np.testing.assert_allclose(sink.ts(), [3.0, 3.01])
    assert sink.reasons == ["wrong_channel_count"]


def test_reconnects_when_the_port_disappears(monkeypatch, sink, make_context):
    chunks: queue.Queue = queue.Queue()
    source, opened = serial_source(make_context(), monkeypatch, chunks)
    chunks.put(b"1,1,1\n")
    chunks.put(serial.SerialException("device reports readiness to read but returned no data"))
    chunks.put(b"2,2,2\n")
    source.start()
    sink.wait_until(lambda: sink.samples() >= 2)
    source.stop()
    assert len(opened) == 2 and all(port.closed for port in opened)
    assert sink.reasons == ["sensor_read_error"]
    np.testing.assert_array_equal(sink.values()[:, 0], [1, 2])


def test_an_endless_line_is_rejected_once(monkeypatch, sink, make_context):
    chunks: queue.Queue = queue.Queue()
    source, _ = serial_source(make_context(max_message_bytes=64), monkeypatch, chunks)
    for _ in range(5):
        chunks.put(b"1" * 40)
    chunks.put(b"\n3,3,3\n")
    source.start()
    sink.wait_until(lambda: sink.samples() >= 1)
    source.stop()
    assert sink.reasons == ["oversized"]
    np.testing.assert_array_equal(sink.values(), [[3, 3, 3]])


def test_a_port_that_cannot_open_is_retried(monkeypatch, sink, make_context):
    calls = []

    def open_port(self):
        calls.append(time.monotonic())
        raise serial.SerialException("could not open port /dev/ttyACM0")

    monkeypatch.setattr(SerialSource, "open_port", open_port)
    monkeypatch.setattr("edge_runtime.sources.serial.RETRY_S", 0.01)
    source = SerialSource(SerialSourceConfig(type="serial", port="/dev/ttyACM0"), make_context())
    source.start()
    sink.wait_until(lambda: len(calls) >= 3)
    source.stop()
    assert set(sink.reasons) == {"sensor_read_error"} and "cannot open" in sink.rejections[0][0].detail
