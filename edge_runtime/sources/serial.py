"""Lines from a serial port (a microcontroller streaming its sensor): CSV floats or the JSON sensor message.

Needs pyserial (not part of the device install), imported when the port is opened, not with this module: the
config validates without it, and making the source says "pip install pyserial" (`SerialSource.requires`).
`port` may also be a pyserial URL (`socket://host:port`, `rfc2217://...`). One bad line is one rejection
(counted), never the end of the port: the lines before and after it are delivered. A USB adapter that is unplugged makes
the port disappear: the source rejects once (`sensor_read_error`), then tries to reopen every RETRY_S seconds
until it comes back or the source is stopped. A CSV line gets the time it was received; a JSON line carries its
own ts (or gets it too).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import numpy as np

from edge_runtime.decode import decode_json
from edge_runtime.sources.base import BaseSourceConfig, SourceContext, ThreadedSource, stream_shape
from edge_runtime.stream import InputRejected, SampleBlock

log = logging.getLogger(__name__)

SOURCE_KEY = "serial"


class SerialSourceConfig(BaseSourceConfig):
    """Lines from a serial port (a microcontroller): CSV values or the JSON sensor message. Needs pyserial."""

    order = 40
    type: Literal[SOURCE_KEY]
    port: str
    baudrate: int = 115200
    format: Literal["csv", "json"] = "csv"

RETRY_S = 2.0
#: how long one read waits for bytes; bounds how late stop() is noticed
READ_TIMEOUT_S = 0.2


def decode_csv_line(line: bytes, channels: int, now: float) -> SampleBlock:
    """`1.0,2.5,-3` -> one sample at `now`."""
    try:
        values = [float(cell) for cell in line.decode("ascii").strip().split(",")]
    except (UnicodeDecodeError, ValueError):
        raise InputRejected("malformed_csv", f"not a line of comma-separated numbers: {line[:80]!r}") from None
    if len(values) != channels:
        raise InputRejected("wrong_channel_count", f"line has {len(values)} values, expected {channels} channels")
    array = np.array([values], dtype=np.float32)
    if not np.isfinite(array).all():
        channel = int(np.argmax(~np.isfinite(array[0])))
        raise InputRejected("non_finite", f"channel {channel} is {values[channel]}; every value must be finite")
    return SampleBlock(ts=np.array([now]), values=array)


class SerialSource(ThreadedSource):
    type = SOURCE_KEY
    requires = {"serial": "pyserial"}
    config: SerialSourceConfig

    def __init__(self, config: SerialSourceConfig, context: SourceContext):
        super().__init__(config, context)
        self.channels, self.rate_hz = stream_shape(context.card)
        self.max_bytes = context.max_message_bytes
        self._port: Any = None
        self._internal_logged = False

    def describe(self) -> str:
        return f"serial:{self.config.port}"

    def stop(self) -> None:
        super().stop()
        self._close()

    def open_port(self) -> Any:
        import serial

        return serial.serial_for_url(self.config.port, baudrate=self.config.baudrate, timeout=READ_TIMEOUT_S)

    def _close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception:  # closing a vanished device can fail; it is gone either way
                log.debug("serial source %s: close failed", self.config.port, exc_info=True)

    def _reject(self, reason: str, detail: str) -> None:
        self.context.sink.reject(InputRejected(reason, detail), source=self.describe())

    def handle_line(self, line: bytes) -> None:
        """Decode one line (without its newline) and deliver or reject it."""
        line = line.strip()
        if not line:
            return
        if len(line) > self.max_bytes:
            self._reject("oversized", f"line is {len(line)} bytes, the limit is {self.max_bytes}")
            return
        try:
            if self.config.format == "csv":
                block = decode_csv_line(line, self.channels, time.time())
            else:
                block = decode_json(line, self.channels, self.rate_hz, self.max_bytes)
        except InputRejected as rejected:
            self.context.sink.reject(rejected, source=self.describe())
            return
        except Exception as error:  # a decoder bug: one line is rejected, the port and the lines after it live on
            if not self._internal_logged:
                self._internal_logged = True
                log.exception("serial source %s: unexpected error decoding a line (logged once)", self.config.port)
            self._reject("internal_error", f"{type(error).__name__}: {str(error)[:120]}")
            return
        self.context.sink.accept(block)

    def _run(self) -> None:
        import serial  # checked by the registry before the source was made (`requires`)

        while not self._stop.is_set():
            try:
                self._port = self.open_port()
            except (serial.SerialException, OSError, ValueError) as error:
                self._reject("sensor_read_error", f"cannot open {self.config.port}: {error}; retrying every "
                                                  f"{RETRY_S:g} s")
                self._stop.wait(RETRY_S)
                continue
            log.info("serial source: reading %s", self.config.port)
            try:
                self._read_lines()
            except (serial.SerialException, OSError) as error:
                self._reject("sensor_read_error", f"{self.config.port} went away: {error}; reconnecting")
                self._stop.wait(RETRY_S)
            except Exception:
                log.exception("serial source %s: unexpected error", self.config.port)
                self._stop.wait(RETRY_S)
            finally:
                self._close()

    def _read_lines(self) -> None:
        pending = bytearray()
        discarding = False  # inside a line that was already rejected as oversized
        while not self._stop.is_set():
            port = self._port
            if port is None:
                return
            chunk = port.read(max(1, getattr(port, "in_waiting", 0) or 0))
            if not chunk:
                continue
            pending += chunk
            *lines, rest = bytes(pending).split(b"\n")
            pending = bytearray(rest)
            for line in lines:
                if self._stop.is_set():
                    return
                if not discarding:
                    self.handle_line(line)
                discarding = False
            if len(pending) > self.max_bytes:
                if not discarding:
                    self._reject("oversized", f"a line longer than {self.max_bytes} bytes without a newline")
                pending.clear()
                discarding = True
