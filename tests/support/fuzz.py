"""Hypothesis settings for the property tests, and the corpus of seed inputs (tests/corpus/).

Two profiles: `ci` (the default: `make test`, a bounded run of 40 examples per property, no deadline, since a
shared CI machine's timing is noise) and `long` (`HYPOTHESIS_PROFILE=long pytest tests/edge_runtime/test_fuzz.py`:
5,000 examples per property, for a fuzzing session). The example database stays in .cache (git-ignored); inputs
worth keeping go into tests/corpus/ by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"
_DATABASE = DirectoryBasedExampleDatabase(str(ROOT / ".cache" / "hypothesis"))

settings.register_profile("ci", max_examples=40, deadline=None, database=_DATABASE,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=5000, deadline=None, database=_DATABASE,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def corpus(kind: str) -> list[tuple[str, bytes]]:
    """(file name, bytes) of every seed input of `kind` (a folder of tests/corpus)."""
    return [(path.name, path.read_bytes()) for path in sorted((CORPUS / kind).iterdir()) if path.is_file()]
