"""Issue #5 behaviours of the reconcile against the emulator: policies, ownership, adoption, observe-only."""

from __future__ import annotations

import pytest

from goodmem_emulator import Emulator
from goodmem_operator.api.mapping import OWNER_LABEL, OWNER_UID_LABEL
from goodmem_operator.reconcile import Reconciler
from goodmem_operator.registry import RegistryClient
from goodmem_operator.trust import grant_label

from .conftest import after, make_llm, writes

pytestmark = pytest.mark.integration

SPEC = {
    "displayName": "Shared",
    "providerType": "VLLM",
    "endpointUrl": "http://vllm.test:8000/v1",
    "modelIdentifier": "mistral",
}


GRANT = {grant_label("it", "ns1"): "adopt"}  # what the registry key holder writes to let namespace ns1 adopt


async def _existing(registry: RegistryClient, *, labels: dict[str, str] | None = None, **over: object) -> str:
    created = await registry.create_llm({**SPEC, "labels": {"origin": "hand-made", **GRANT, **(labels or {})}, **over})
    return str(created["llmId"])


async def test_orphan_leaves_entry_and_removes_ownership(emulator: Emulator, reconciler: Reconciler) -> None:
    obj = make_llm({"labels": {"team": "a"}, "deletionPolicy": "Orphan"})
    obj = after(obj, await reconciler.reconcile(obj))
    events = await reconciler.finalize(obj)
    assert [e.reason for e in events] == ["Orphaned"]
    [record] = emulator.records()
    assert record["labels"] == {"team": "a", grant_label("it", "ns1"): "adopt"}, (
        "no ownership marks left behind; a grant for the namespace it came from"
    )


async def test_operator_wide_default_deletion_policy(emulator: Emulator, registry: RegistryClient, secrets) -> None:
    from goodmem_operator.reconcile import ReconcileSettings

    rec = Reconciler(registry, secrets, ReconcileSettings(default_deletion_policy="Orphan"))
    obj = make_llm()
    obj = after(obj, await rec.reconcile(obj))
    await rec.finalize(obj)
    assert len(emulator.records()) == 1


async def test_adopt_existing_entry_by_llm_id(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    llm_id = await _existing(registry)
    emulator.reset_stats()
    obj = make_llm({**SPEC, "llmId": llm_id, "description": "now managed"})
    out = await reconciler.reconcile(obj)
    assert out.result == "success" and out.status["llmId"] == llm_id
    assert "Adopted" in [e.reason for e in out.events]
    assert writes(emulator) == {"PUT /v1/llms/{id}": 1}, "adoption updates, never creates or deletes"
    [record] = emulator.records()
    assert record["description"] == "now managed" and record["labels"][OWNER_UID_LABEL] == obj.uid
    assert "origin" not in record["labels"], "labels now follow the spec"
    assert grant_label("it", "ns1") not in record["labels"], "the grant is used up by the adoption"


async def test_duplicate_never_adopted_by_default(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    llm_id = await _existing(registry)
    out = await reconciler.reconcile(make_llm(SPEC))
    synced = next(c for c in out.status["conditions"] if c["type"] == "Synced")
    assert synced["reason"] == "AlreadyExists" and llm_id in synced["message"]
    assert len(emulator.records()) == 1


async def test_duplicate_adopted_if_matching(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    llm_id = await _existing(registry)
    obj = make_llm({**SPEC, "adoptionPolicy": "IfMatching"})
    out = await reconciler.reconcile(obj)
    assert out.result == "success" and out.status["llmId"] == llm_id
    assert [r["llmId"] for r in emulator.records()] == [llm_id]
    obj = after(obj, out)
    assert (await reconciler.reconcile(obj, trigger="drift")).result == "noop"


async def test_conflict_between_two_resources_claiming_one_entry(emulator: Emulator, reconciler: Reconciler) -> None:
    first = make_llm(name="first")
    first = after(first, await reconciler.reconcile(first))
    llm_id = first.status["llmId"]
    second = make_llm({"llmId": llm_id, "displayName": "mine now"}, name="second")
    emulator.reset_stats()
    out = await reconciler.reconcile(second)
    synced = next(c for c in out.status["conditions"] if c["type"] == "Synced")
    assert synced["reason"] == "Conflict" and "ns1/first" in synced["message"]
    assert writes(emulator) == {}
    # Deleting the loser never deletes the winner's entry.
    await reconciler.finalize(after(second, out))
    assert [r["llmId"] for r in emulator.records()] == [llm_id]
    assert emulator.records()[0]["labels"][OWNER_LABEL] == "it/ns1/first"


async def test_observe_only_mirrors_and_never_writes(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    llm_id = await _existing(registry)
    emulator.reset_stats()
    obj = make_llm(spec=None)
    obj = obj.__class__(**{**obj.__dict__, "spec": {"managementPolicy": "ObserveOnly", "llmId": llm_id}})
    out = await reconciler.reconcile(obj)
    assert out.status["observed"]["displayName"] == "Shared"
    assert out.status["observed"]["labels"] == {"origin": "hand-made"}, "never the operator's own marks or grants"
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["reason"] == "Observed"
    await reconciler.finalize(after(obj, out))
    assert writes(emulator) == {} and len(emulator.records()) == 1


async def test_observe_only_missing_entry(emulator: Emulator, reconciler: Reconciler) -> None:
    obj = make_llm(spec=None)
    obj = obj.__class__(
        **{**obj.__dict__, "spec": {"managementPolicy": "ObserveOnly", "llmId": "00000000-0000-4000-8000-000000000001"}}
    )
    out = await reconciler.reconcile(obj)
    assert next(c for c in out.status["conditions"] if c["type"] == "Ready")["reason"] == "NotFound"
    assert emulator.records() == []
