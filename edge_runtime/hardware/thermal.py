"""Board temperature and throttling, from sysfs where the board exposes them.

Temperature comes from the board file's thermal zone, given by its type (`cpu-thermal` on a Pi, `tj-thermal` on a
Jetson Orin, `soc-thermal` on an RK3588: zone numbers differ between kernels, types do not) or by a file path.
Throttling comes from the Raspberry Pi firmware's flags (`get_throttled` in sysfs, what `vcgencmd get_throttled`
prints: under-voltage, frequency capped, throttled, soft temperature limit, now and since boot) or, on other
boards, from the kernel's CPU and GPU frequency cooling devices (a state above 0 means the clock is held down).
"""

from __future__ import annotations

from pathlib import Path

from edge_runtime.hardware.sysfs import read_text, under

THERMAL = "/sys/class/thermal"

#: the Raspberry Pi firmware's get_throttled bits: bit -> meaning; the same flags 16 bits up mean "since boot"
PI_THROTTLED_BITS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit"}


def find_thermal_zone(spec: str | None, root: Path = Path("/")) -> Path | None:
    """The temperature file of a zone given by type (`cpu-thermal`) or by path; None when the board has none."""
    if not spec:
        return None
    if spec.startswith("/"):
        path = under(root, spec)
        return path if path.is_file() else None
    for zone in sorted(under(root, THERMAL).glob("thermal_zone*")):
        if read_text(zone / "type") == spec and (zone / "temp").is_file():
            return zone / "temp"
    return None


def read_celsius(path: Path | None) -> float | None:
    """A sysfs temperature in millidegrees Celsius, as degrees; None when unreadable."""
    if path is None:
        return None
    try:
        return round(int(read_text(path) or "") / 1000.0, 1)
    except ValueError:
        return None


def find_throttled_file(pattern: str | None, root: Path = Path("/")) -> Path | None:
    """The firmware flags file (a glob: the firmware node's sysfs path differs between Pi models)."""
    if not pattern:
        return None
    return next(iter(sorted(root.glob(pattern.lstrip("/")))), None)


def pi_throttling(value: int) -> dict:
    """The Raspberry Pi firmware's bitmask as words."""
    now = [meaning for bit, meaning in PI_THROTTLED_BITS.items() if value & (1 << bit)]
    since_boot = [meaning for bit, meaning in PI_THROTTLED_BITS.items() if value & (1 << (bit + 16))]
    return {"source": "firmware get_throttled", "active": bool(now), "now": now, "since_boot": since_boot,
            "raw": hex(value)}


def _frequency_cooling(root: Path) -> list[tuple[str, int, int]]:
    """(type, state, max_state) of each CPU/GPU frequency cooling device (fans are cooling, not throttling)."""
    devices = []
    for device in sorted(under(root, THERMAL).glob("cooling_device*")):
        kind = read_text(device / "type") or ""
        if "freq" not in kind and "throttl" not in kind:
            continue
        try:
            state, top = (int(read_text(device / name) or "") for name in ("cur_state", "max_state"))
        except ValueError:
            continue
        devices.append((kind, state, top))
    return devices


class ThrottleReader:
    """Reads throttling the way this board exposes it; `read()` is None when it exposes nothing."""

    def __init__(self, throttled_file: str | None, root: Path = Path("/")):
        self.root = root
        self.firmware = find_throttled_file(throttled_file, root)
        self.has_cooling = bool(_frequency_cooling(root))

    @property
    def available(self) -> bool:
        return self.firmware is not None or self.has_cooling

    def read(self) -> dict | None:
        if self.firmware is not None:
            text = read_text(self.firmware)
            try:
                return pi_throttling(int(text or "", 16))
            except ValueError:
                return None
        if not self.has_cooling:
            return None
        devices = _frequency_cooling(self.root)
        now = [f"{kind} at state {state} of {top}" for kind, state, top in devices if state > 0]
        return {"source": "cooling devices", "active": bool(now), "now": now}
