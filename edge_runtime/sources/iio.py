"""A Linux IIO sensor through sysfs (an I2C accelerometer or ADC on a Pi), polled at the model's rate.

IIO convention: a channel `in_<type>[index][_<modifier>]_raw` reads integers; the value in SI units is
`(raw + offset) * scale`, where offset and scale come from the channel's own `<channel>_offset`/`_scale` file or
the type-wide `in_<type>_offset`/`in_<type>_scale` (each optional). Attributes that do not end in `_raw` (e.g.
`in_temp_input`) are already processed by the driver and used as they are.

Offsets and scales are read once, when the source is made; a driver whose range is changed at run time needs a
restart of the model. Polling is drift-free (tick k is due at start + k / rate_hz); after a stall the missed
ticks are skipped, not replayed in a burst. A failed read is rejected as `sensor_read_error` and polling goes on.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from edge_runtime.plugin import ConfigPath
from edge_runtime.sources.base import BaseSourceConfig, SourceContext, ThreadedSource, stream_shape
from edge_runtime.stream import InputRejected, SampleBlock

log = logging.getLogger(__name__)

SOURCE_KEY = "iio"


class IioSourceConfig(BaseSourceConfig):
    """A Linux IIO device in sysfs (an I2C accelerometer on a Pi), polled at the card's rate."""

    order = 30
    type: Literal[SOURCE_KEY]
    device: str = Field(description="iio:deviceN or the device's name")
    channels: list[str] = Field(description="sysfs attributes such as in_accel_x_raw, in channel order")
    root: ConfigPath = Path("/sys/bus/iio/devices")
    rate_hz: float | None = Field(None, gt=0, description="default: the card's rate_hz")

_TYPE = re.compile(r"^(?:in|out)_[a-z]+")


def _device_number(path: Path) -> int:
    digits = path.name.removeprefix("iio:device")
    return int(digits) if digits.isdigit() else 1 << 30


def _read_name(device: Path) -> str:
    try:
        return (device / "name").read_text().strip()
    except OSError:
        return "?"


def find_device(root: Path, device: str) -> Path:
    """The sysfs folder of `device`, given as `iio:deviceN` or as the content of the device's `name` file."""
    if not root.is_dir():
        raise ValueError(f"IIO root {root} does not exist: is the sensor's kernel driver loaded?")
    if (root / device).is_dir():
        return root / device
    devices = sorted((path for path in root.glob("iio:device*") if path.is_dir()), key=_device_number)
    for path in devices:
        if _read_name(path) == device:
            return path
    available = ", ".join(f"{path.name} ({_read_name(path)})" for path in devices) or "none"
    raise ValueError(f"no IIO device {device!r} under {root}; available: {available}")


def _number_file(path: Path) -> float:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {path} as a number: {error}") from None


@dataclass(frozen=True)
class IioChannel:
    """One sysfs attribute and the conversion of its reading to SI units."""

    path: Path
    offset: float = 0.0
    scale: float = 1.0

    @classmethod
    def probe(cls, device: Path, attribute: str) -> IioChannel:
        path = device / attribute
        if not path.is_file():
            available = sorted(p.name for p in device.iterdir() if p.name.endswith(("_raw", "_input")))
            raise ValueError(f"IIO device {device.name} ({_read_name(device)}) has no attribute {attribute!r}; "
                             f"it has: {', '.join(available) or 'no _raw or _input attributes'}")
        if not attribute.endswith("_raw"):
            return cls(path)
        channel = attribute.removesuffix("_raw")
        kind = _TYPE.match(channel)
        prefixes = [channel] + ([kind.group(0)] if kind and kind.group(0) != channel else [])

        def shared(suffix: str, default: float) -> float:
            for prefix in prefixes:
                candidate = device / f"{prefix}_{suffix}"
                if candidate.is_file():
                    return _number_file(candidate)
            return default

        return cls(path, offset=shared("offset", 0.0), scale=shared("scale", 1.0))

    def read(self) -> float:
        return (float(self.path.read_text().strip()) + self.offset) * self.scale


class IioSource(ThreadedSource):
    type = SOURCE_KEY
    config: IioSourceConfig

    def __init__(self, config: IioSourceConfig, context: SourceContext):
        super().__init__(config, context)
        channels, self.rate_hz = stream_shape(context.card, config.rate_hz)
        if len(config.channels) != channels:
            raise ValueError(f"iio source lists {len(config.channels)} channels but the model takes {channels}")
        self.device_path = find_device(Path(config.root), config.device)
        self.channels = [IioChannel.probe(self.device_path, attribute) for attribute in config.channels]

    def describe(self) -> str:
        return f"iio:{self.config.device}"

    def read_sample(self) -> SampleBlock:
        """One reading of every channel, now; InputRejected(`sensor_read_error`) names the attribute that failed."""
        ts = time.time()
        values = np.empty((1, len(self.channels)), dtype=np.float32)
        for index, channel in enumerate(self.channels):
            try:
                values[0, index] = channel.read()
            except (OSError, ValueError) as error:
                raise InputRejected("sensor_read_error", f"{channel.path}: {error}") from None
        return SampleBlock(ts=np.array([ts]), values=values)

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                self.context.sink.accept(self.read_sample())
            except InputRejected as rejected:
                self.context.sink.reject(rejected, source=self.describe())
            except Exception:
                log.exception("iio source %s: unexpected error while polling", self.config.device)
            due += period
            delay = due - time.monotonic()
            if delay < -period:  # stalled (slow bus, suspend): skip the missed ticks instead of bursting
                due = time.monotonic()
            elif delay > 0 and self._stop.wait(delay):
                return
