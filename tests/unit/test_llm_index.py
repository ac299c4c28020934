"""Our own Secret -> LLM map (kopf's index readiness gate is quadratic at startup, see llm_index.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from goodmem_operator.llm_index import LLMIndex, secret_of, snapshot
from goodmem_operator.main import QuietIndexLog

pytestmark = pytest.mark.unit


def body(
    name: str, secret: str | None = None, *, namespace: str = "ns", secret_ns: str | None = None, generation: int = 1
) -> dict[str, Any]:
    spec: dict[str, Any] = {"displayName": name}
    if secret is not None:
        ref: dict[str, Any] = {"name": secret, "key": "api-key"}
        if secret_ns is not None:
            ref["namespace"] = secret_ns
        spec["credentials"] = {"apiKey": {"secretKeyRef": ref}}
    return {
        "apiVersion": "goodmem.ai/v1alpha1",
        "kind": "LLM",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "generation": generation,
            "managedFields": [{"big": "x" * 100}],
        },
        "spec": spec,
        "status": {"llmId": f"id-{name}"},
    }


def test_users_of_a_secret_and_only_those() -> None:
    index = LLMIndex()
    for b in (body("a", "key"), body("b", "key"), body("c", "other"), body("d"), body("e", "key", namespace="ns2")):
        assert index.observe(b, deleted=False) is None
    assert index.users("ns", "key") == ["a", "b"]
    assert index.users("ns", "other") == ["c"]
    assert index.users("ns2", "key") == ["e"]
    assert index.users("ns", "nobody-uses-it") == []
    assert index.referenced("ns", "key") and not index.referenced("ns", "nobody-uses-it")
    assert len(index) == 5


def test_cross_namespace_reference_is_never_indexed() -> None:
    index = LLMIndex()
    index.observe(body("thief", "key", secret_ns="victim"), deleted=False)
    assert not index.referenced("victim", "key") and index.users("victim", "key") == []
    assert secret_of({"credentials": {"apiKey": {"secretKeyRef": {"name": "k", "namespace": "ns"}}}}, "ns") == (
        "ns",
        "k",
    )
    assert secret_of({"credentials": {"apiKey": {"secretRef": {"uri": "vault://x"}}}}, "ns") is None
    assert secret_of(None, "ns") is None


def test_switching_and_deleting_release_a_secret_no_one_uses() -> None:
    index = LLMIndex()
    index.observe(body("a", "old"), deleted=False)
    index.observe(body("b", "old"), deleted=False)
    assert index.observe(body("a", "new", generation=2), deleted=False) is None, "b still uses old"
    assert index.users("ns", "old") == ["b"] and index.users("ns", "new") == ["a"]
    assert index.observe(body("b", "new", generation=2), deleted=False) == ("ns", "old")
    assert not index.referenced("ns", "old")
    assert index.observe(body("a", "new"), deleted=True) is None, "b still uses new"
    assert index.body("ns", "a") is None
    assert index.observe(body("b", "new"), deleted=True) == ("ns", "new")
    assert len(index) == 0 and not index.referenced("ns", "new")
    assert index.observe(body("b", "new"), deleted=True) is None, "a repeated DELETED event is harmless"


def test_dropping_the_reference_releases_it() -> None:
    index = LLMIndex()
    index.observe(body("a", "key"), deleted=False)
    assert index.observe(body("a", None, generation=2), deleted=False) == ("ns", "key")
    assert index.users("ns", "key") == [] and index.body("ns", "a")["metadata"]["generation"] == 2


def test_body_is_the_latest_plain_snapshot() -> None:
    index = LLMIndex()
    index.observe(body("a", "key", generation=1), deleted=False)
    index.observe(body("a", "key", generation=3), deleted=False)
    latest = index.body("ns", "a")
    assert latest is not None and latest["metadata"]["generation"] == 3
    assert "managedFields" not in latest["metadata"]
    assert latest == snapshot(body("a", "key", generation=3))


def test_quiet_index_log_drops_only_the_index_success_line() -> None:
    f = QuietIndexLog()

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, msg, None, None)

    assert not f.filter(record("Handler 'llm-index' succeeded."))
    assert f.filter(record("Handler 'reconcile' succeeded."))
    assert f.filter(record("Handler 'llm-index' failed with an exception and will try again in 60 seconds: x"))


async def test_kopf_keeps_no_memory_for_secrets_no_llm_uses() -> None:
    from goodmem_operator.handlers import LeanMemories, Memo, Runtime
    from goodmem_operator.secrets import SecretCache

    memo = Memo()  # what kopf.run(memo=...) gets; kopf passes it to recall() as `memobase`
    memories = LeanMemories()

    def secret(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "ns", "uid": f"s-{name}"}}

    async def kept(raw: dict[str, Any]) -> bool:  # kept: the same memory comes back on the next event
        return await memories.recall(raw, memobase=memo) is await memories.recall(raw, memobase=memo)

    assert await kept(secret("early")), "before startup nothing is known: kopf's default"
    rt = Runtime(reconciler=None, secret_cache=SecretCache(), status_writer=None)  # type: ignore[arg-type]
    memo.runtime = rt  # the startup handler's doing
    rt.index.observe(body("a", "used"), deleted=False)
    assert await kept(secret("used"))
    assert not await kept(secret("unrelated"))
    assert await kept(body("a", "used")), "LLMs always keep their memory"
    rt.secret_cache.observe("ns", "cached", {"data": {}}, deleted=False, referenced=True)
    assert await kept(secret("cached")), "still cached: its next event must reach the handler to drop it"
