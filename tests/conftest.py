"""Shared fixtures: the sample models, built once per machine through the cache and reused by every run."""

from __future__ import annotations

import pytest

from converter.samples import SampleModel, build_sample


@pytest.fixture(scope="session")
def activity_sample() -> SampleModel:
    """The BasicMotions 1-D CNN (trains in seconds on the first run)."""
    return build_sample("activity")


@pytest.fixture(scope="session")
def digits_sample() -> SampleModel:
    """The digits ResNet (trains in about a minute on the first run)."""
    return build_sample("digits")


@pytest.fixture(scope="session")
def activity_wide_sample() -> SampleModel:
    """The same 1-D CNN made wide enough for about 1 ms per window (the daemon benchmark's model)."""
    return build_sample("activity_wide")
