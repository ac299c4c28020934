"""Reliability scenarios (issue #8) run on the session's control plane, emulator and operator
(fixtures in tests/conftest.py, shared with tests/e2e)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from goodmem_devcluster import ControlPlane

from . import support
from .support import Api


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Api:
    return Api(control_plane)


@pytest.fixture(autouse=True)
def _scenario_clock() -> Iterator[None]:
    """The scenario's wall time goes into its summary (support.write_summary: scenario_s)."""
    support.scenario_started = time.monotonic()
    yield
    support.scenario_started = None
