"""Temperature and throttling from recorded sysfs trees, through the daemon's DeviceStats."""

from __future__ import annotations

import shutil
from pathlib import Path

from edge_runtime.board import load_board
from edge_runtime.hardware.thermal import find_thermal_zone, pi_throttling
from edge_runtime.metrics import DeviceStats
from tests.support.board_trees import board_trees

TREES = board_trees()


def device_stats(board: str, tree: str | Path) -> DeviceStats:
    spec = load_board(board)
    root = TREES / tree if isinstance(tree, str) else tree
    return DeviceStats(spec.thermal_zone, spec.throttled_file, memory_budget_mb=spec.memory_budget_mb, root=root)


def test_the_zone_is_found_by_its_type():
    assert device_stats("jetson-orin", "jetson-orin").temperature_c() == 47.5  # tj-thermal is zone 8 there
    assert device_stats("jetson-nano", "jetson-nano").temperature_c() == 38.0  # CPU-therm is zone 1
    assert device_stats("rk3588", "rk3588").temperature_c() == 71.2
    assert find_thermal_zone("cpu-thermal", TREES / "jetson-nano") is None


def test_a_zone_by_path_and_no_zone():
    assert device_stats("x86_64", "x86_64").temperature_c() == 27.8  # thermal_zone0 by path
    assert device_stats("x86_64", "generic-arm64").temperature_c() is None


def test_pi_firmware_flags_now_and_since_boot():
    pi4 = device_stats("raspberry-pi-4", "raspberry-pi-4").snapshot()
    assert pi4["temperature_c"] == 48.7
    assert pi4["throttling"] == {"source": "firmware get_throttled", "active": False, "now": [], "since_boot": [],
                                 "raw": "0x0"}
    assert pi4["memory_budget_mb"] == 512
    pi5 = device_stats("raspberry-pi-5", "raspberry-pi-5").throttling()  # the firmware node moved on the Pi 5
    assert (pi5["active"], pi5["since_boot"]) == (False, ["under-voltage", "throttled"])


def test_pi_throttled_now():
    both = ["under-voltage", "throttled"]
    assert pi_throttling(0x50005) == {"source": "firmware get_throttled", "active": True, "now": both,
                                      "since_boot": both, "raw": "0x50005"}


def test_frequency_cooling_devices_elsewhere(tmp_path):
    assert device_stats("rk3588", "rk3588").throttling() == {
        "source": "cooling devices", "active": True,
        "now": ["cpufreq-cpu4 at state 2 of 11", "cpufreq-cpu6 at state 2 of 11"],  # the fan is not throttling
    }
    tree = tmp_path / "rk"
    shutil.copytree(TREES / "rk3588", tree)
    for device in ("cooling_device1", "cooling_device2"):
        (tree / "sys/class/thermal" / device / "cur_state").write_text("0\n")
    assert device_stats("rk3588", tree).throttling() == {"source": "cooling devices", "active": False, "now": []}


def test_boards_that_expose_nothing_report_none():
    assert device_stats("jetson-orin", "jetson-orin").throttling() is None  # only a fan there
    assert device_stats("x86_64", "x86_64").throttling() is None
    snapshot = device_stats("generic-arm64", "generic-arm64").snapshot()
    assert (snapshot["temperature_c"], snapshot["throttling"]) == (None, None)
