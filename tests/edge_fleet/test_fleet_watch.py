"""`edge-fleet watch`: rows, order, filters, and `--once` against simulated devices on a real broker."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rich.console import Console

from edge_fleet.monitor import wait_for
from edge_fleet.state import DeviceState, ModelState
from edge_fleet.watch import ago, build_table, matches, select
from tests.support.fleet_sim import SimulatorProcess, online, running_monitor

NOW = 1_800_000_000.0


def device(device_id: str, state: str = "online", *, group: str | None = None, drift: str | None = "ok",
           degraded: bool = False, deploy: str | None = None) -> DeviceState:
    model = ModelState("activity", version="1.0.0", backend="onnxruntime", degraded=degraded, throughput_per_s=9.5,
                       latency_p95_ms=2.25, drift_state=drift, drift_top=["acc_z"] if drift == "drift" else [])
    return DeviceState(device_id, state=state, online=state == "online", group=group, models={"activity": model},
                       last_seen=NOW - 3, deploy={"state": deploy} if deploy else None)


def text(table) -> str:
    console = Console(width=220, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_offline_then_trouble_then_the_rest_each_by_id():
    fleet = [device("c-ok"), device("a-ok"), device("z-off", "offline"), device("b-drift", drift="drift"),
             device("d-degraded", degraded=True), device("e-stopped", "stopped"), device("a-off", "offline"),
             device("f-failed", deploy="failed")]
    assert [d.device_id for d in select(fleet)] == [
        "a-off", "z-off", "b-drift", "d-degraded", "f-failed", "a-ok", "c-ok", "e-stopped"]


def test_filter_matches_id_group_or_model_and_group_is_exact():
    pi = device("pi-01", group="lab")
    assert matches(pi, "PI-0", None) and matches(pi, "lab", None) and matches(pi, "activ", None)
    assert not matches(pi, "jetson", None)
    assert matches(pi, None, "lab") and not matches(pi, None, "la")
    assert [d.device_id for d in select([pi, device("j-01")], "lab")] == ["pi-01"]


def test_row_shows_state_model_backend_numbers_drift_and_last_seen():
    table = text(build_table([device("pi-01", drift="drift", degraded=True)], NOW))
    for expected in ("pi-01", "online", "activity 1.0.0", "onnxruntime DEGRADED", "9.5", "2.25", "drift (acc_z)",
                     "3 s ago"):
        assert expected in table, expected


def test_limit_says_how_many_rows_are_hidden():
    table = build_table([device(f"d{i}") for i in range(10)], NOW, limit=3, total=10)
    assert table.row_count == 3
    assert "7 more rows" in table.caption


def test_ago():
    assert (ago(0, NOW), ago(NOW - 3, NOW), ago(NOW - 600, NOW), ago(NOW - 7200, NOW), ago(NOW - 3 * 86400, NOW)) == (
        "never", "3 s ago", "10 min ago", "2 h ago", "3 d ago")


def watch(broker_url: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "edge_fleet.cli", "watch", "--broker", broker_url, "--once",
                           "--wait", "1.5", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_watch_once_prints_every_simulated_device_and_filters(broker):
    with SimulatorProcess(broker.url, 6, "--group", "lab", "--rate-hz", "2") as lab, \
            SimulatorProcess(broker.url, 3, "--id-prefix", "field", "--rate-hz", "2") as field, \
            running_monitor(broker.url) as (_, state):
        assert wait_for(lambda: online(state) == 9, 20), lab.output() + field.output()
        everything = watch(broker.url)
        for name in [f"sim-000{i}" for i in range(1, 7)] + ["field-0001", "field-0002", "field-0003"]:
            assert name in everything
        assert "9 devices: 9 online" in everything
        assert "activity 1.0.0" in everything
        lab_only = watch(broker.url, "--group", "lab")
        assert "sim-0001" in lab_only and "field-0001" not in lab_only
        filtered = watch(broker.url, "--filter", "field-0002")
        assert "field-0002" in filtered and "field-0001" not in filtered and "sim-0001" not in filtered


@pytest.mark.slow  # the fleet tool as a process, giving up on the broker after its connect timeout
def test_watch_once_without_a_broker_fails_clearly():
    done = subprocess.run([sys.executable, "-m", "edge_fleet.cli", "watch", "--broker", "mqtt://127.0.0.1:1",
                           "--once", "--wait", "0.1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "cannot reach the broker" in done.stderr
