"""Fixtures for the device-side tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.broker import MosquittoBroker


@pytest.fixture
def broker() -> Iterator[MosquittoBroker]:
    """A fresh mosquitto on a free loopback port, stopped (and its temp dir removed) after the test."""
    with MosquittoBroker() as running:
        yield running
