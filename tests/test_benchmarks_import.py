"""Every benchmark script still imports: they are run by hand (make bench), so a renamed module would otherwise
only be noticed by the next person who measures something."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.stem)
def test_benchmark_imports(path):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as `import` does: dataclasses resolve their annotations through it
    try:
        spec.loader.exec_module(module)  # the scripts run only under `if __name__ == "__main__"`
    finally:
        del sys.modules[spec.name]
