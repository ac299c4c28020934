"""kopf is pinned to one minor release; the private names the operator uses (goodmem_operator._kopf) are checked
here against the installed kopf, so an upgrade fails here, loudly, before it fails in a cluster."""

from __future__ import annotations

import dataclasses
import inspect
from importlib.metadata import version

import kopf
import pytest

from goodmem_operator import _kopf
from goodmem_operator.handlers import LeanMemories, Memo

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


async def test_each_objects_memo_is_a_shallow_copy_of_the_one_given_to_kopf_run() -> None:
    """The handlers share one Runtime through kopf's memo (`Memo.runtime`): that holds only while kopf gives each
    object a shallow copy of the memo passed to kopf.run (as `memobase`), of the same class."""
    assert "memo" in inspect.signature(kopf.run).parameters
    runtime = object()
    memo = Memo(runtime=runtime)
    raw = {"apiVersion": "goodmem.ai/v1alpha1", "kind": "LLM", "metadata": {"name": "a", "namespace": "n", "uid": "u"}}
    memory = await LeanMemories().recall(raw, memobase=memo)
    assert isinstance(memory, _kopf.ResourceMemory)
    assert isinstance(memory.memo, Memo) and memory.memo is not memo and memory.memo.runtime is runtime


def test_kopf_revises_namespaces_through_the_name_the_operator_replaces() -> None:
    """`_kopf.replace_namespace_revision` swaps `observation.revise_namespaces`: kopf's namespace observer must still
    look it up by that module-global name, with the keywords `watching.NamespaceWatch.revise` takes."""
    from goodmem_operator import watching

    observation = _kopf._observation
    assert list(inspect.signature(observation.revise_namespaces).parameters) == list(
        inspect.signature(watching.NamespaceWatch().revise).parameters
    )
    for caller in (observation.namespace_observer, observation.process_discovered_namespace_event):
        assert "revise_namespaces" in caller.__code__.co_names, caller
    assert {f.name for f in dataclasses.fields(_kopf.Insights)} >= {"namespaces"}
