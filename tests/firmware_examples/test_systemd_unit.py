"""The daemon's systemd unit: `systemd-analyze verify` without a single warning, the exposure score of
`systemd-analyze security --offline=yes` as the README records it, and what the unit must say."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.firmware_examples.systemd_check import exposure, recorded_exposure, verify

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware_examples"
UNITS = [FIRMWARE / "systemd" / "edge-runtime.service", FIRMWARE / "jetson" / "edge-runtime-jetson.service"]
README = FIRMWARE / "systemd" / "README.md"


@pytest.mark.slow
@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_systemd_analyze_verify_is_silent(unit, tmp_path):
    result = verify(unit, tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.slow
def test_verify_reports_an_unknown_key_on_stderr(tmp_path):
    broken = tmp_path / "edge-runtime.service"
    broken.write_text(UNITS[0].read_text().replace("WatchdogSec=30", "WatchdogSecs=30"))
    result = verify(broken, tmp_path / "root")
    assert "Unknown key 'WatchdogSecs'" in result.stderr  # the exit code alone would have passed it


@pytest.mark.slow
@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_the_exposure_score_is_the_one_in_the_readme(unit, tmp_path):
    assert exposure(unit, tmp_path) == recorded_exposure(README, unit.name)


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_notify_watchdog_restart_own_user_and_hardening(unit):
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in unit.read_text().splitlines()
             if "=" in line and not line.startswith("#")}
    assert lines["Type"] == "notify" and int(lines["WatchdogSec"]) > 0
    assert lines["Restart"] == "on-failure" and lines["User"] == "edge-runtime"
    for option in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictNamespaces"):
        assert option in lines, option
    assert lines["CapabilityBoundingSet"] == ""
    assert "ProcSubset" not in lines  # it hides /proc/cpuinfo: onnxruntime and LiteRT crash on ARM without it
