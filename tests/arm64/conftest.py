"""tests/arm64: the device install on emulated aarch64 (`make test-arm64`; every module here carries the `arm64`
marker, which `make test` deselects). See tests/support/arm64.py."""

from __future__ import annotations

import pytest

from tests.support.arm64 import require_sysroot


@pytest.fixture(autouse=True)
def _emulated_device() -> None:
    require_sysroot()
