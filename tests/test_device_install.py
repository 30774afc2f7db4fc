"""The device install on its own: the wheel a board gets, in an environment with nothing else.

`make device-venv` creates `.cache/device-venv` with `pip install '.[onnx]'` (the device runtime and onnxruntime,
nothing of the converter or the fleet tool). Here the wheel is rebuilt from this tree and reinstalled there without
its dependencies, so the test sees the current code, offline. Then, in that environment:
`edge-runtime check` loads and verifies a real bundle, the workstation tools answer with the extra to install,
and the device core's imports pull in nothing from the converter or the fleet tool.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.daemon import write_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DEVICE_VENV = ROOT / ".cache" / "device-venv"
BIN = DEVICE_VENV / "bin"


@pytest.fixture(scope="module")
def device_install(tmp_path_factory) -> Path:
    """The device environment with this tree's wheel installed; fails (not skips) without `make device-venv`."""
    if not (DEVICE_VENV / ".installed").exists():
        pytest.fail(f"{DEVICE_VENV} is missing: run `make device-venv` (make test does)")
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(ROOT)], check=True, timeout=300)
    (wheel,) = wheels.glob("edge_runtime-*.whl")
    subprocess.run([str(BIN / "pip"), "install", "--quiet", "--no-deps", "--no-index", "--force-reinstall",
                    str(wheel)], check=True, timeout=300)
    return wheel


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH or editable paths from the test environment leak into the device environment."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=_clean_env())


def test_the_wheel_ships_the_tools_but_not_the_training_code(device_install):
    names = zipfile.ZipFile(device_install).namelist()
    assert any(name.startswith("edge_runtime/") for name in names)
    assert any(name.startswith("edge_runtime/device_configs/") for name in names)
    assert any(name.startswith("edge_fleet/") for name in names)
    assert not any(name.startswith(("sample_models/", "tests/", "benchmarks/")) for name in names)
    assert not any(name.startswith("converter/samples/") for name in names)


def test_the_device_environment_has_no_workstation_packages(device_install, tmp_path):
    done = _run(BIN / "python", "-c", "import importlib.util as u; print([m for m in "
                "('onnx', 'onnxslim', 'rich', 'torch', 'prometheus_client', 'sample_models') if u.find_spec(m)])",
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_check_verifies_a_real_bundle(device_install, tmp_path, activity_bundle, activity_recording):
    config = write_config(tmp_path / "device.yaml", broker_url="mqtt://127.0.0.1:1", bundle=activity_bundle,
                          source={"type": "replay", "path": str(activity_recording)})
    done = _run(BIN / "edge-runtime", "check", config, cwd=tmp_path)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "golden output reproduced" in text and "onnxruntime:CPUExecutionProvider ok" in text
    assert "source replay: ok" in text


def test_the_device_core_imports_nothing_of_the_workstation(device_install, tmp_path):
    script = ("import sys, edge_runtime.cli, edge_runtime.daemon, edge_runtime.model_loader, edge_runtime.config; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('converter', 'edge_fleet', 'sample_models', 'onnx', 'rich', 'torch')))")
    done = _run(BIN / "python", "-c", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(("tool", "args", "extra"), [
    ("edge-convert", ("model.onnx", "--target", "x86_64"), "converter"),
    ("edge-fleet", ("watch", "--once"), "fleet"),
])
def test_workstation_tools_name_the_extra_in_one_line(device_install, tmp_path, tool, args, extra):
    done = _run(BIN / tool, *args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"pip install 'edge-runtime[{extra}]'" in lines[0] and "Traceback" not in done.stderr
