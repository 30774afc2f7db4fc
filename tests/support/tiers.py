"""Test tiers: `unit`, `broker`, `browser`, `slow` (registered in pyproject.toml, documented in the README).

A fixture that makes every test using it a broker, browser or slow test says so where it is defined:

    @pytest.fixture(scope="session")
    @tier("slow")
    def activity_sample(): ...

tests/conftest.py gives each collected test the tiers of every fixture it uses, directly or through other fixtures,
keeps the tier markers written on the test itself, and marks every test left without one `unit`. So `pytest -m unit`
runs the tests that neither train or convert a model, nor talk to mosquitto, nor drive Chromium, nor wait seconds.
A test that starts mosquitto itself is marked `@pytest.mark.broker` by hand; tests/conftest.py makes a broker
started from any other test fail, so a missing marker cannot hide a broker test in the unit tier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

TIERS = ("broker", "browser", "slow")
UNIT = "unit"
ATTRIBUTE = "_test_tiers"

Function = TypeVar("Function", bound=Callable)


def tier(*names: str) -> Callable[[Function], Function]:
    """Declare that a fixture puts every test that uses it into `names` (put it under `@pytest.fixture`)."""
    unknown = set(names) - set(TIERS)
    if unknown or not names:
        raise ValueError(f"unknown test tier {sorted(unknown)}; the tiers are {TIERS}")

    def declare(fixture_function: Function) -> Function:
        setattr(fixture_function, ATTRIBUTE, (*getattr(fixture_function, ATTRIBUTE, ()), *names))
        return fixture_function

    return declare


def declared_tiers(fixture_function: Callable) -> tuple[str, ...]:
    return getattr(fixture_function, ATTRIBUTE, ())
