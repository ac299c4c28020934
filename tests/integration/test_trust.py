"""Issue #13: the tenant boundary, against the emulator over HTTP.

Each test plays a move one namespace could make against an entry that is not its own (or an ambiguous
one) and checks the refusal: the condition's reason, that the message names nothing of another tenant,
and that the registry received no write.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from goodmem_emulator import Emulator
from goodmem_emulator._validation import credentials_fingerprint as registry_fingerprint
from goodmem_operator.api.mapping import OWNER_LABEL, OWNER_UID_LABEL
from goodmem_operator.reconcile import INHERITED, LLMObject, Outcome, Reconciler, ReconcileSettings
from goodmem_operator.registry import RegistryClient
from goodmem_operator.trust import grant_label

from .conftest import ADMIN_KEY, FakeSecrets, after, make_llm, with_spec, writes

pytestmark = pytest.mark.integration

SPEC = {
    "displayName": "Team A model",
    "providerType": "VLLM",
    "endpointUrl": "http://vllm-a.test:8000/v1",
    "modelIdentifier": "mistral",
}
KEY_REF = {"apiKey": {"secretKeyRef": {"name": "key", "key": "k"}}}


def synced(out: Outcome) -> dict[str, Any]:
    return next(c for c in out.status["conditions"] if c["type"] == "Synced")


def ready(out: Outcome) -> dict[str, Any]:
    return next(c for c in out.status["conditions"] if c["type"] == "Ready")


async def hand_made(registry: RegistryClient, labels: dict[str, str] | None = None, **over: Any) -> str:
    """An entry made with the registry key outside Kubernetes."""
    created = await registry.create_llm({**SPEC, "labels": dict(labels or {}), **over})
    return str(created["llmId"])


async def managed_by_a(reconciler: Reconciler, **spec: Any) -> LLMObject:
    obj = make_llm({**SPEC, **spec}, namespace="team-a", name="a-llm")
    return after(obj, await reconciler.reconcile(obj))


# -- takeover by spec.llmId ---------------------------------------------------------------------


async def test_unowned_entry_without_grant_is_not_adopted(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    llm_id = await hand_made(registry)
    emulator.reset_stats()
    evil = make_llm({**SPEC, "llmId": llm_id, "endpointUrl": "https://evil.test/v1"}, namespace="evil")
    out = await reconciler.reconcile(evil)
    assert synced(out)["reason"] == "NotGranted" and ready(out)["status"] == "False"
    assert grant_label("it", "evil") + "=adopt" in synced(out)["message"], "the message says what would allow it"
    assert writes(emulator) == {}
    assert out.retry_after is not None and out.retry_after >= 60, "re-checked slowly, never a retry storm"
    # Deleting the refused LLM never deletes the entry.
    await reconciler.finalize(after(evil, out))
    assert [r["llmId"] for r in emulator.records()] == [llm_id] and writes(emulator) == {}


async def test_orphan_grants_only_the_namespace_it_came_from(emulator: Emulator, reconciler: Reconciler) -> None:
    a = await managed_by_a(reconciler, deletionPolicy="Orphan", labels={"team": "a"})
    llm_id = a.status["llmId"]
    await reconciler.finalize(a)
    [record] = emulator.records()
    assert record["labels"] == {"team": "a", grant_label("it", "team-a"): "adopt"}
    emulator.reset_stats()

    evil = make_llm({**SPEC, "llmId": llm_id, "endpointUrl": "https://evil.test/v1"}, namespace="evil")
    out = await reconciler.reconcile(evil)
    assert synced(out)["reason"] == "NotGranted" and writes(emulator) == {}

    back = make_llm({**SPEC, "llmId": llm_id, "labels": {"team": "a"}}, namespace="team-a", name="again")
    out = await reconciler.reconcile(back)
    assert out.result == "success" and "Adopted" in [e.reason for e in out.events]
    [record] = emulator.records()
    assert record["labels"][OWNER_UID_LABEL] == back.uid
    assert grant_label("it", "team-a") not in record["labels"], "the grant is used up"


async def test_entry_of_another_namespace_is_refused_without_naming_it(
    emulator: Emulator, reconciler: Reconciler
) -> None:
    a = await managed_by_a(reconciler)
    emulator.reset_stats()
    evil = make_llm({**SPEC, "llmId": a.status["llmId"]}, namespace="evil", name="thief")
    out = await reconciler.reconcile(evil)
    assert synced(out)["reason"] == "Conflict"
    assert "team-a" not in synced(out)["message"] and "a-llm" not in synced(out)["message"]
    assert writes(emulator) == {}
    await reconciler.finalize(after(evil, out))
    assert len(emulator.records()) == 1 and writes(emulator) == {}


async def test_observe_grant_does_not_allow_adoption(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    llm_id = await hand_made(registry, {grant_label("it", "ns1"): "observe"})
    emulator.reset_stats()
    out = await reconciler.reconcile(make_llm({**SPEC, "llmId": llm_id}))
    assert synced(out)["reason"] == "NotGranted" and writes(emulator) == {}


async def test_grant_for_another_cluster_does_not_count(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    llm_id = await hand_made(registry, {grant_label("other-cluster", "ns1"): "adopt"})
    emulator.reset_stats()
    out = await reconciler.reconcile(make_llm({**SPEC, "llmId": llm_id}))
    assert synced(out)["reason"] == "NotGranted" and writes(emulator) == {}


# -- adoption never re-points kept credentials ----------------------------------------------------


async def test_adoption_that_moves_the_endpoint_needs_credentials(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient, secrets: FakeSecrets
) -> None:
    llm_id = await hand_made(
        registry,
        {grant_label("it", "ns1"): "adopt"},
        credentials={"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": "their-key"}},
    )
    emulator.reset_stats()
    moved = make_llm({**SPEC, "llmId": llm_id, "endpointUrl": "https://elsewhere.test/v1"})
    out = await reconciler.reconcile(moved)
    assert synced(out)["reason"] == "CredentialsNotSupplied" and "endpointUrl" in synced(out)["message"]
    assert writes(emulator) == {}

    secrets.data[("ns1", "key")] = {"k": "our-own-key"}
    out = await reconciler.reconcile(with_spec(after(moved, out), credentials=KEY_REF))
    assert out.result == "success"
    [record] = emulator.records()
    assert record["endpointUrl"] == "https://elsewhere.test/v1"
    ours = {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": "our-own-key"}}
    assert record["credentialsFingerprint"] == registry_fingerprint(ours), "the adopter's key replaced the kept one"


async def test_inherited_credentials_stay_pinned_to_their_endpoint(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    llm_id = await hand_made(
        registry,
        {grant_label("it", "ns1"): "adopt"},
        credentials={"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": "their-key"}},
    )
    obj = make_llm({**SPEC, "llmId": llm_id, "description": "same endpoint: fine"})
    out = await reconciler.reconcile(obj)
    assert out.result == "success" and out.status["credentialsFingerprint"] == INHERITED
    obj = after(obj, out)
    emulator.reset_stats()
    out = await reconciler.reconcile(with_spec(obj, endpointUrl="https://elsewhere.test/v1"))
    assert synced(out)["reason"] == "CredentialsNotSupplied" and writes(emulator) == {}


# -- adoptionPolicy IfMatching ---------------------------------------------------------------------


async def test_if_matching_refuses_when_entries_differ_only_in_credentials(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    grant = {grant_label("it", "ns1"): "adopt"}
    first = await hand_made(registry, grant)
    second = await hand_made(
        registry,
        grant,
        credentials={"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": "someone-elses-key"}},
    )
    emulator.reset_stats()
    out = await reconciler.reconcile(make_llm({**SPEC, "adoptionPolicy": "IfMatching"}))
    if emulator.conflict_body == "named":  # the registry said which entry conflicts: that one, and only it
        assert out.result == "success" and out.status["llmId"] == first
    else:  # a 409 that names nothing: two candidates, nothing adopted
        assert synced(out)["reason"] == "AmbiguousMatch"
        assert first in synced(out)["message"] and second in synced(out)["message"], "the candidates are listed"
        assert set(writes(emulator)) == {"POST /v1/llms"}, "the refused create is the only write"
    theirs = {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": "someone-elses-key"}}
    assert {r["llmId"]: r["credentialsFingerprint"] for r in emulator.records()}[second] == registry_fingerprint(theirs)


async def test_if_matching_adopts_the_one_granted_match_from_the_list(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    llm_id = await hand_made(registry, {grant_label("it", "ns1"): "adopt"})
    emulator.reset_stats()
    obj = make_llm({**SPEC, "adoptionPolicy": "IfMatching"})
    out = await reconciler.reconcile(obj)
    assert out.result == "success" and out.status["llmId"] == llm_id
    requests = {k: v for k, v in emulator.stats()["requests"].items() if v}
    assert requests.get("GET /v1/llms/{id}") == 1, "our own id once after the 409; the match comes from the list"
    assert requests.get("GET /v1/llms") == 1


async def test_if_matching_without_grant_adopts_nothing(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    await hand_made(registry)
    emulator.reset_stats()
    out = await reconciler.reconcile(make_llm({**SPEC, "adoptionPolicy": "IfMatching"}))
    assert synced(out)["reason"] == "NotGranted"
    assert set(writes(emulator)) == {"POST /v1/llms"}


async def test_if_matching_never_takes_another_namespaces_entry(emulator: Emulator, reconciler: Reconciler) -> None:
    a = await managed_by_a(reconciler)
    emulator.reset_stats()
    out = await reconciler.reconcile(make_llm({**SPEC, "adoptionPolicy": "IfMatching"}, namespace="evil"))
    assert synced(out)["reason"] in ("AlreadyExists", "Conflict")
    assert a.status["llmId"] not in synced(out)["message"], "another tenant's entry is not named"
    [record] = emulator.records()
    assert record["labels"][OWNER_UID_LABEL] == a.uid


async def test_if_matching_filters_by_owner(emulator: Emulator, admin: RegistryClient, secrets: FakeSecrets) -> None:
    owner_a, owner_b = str(uuid.uuid4()), str(uuid.uuid4())
    grant = {grant_label("it", "ns1"): "adopt"}
    entry_a = await hand_made(admin, grant, ownerId=owner_a)
    entry_b = await hand_made(admin, grant, ownerId=owner_b)
    rec = Reconciler(
        admin,
        secrets,
        ReconcileSettings(cluster_name="it", fingerprint_key=b"k", owner_id_grants={"ns1": frozenset({owner_b})}),
    )
    out = await rec.reconcile(make_llm({**SPEC, "adoptionPolicy": "IfMatching", "ownerId": owner_b}))
    assert out.result == "success" and out.status["llmId"] == entry_b
    assert {r["llmId"]: r["labels"].get(OWNER_UID_LABEL) for r in emulator.records()}[entry_a] is None, (
        "owner A's entry untouched"
    )


# -- ObserveOnly -----------------------------------------------------------------------------------


def observe(llm_id: str, namespace: str = "ns1") -> LLMObject:
    obj = make_llm(namespace=namespace)
    return LLMObject(**{**obj.__dict__, "spec": {"managementPolicy": "ObserveOnly", "llmId": llm_id}})


async def test_observe_only_needs_a_grant(emulator: Emulator, reconciler: Reconciler, registry: RegistryClient) -> None:
    llm_id = await hand_made(registry, {"team": "x"})
    out = await reconciler.reconcile(observe(llm_id))
    assert synced(out)["reason"] == "NotGranted" and "observed" not in out.status
    assert writes(emulator) == {"POST /v1/llms": 1}, "only the hand-made create"


async def test_observe_only_of_another_namespaces_entry_shows_nothing_of_it(
    emulator: Emulator, reconciler: Reconciler
) -> None:
    a = await managed_by_a(reconciler, labels={"secret-project": "x"})
    out = await reconciler.reconcile(observe(a.status["llmId"], namespace="evil"))
    assert synced(out)["reason"] == "Conflict" and "observed" not in out.status
    assert "team-a" not in str(out.status) and "secret-project" not in str(out.status)


async def test_observe_only_with_grant_mirrors_without_marks_or_owner(
    emulator: Emulator, reconciler: Reconciler, registry: RegistryClient
) -> None:
    llm_id = await hand_made(
        registry, {"team": "x", grant_label("it", "ns1"): "observe", grant_label("it", "other"): "adopt"}
    )
    out = await reconciler.reconcile(observe(llm_id))
    assert ready(out)["status"] == "True"
    assert out.status["observed"]["labels"] == {"team": "x"}, "no grants or ownership marks copied"
    assert "ownerId" not in out.status["observed"]


async def test_observe_only_in_the_same_namespace_sees_the_owner(emulator: Emulator, reconciler: Reconciler) -> None:
    a = await managed_by_a(reconciler)
    out = await reconciler.reconcile(observe(a.status["llmId"], namespace="team-a"))
    assert ready(out)["status"] == "True" and out.status["observed"]["ownerId"]
    assert OWNER_LABEL not in out.status["observed"]["labels"]


# -- spec.ownerId only by permission ------------------------------------------------------------------


async def test_owner_id_refused_unless_allowed(emulator: Emulator, secrets: FakeSecrets) -> None:
    owner = str(uuid.uuid4())
    async with RegistryClient(emulator.base_url, ADMIN_KEY, timeout=5.0) as admin_client:
        plain = Reconciler(admin_client, secrets, ReconcileSettings(cluster_name="it", fingerprint_key=b"k"))
        obj = make_llm({**SPEC, "ownerId": owner})
        emulator.reset_stats()
        out = await plain.reconcile(obj)
        assert synced(out)["reason"] == "OwnerIdNotAllowed" and out.retry_after is None
        assert "--allow-owner-id ns1=" in synced(out)["message"]
        assert not any(emulator.stats()["requests"].values()), "not a single registry request"

        allowed = Reconciler(
            admin_client,
            secrets,
            ReconcileSettings(cluster_name="it", fingerprint_key=b"k", owner_id_grants={"ns1": frozenset({owner})}),
        )
        out = await allowed.reconcile(obj)
        assert out.result == "success"
        [record] = emulator.records()
        assert record["ownerId"] == owner
        other_ns = make_llm({**SPEC, "ownerId": owner, "endpointUrl": "http://b.test/v1"}, namespace="ns2")
        assert synced(await allowed.reconcile(other_ns))["reason"] == "OwnerIdNotAllowed"
