"""The operator's runner: the event loop it hands to kopf."""

from __future__ import annotations

import sys

import pytest

from goodmem_operator import main

pytestmark = pytest.mark.unit


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not a dependency on Windows")
def test_the_operator_runs_on_uvloop_where_it_is_installed() -> None:
    import uvloop

    loop = main.event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        assert loop is not None
        loop.close()


def test_without_uvloop_kopf_gets_no_loop_and_uses_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now raises ImportError
    assert main.event_loop() is None
