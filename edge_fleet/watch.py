"""`edge-fleet watch`: the fleet as a live terminal table, one row per device, worst first.

Order: offline devices, then those with drift, a degraded backend or a failed deployment, then the rest, each
by id; so with 10,000 devices the rows that fit the terminal are the ones that need someone. The table is
rebuilt once a second from `FleetState` copies (the monitor thread keeps ingesting meanwhile); rows beyond
what fits are summarised in the caption rather than rendered, which keeps a refresh cheap for a big fleet.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from edge_fleet.monitor import FleetMonitor
from edge_fleet.state import DeviceState, FleetState

STATE_STYLE = {"online": "green", "offline": "bold red", "stopped": "yellow", "unknown": "dim"}
DRIFT_STYLE = {"ok": "green", "warning": "yellow", "drift": "bold red"}


def needs_attention(device: DeviceState) -> bool:
    models = device.models.values()
    return (any(model.drift_state == "drift" or model.degraded for model in models)
            or (device.deploy or {}).get("state") == "failed")


def sort_key(device: DeviceState) -> tuple[int, str]:
    """Offline first, then drift/degraded/failed deploy, then everything else; by id within each."""
    if device.state == "offline":
        rank = 0
    elif needs_attention(device):
        rank = 1
    else:
        rank = 2
    return rank, device.device_id


def matches(device: DeviceState, text: str | None, group: str | None) -> bool:
    if group is not None and device.group != group:
        return False
    if not text:
        return True
    needle = text.lower()
    return any(needle in (value or "").lower() for value in (device.device_id, device.group, *device.models))


def ago(ts: float, now: float) -> str:
    if not ts:
        return "never"
    seconds = max(0.0, now - ts)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def _number(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def select(devices: Iterable[DeviceState], text: str | None = None, group: str | None = None) -> list[DeviceState]:
    return sorted((device for device in devices if matches(device, text, group)), key=sort_key)


def build_table(devices: list[DeviceState], now: float, *, limit: int | None = None, total: int | None = None,
                title: str | None = None) -> Table:
    """The table of `devices` (already filtered and sorted); a model per line when a device runs several."""
    table = Table(title=title, expand=False, pad_edge=False, header_style="bold")
    for name, justify in (("device", "left"), ("state", "left"), ("group", "left"), ("model", "left"),
                          ("backend", "left"), ("inf/s", "right"), ("p95 ms", "right"), ("dropped", "right"),
                          ("drift", "left"),
                          ("last seen", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    shown = devices if limit is None else devices[:max(limit, 0)]
    for device in shown:
        models = list(device.models.values())
        model_cells, backend_cells, rate_cells, latency_cells, drift_cells, dropped_cells = (Text() for _ in range(6))
        for index, model in enumerate(models):
            sep = "\n" if index else ""
            model_cells.append(sep + model.name + (f" {model.version}" if model.version else ""))
            backend = model.backend or "-"
            backend_cells.append(sep + (f"{backend} DEGRADED" if model.degraded else backend),
                                 style="bold yellow" if model.degraded else None)
            rate_cells.append(sep + _number(model.throughput_per_s))
            latency_cells.append(sep + _number(model.latency_p95_ms, digits=2))
            # windows or frames the model had no time for (a camera's newest frame replaces a waiting one)
            dropped_cells.append(sep + (str(model.dropped) if model.dropped else "-"))
            if model.source_state and model.source_state not in ("connected", "playing", "finished"):
                dropped_cells.append(f" {model.source_state}", style="bold red")
            drift = model.drift_state or "-"
            drift_cells.append(sep + drift + (f" ({', '.join(model.drift_top)})" if model.drift_top else ""),
                               style=DRIFT_STYLE.get(drift))
        state = Text(device.state, style=STATE_STYLE.get(device.state, ""))
        if (device.deploy or {}).get("state") == "failed":
            state.append(" deploy failed", style="bold red")
        if device.problems:
            state.append(f" ({device.problems} bad msg)", style="magenta")
        table.add_row(device.device_id, state, device.group or "-", model_cells or "-", backend_cells or "-",
                      rate_cells or "-", latency_cells or "-", dropped_cells or "-", drift_cells or "-",
                      ago(device.last_seen, now))
    hidden = len(devices) - len(shown)
    caption = f"{len(devices)} matching of {total} devices" if total is not None and total != len(devices) else ""
    if hidden:
        caption += ("; " if caption else "") + (f"{hidden} more rows below, the healthiest (narrow with --filter or "
                                                "--group, or raise --limit)")
    table.caption = caption or None
    return table


def summary(devices: list[DeviceState]) -> str:
    online = sum(device.online for device in devices)
    offline = sum(device.state == "offline" for device in devices)
    attention = sum(needs_attention(device) for device in devices)
    return f"{len(devices)} devices: {online} online, {offline} offline, {attention} drift/degraded/failed"


def render(state: FleetState, args: argparse.Namespace, limit: int | None, monitor: FleetMonitor | None = None
           ) -> Table:
    everything = state.devices()
    chosen = select(everything, args.filter, args.group)
    title = summary(everything)
    if monitor is not None and not monitor.connected:
        title += f" - not connected to {args.broker}"
    return build_table(chosen, time.time(), limit=limit, total=len(everything), title=title)


def main_watch(args: argparse.Namespace) -> int:
    state = FleetState(prefix=args.prefix, stale_after_s=args.stale_after)
    monitor = FleetMonitor(args.broker, state, prefix=args.prefix, ca_file=getattr(args, "ca_file", None))
    console = Console()
    monitor.start()
    try:
        if args.once:
            if not monitor.wait_ready(timeout=max(args.wait, 5.0)):
                print(f"edge-fleet watch: cannot reach the broker at {args.broker}", file=sys.stderr)
                return 1
            time.sleep(args.wait)
            wide = Console(width=max(console.width, 200)) if not console.is_terminal else console
            wide.print(render(state, args, args.limit, monitor))
            return 0
        deadline = None if args.duration is None else time.monotonic() + args.duration
        with Live(console=console, refresh_per_second=2, screen=False, vertical_overflow="crop") as live:
            while deadline is None or time.monotonic() < deadline:
                limit = args.limit if args.limit is not None else max(console.height - 8, 5)
                live.update(render(state, args, limit, monitor))
                time.sleep(1.0)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        monitor.stop()
