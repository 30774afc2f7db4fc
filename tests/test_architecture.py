"""The import-linter contracts in pyproject.toml hold, and they fail when someone breaks the architecture.

`make lint` runs them on the tree; here they also run on a copy of the tree with a violation planted, so a contract
that was mistyped (and so checks nothing) fails this test instead of passing quietly.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_runtime", "edge_fleet", "converter", "sample_models")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _copy_tree(target: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def _lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")], cwd=tree,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(tree), "PATH": ""})


@pytest.fixture(scope="module")
def clean_tree(tmp_path_factory) -> Path:
    return _copy_tree(tmp_path_factory.mktemp("clean"))


def test_the_tree_keeps_every_contract(clean_tree):
    done = _lint(clean_tree)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout and "KEPT" in done.stdout


@pytest.mark.parametrize(("planted", "contract"), [
    ({"edge_runtime/_planted.py": "import converter.cli\n"},
     "The device core never imports the converter, the fleet tool or the sample training code"),
    ({"edge_runtime/_planted.py": "import edge_fleet.monitor\n"},
     "The device core never imports the converter, the fleet tool or the sample training code"),
    ({"edge_runtime/_planted.py": "import onnx\n"}, "The device core never imports workstation libraries"),
    ({"edge_fleet/_planted.py": "import converter.pipeline\n"},
     "The fleet tool never imports the converter or the sample training code"),
    ({"converter/_planted.py": "import edge_fleet.deploy\n"},
     "The converter never imports the fleet tool or the sample training code"),
    ({"edge_runtime/sources/_planted.py": "import edge_runtime.backends.onnxruntime\n"},
     "The device runtime is layered"),
    ({"edge_runtime/contract/_planted.py": "import edge_runtime.config\n"}, "The device runtime is layered"),
    ({"edge_runtime/model_worker.py": "import edge_runtime.control.models\n"}, "The device runtime is layered"),
    ({"edge_runtime/_planted_a.py": "from edge_runtime import _planted_b\n",
      "edge_runtime/_planted_b.py": "from edge_runtime import _planted_a\n"},
     "No import cycles between the modules of a package"),
])
def test_a_planted_violation_breaks_its_contract(tmp_path, planted, contract):
    tree = _copy_tree(tmp_path)
    for name, text in planted.items():
        path = tree / name
        path.write_text((path.read_text() if path.exists() else "") + text)  # appended to a real module
    done = _lint(tree)
    assert done.returncode != 0, done.stdout
    broken = " ".join(done.stdout.split("Broken contracts")[-1].split())  # the report wraps long names
    assert contract in broken, done.stdout
