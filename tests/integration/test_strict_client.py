"""The strict registry client under the real reconcile, against the emulator over HTTP (issue #13).

A 3xx is never a success: before, a 301 on create gave Ready=True with nothing created, and on delete it
would have released the finalizer with the entry (and its key) left behind.
"""

from __future__ import annotations

import pytest

from goodmem_emulator import Emulator
from goodmem_operator.reconcile import LLMObject, Reconciler, ReconcileSettings, RetryLater
from goodmem_operator.registry import RegistryClient

from .conftest import FakeSecrets, after, make_llm, with_spec

pytestmark = pytest.mark.integration


def _condition(out, ctype: str) -> dict:
    return next(c for c in out.status["conditions"] if c["type"] == ctype)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_redirect_on_create_is_retried_never_ready(
    emulator: Emulator, reconciler: Reconciler, status: int
) -> None:
    emulator.set_faults(errorRate=1.0, errorStatus=status)
    obj = make_llm()
    out = await reconciler.reconcile(obj, trigger="create")
    assert out.result == "error" and out.retry_after is not None
    ready, synced = _condition(out, "Ready"), _condition(out, "Synced")
    assert ready["status"] == "False" and ready["reason"] == "Creating"
    assert synced["reason"] == "UnexpectedResponse" and f"answered {status}" in synced["message"]
    assert not any(c["type"] == "Stalled" for c in out.status["conditions"]), "retried, not permanent"
    assert emulator.records() == []
    assert [(e["method"], e["status"]) for e in emulator.stats()["log"]] == [("POST", status)], "never followed"
    emulator.clear_faults()
    healed = await reconciler.reconcile(after(obj, out))
    assert healed.result == "success" and len(emulator.records()) == 1


async def test_redirect_backoff_grows_and_is_capped(
    emulator: Emulator, registry: RegistryClient, secrets: FakeSecrets
) -> None:
    rec = Reconciler(registry, secrets, ReconcileSettings(backoff_base=1.0, backoff_cap=8.0))
    emulator.set_faults(errorRate=1.0, errorStatus=301)
    obj = make_llm()
    delays = [(await rec.reconcile(obj)).retry_after for _ in range(7)]
    assert all(d is not None for d in delays)
    assert delays[3] > delays[0] and max(delays) <= 8.0  # type: ignore[operator]


async def test_redirect_on_delete_keeps_the_finalizer(emulator: Emulator, reconciler: Reconciler) -> None:
    obj = make_llm()
    obj = after(obj, await reconciler.reconcile(obj))
    for methods in (["DELETE"], None):  # the delete itself, or the GET before it
        emulator.set_faults(errorRate=1.0, errorStatus=301, errorMethods=methods)
        with pytest.raises(RetryLater) as kept:
            await reconciler.finalize(obj)
        assert "answered 301" in str(kept.value) and kept.value.delay > 0
        assert [r["llmId"] for r in emulator.records()] == [obj.status["llmId"]], "the entry is still there"
    emulator.clear_faults()
    assert [e.reason for e in await reconciler.finalize(obj)] == ["Deleted"]
    assert emulator.records() == []


async def test_redirect_on_update_is_retried(emulator: Emulator, reconciler: Reconciler) -> None:
    obj = make_llm()
    obj = after(obj, await reconciler.reconcile(obj))
    emulator.set_faults(errorRate=1.0, errorStatus=302, errorMethods=["PUT"])
    out = await reconciler.reconcile(with_spec(obj, description="changed"))
    assert out.result == "error" and out.retry_after is not None
    assert _condition(out, "Ready")["reason"] == "UnexpectedResponse"
    assert "description" not in emulator.records()[0]


@pytest.mark.parametrize("bad", ["../../_emulator/faults", "not-a-uuid", "6f1c3a4e2b7d5e8f9a0b1c2d3e4f5a6b"])
async def test_invalid_status_llm_id_is_refused_without_a_request(
    emulator: Emulator, reconciler: Reconciler, bad: str
) -> None:
    obj = make_llm()
    obj = after(obj, await reconciler.reconcile(obj))
    emulator.reset_stats()
    tampered = LLMObject(**{**obj.__dict__, "status": {**obj.status, "llmId": bad}})
    out = await reconciler.reconcile(with_spec(tampered, description="x"))
    assert out.result == "permanent" and out.retry_after is None
    synced = _condition(out, "Synced")
    assert synced["reason"] == "InvalidLLMId" and "not a UUID" in synced["message"]
    assert sum(emulator.stats()["requests"].values()) == 0
    assert emulator.stats()["log"] == []
