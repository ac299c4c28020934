"""kopf is pinned to one minor release; the private names the operator uses (goodmem_operator._kopf) are checked
here against the installed kopf, so an upgrade fails here, loudly, before it fails in a cluster."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import kopf
import pytest

from goodmem_operator import _kopf
from goodmem_operator.handlers import LeanMemories

pytestmark = pytest.mark.unit


def test_installed_kopf_is_the_pinned_minor_release() -> None:
    installed = version("kopf")
    assert installed.startswith(_kopf.KOPF_MINOR + "."), (
        f"kopf {installed} is installed, goodmem_operator._kopf was checked against {_kopf.KOPF_MINOR}.x: re-check "
        f"the private names there (and this test), then move the pin in pyproject.toml"
    )


def test_resource_memories_is_what_kopf_run_takes() -> None:
    # kopf.run(memories=...) must still accept one, and our subclass must still override the method kopf calls.
    assert "memories" in inspect.signature(kopf.run).parameters
    recall = inspect.signature(_kopf.ResourceMemories.recall).parameters
    assert list(recall) == ["self", "raw_body", "memobase", "noticed_by_listing", "ephemeral"], list(recall)
    assert issubclass(LeanMemories, _kopf.ResourceMemories)
