"""The JetPack 6 setup script: shellcheck-clean, and it installs what the jetson-orin board file expects."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "firmware_examples" / "jetson" / "setup-jetpack6.sh"


def shellcheck(script: Path) -> subprocess.CompletedProcess:
    found = shutil.which("shellcheck")
    assert found, "shellcheck is missing: `make firmware-tools` installs it (Debian package shellcheck)"
    return subprocess.run([found, "--severity=style", str(script)], capture_output=True, text=True)


def test_shellcheck_passes():
    result = shellcheck(SCRIPT)
    assert result.returncode == 0, result.stdout


def test_shellcheck_catches_an_unquoted_variable(tmp_path):
    broken = tmp_path / "broken.sh"
    broken.write_text(SCRIPT.read_text().replace('install -m 0644 "$CONFIG"', 'install -m 0644 $CONFIG'))
    result = shellcheck(broken)
    assert result.returncode != 0 and "SC2086" in result.stdout


def test_the_script_matches_the_board_file_and_its_unit():
    text = SCRIPT.read_text()
    board = yaml.safe_load((REPO / "device_configs" / "jetson-orin.yaml").read_text())
    assert f"ENGINE_CACHE={board['onnxruntime']['tensorrt']['trt_engine_cache_path']}" in text
    assert board["detect"]["tegra_release"] == ["R36"] and '[ "$release" = 36 ]' in text
    assert "edge-runtime-jetson.service" in text and (SCRIPT.parent / "edge-runtime-jetson.service").is_file()
    assert '"$PREFIX/bin/pip" install --quiet edge-runtime\n' in text  # not [onnx]: it would replace the GPU build
