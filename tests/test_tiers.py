"""The unit tier cannot start mosquitto, and a tier must be one of the registered ones (tests/conftest.py,
tests/support/tiers.py)."""

from __future__ import annotations

import pytest

from tests.support.broker import MosquittoBroker
from tests.support.tiers import tier


def test_a_unit_test_that_starts_mosquitto_fails_with_what_to_mark(request):
    assert request.node.get_closest_marker("unit") is not None
    never_started = MosquittoBroker.__new__(MosquittoBroker)  # no config, no port: start() must refuse before both
    with pytest.raises(RuntimeError, match="not a broker test: mark it @pytest.mark.broker"):
        never_started.start()


def test_an_unknown_tier_is_refused():
    with pytest.raises(ValueError, match="unknown test tier"):
        tier("fast")
