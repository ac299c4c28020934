"""Reliability scenarios (issue #8) run on the session's control plane, emulator and operator
(fixtures in tests/conftest.py, shared with tests/e2e)."""

from __future__ import annotations

import pytest

from goodmem_devcluster import ControlPlane

from .support import Api


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Api:
    return Api(control_plane)
