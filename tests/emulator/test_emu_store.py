"""The pure registry store: ownership, idempotency, duplicates, timestamps."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from goodmem_emulator import LLMStore, Principal, owner_id_for_key
from goodmem_emulator._store import AlreadyExists, NotFound, PermissionDenied, render_llm
from goodmem_emulator._validation import (
    ListFilters,
    ValidationError,
    credentials_fingerprint,
    validate_create_request,
    validate_update_request,
)

from .helpers import SECRET, api_key_credentials, llm_body

pytestmark = pytest.mark.unit

ALICE = Principal(owner_id_for_key("alice"))
BOB = Principal(owner_id_for_key("bob"))
ADMIN = Principal(owner_id_for_key("root"), is_admin=True)
UUID = "550e8400-e29b-41d4-a716-446655440000"


@pytest.fixture
def store() -> LLMStore:
    ticks = itertools.count(1_000)
    return LLMStore(clock=lambda: next(ticks))


def create(store: LLMStore, principal: Principal = ALICE, **overrides: Any) -> dict[str, Any]:
    llm, _ = store.create(principal, validate_create_request(llm_body(**overrides)))
    return llm


def test_owner_id_is_a_stable_uuid_per_key() -> None:
    assert owner_id_for_key("alice") == owner_id_for_key("alice") != owner_id_for_key("bob")
    assert len(owner_id_for_key("alice")) == 36


def test_create_sets_owner_audit_fields_and_timestamps(store: LLMStore) -> None:
    llm = create(store)
    assert llm["ownerId"] == llm["createdById"] == llm["updatedById"] == ALICE.id
    assert llm["createdAt"] == llm["updatedAt"] == 1000
    assert "credentials" not in llm


def test_create_for_another_owner_needs_admin(store: LLMStore) -> None:
    with pytest.raises(PermissionDenied):
        create(store, ALICE, ownerId=BOB.id)
    with pytest.raises(PermissionDenied):  # even naming oneself needs CREATE_LLM_ANY
        create(store, ALICE, ownerId=ALICE.id)
    llm = create(store, ADMIN, ownerId=BOB.id)
    assert llm["ownerId"] == BOB.id and llm["createdById"] == ADMIN.id


def test_llm_id_in_use_is_409_naming_it(store: LLMStore) -> None:
    create(store, llmId=UUID)
    with pytest.raises(AlreadyExists) as info:  # even with a different identity, or another owner
        create(store, BOB, llmId=UUID, modelIdentifier="other")
    assert info.value.existing_llm_id == UUID and info.value.reason == "LLM_ID_IN_USE"


def test_duplicate_identity_is_per_owner_and_uses_canonical_url(store: LLMStore) -> None:
    first = create(store, credentials=api_key_credentials())
    with pytest.raises(AlreadyExists) as info:
        create(
            store,
            displayName="other name",
            endpointUrl="HTTPS://API.OPENAI.COM:443/v1/",
            credentials=api_key_credentials(),
            labels={"x": "y"},
        )
    assert info.value.existing_llm_id == first["llmId"] and info.value.reason == "DUPLICATE_IDENTITY"
    # Another owner may register the same identity.
    create(store, BOB, credentials=api_key_credentials())
    # Any identity component that differs makes it distinct.
    create(store, credentials=api_key_credentials("another-secret"))
    create(store)  # no credentials
    create(store, apiPath="/v2/chat")
    create(store, modelIdentifier="gpt-4o")
    create(store, providerType="LITELLM_PROXY", credentials=api_key_credentials())
    create(store, endpointUrl="https://api.openai.com/v2", credentials=api_key_credentials())
    assert len(store) == 8


def test_get_permissions_and_credentials(store: LLMStore) -> None:
    llm = create(store, credentials=api_key_credentials())
    assert store.get(ALICE, llm["llmId"]) == llm
    with pytest.raises(PermissionDenied):
        store.get(BOB, llm["llmId"])
    with pytest.raises(PermissionDenied):
        store.get(ALICE, llm["llmId"], include_credentials=True)
    full = store.get(ADMIN, llm["llmId"], include_credentials=True)
    assert full["credentials"]["apiKey"]["inlineSecret"] == SECRET
    with pytest.raises(NotFound):
        store.get(ADMIN, UUID)


def test_list_visibility_and_filters(store: LLMStore) -> None:
    a1 = create(store, labels={"env": "prod", "team": "ai"})
    a2 = create(store, modelIdentifier="m2", providerType="VLLM", labels={"env": "prod"})
    b1 = create(store, BOB, labels={"env": "prod"})
    ids = lambda llms: [x["llmId"] for x in llms]  # noqa: E731
    assert ids(store.list(ALICE)) == [a1["llmId"], a2["llmId"]]
    assert ids(store.list(ALICE, ListFilters(owner_id=BOB.id))) == ids(store.list(ALICE))
    assert ids(store.list(ADMIN)) == [a1["llmId"], a2["llmId"], b1["llmId"]]
    assert ids(store.list(ADMIN, ListFilters(owner_id=BOB.id))) == [b1["llmId"]]
    assert ids(store.list(ALICE, ListFilters(provider_type="VLLM"))) == [a2["llmId"]]
    assert ids(store.list(ALICE, ListFilters(labels=(("env", "prod"), ("team", "ai"))))) == [a1["llmId"]]
    assert ids(store.list(ALICE, ListFilters(labels=(("env", "prod"), ("env", "dev"))))) == []
    assert all("credentials" not in x for x in store.list(ADMIN))


def update(store: LLMStore, llm_id: str, body: dict[str, Any], principal: Principal = ALICE) -> dict[str, Any]:
    return store.update(principal, llm_id, validate_update_request(body))


def test_update_semantics(store: LLMStore) -> None:
    llm = create(
        store,
        labels={"a": "1", "b": "2"},
        clientConfig={"x": 1, "y": 2},
        supportedModalities=["TEXT", "IMAGE"],
        credentials=api_key_credentials(),
    )
    out = update(
        store, llm["llmId"], {"mergeLabels": {"b": "3", "c": "4"}, "clientConfig": {"z": 3}, "supportedModalities": []}
    )
    assert out["labels"] == {"a": "1", "b": "3", "c": "4"}
    assert out["clientConfig"] == {"z": 3}
    assert out["supportedModalities"] == ["TEXT", "IMAGE"]
    assert out["updatedAt"] > llm["updatedAt"]
    out = update(store, llm["llmId"], {"replaceLabels": {"only": "this"}, "supportedModalities": ["AUDIO"]})
    assert out["labels"] == {"only": "this"} and out["supportedModalities"] == ["AUDIO"]
    out = update(store, llm["llmId"], {"replaceLabels": {}})
    assert out["labels"] == {}
    # Credentials: omitted keeps, present replaces.
    update(store, llm["llmId"], {"displayName": "renamed"})
    assert store.records()[0]["credentialsFingerprint"] == credentials_fingerprint(api_key_credentials())
    update(store, llm["llmId"], {"credentials": api_key_credentials("rotated")})
    assert (
        store.get(ADMIN, llm["llmId"], include_credentials=True)["credentials"]["apiKey"]["inlineSecret"] == "rotated"
    )


def test_update_that_changes_nothing_keeps_updated_at(store: LLMStore) -> None:
    llm = create(store, description="d", labels={"a": "1"})
    same = update(store, llm["llmId"], {"description": "d", "mergeLabels": {"a": "1"}})
    assert same == llm
    assert update(store, llm["llmId"], {}) == llm


def test_update_timestamps_strictly_increase_and_record_editor() -> None:
    store = LLMStore(clock=lambda: 5)  # a frozen clock
    llm = create(store)
    one = update(store, llm["llmId"], {"description": "1"}, ADMIN)
    two = update(store, llm["llmId"], {"description": "2"})
    assert llm["updatedAt"] < one["updatedAt"] < two["updatedAt"]
    assert one["updatedById"] == ADMIN.id and two["updatedById"] == ALICE.id
    assert two["createdAt"] == llm["createdAt"] and two["createdById"] == ALICE.id


def test_update_into_a_duplicate_identity_is_rejected(store: LLMStore) -> None:
    first = create(store, modelIdentifier="m1")
    second = create(store, modelIdentifier="m2")
    with pytest.raises(AlreadyExists) as info:
        update(store, second["llmId"], {"modelIdentifier": "m1"})
    assert info.value.existing_llm_id == first["llmId"]
    assert store.get(ALICE, second["llmId"])["modelIdentifier"] == "m2"  # unchanged
    # Other owner's identical LLM does not conflict; neither does the LLM itself.
    other = create(store, BOB, modelIdentifier="m3")
    assert update(store, second["llmId"], {"modelIdentifier": "m3"})["modelIdentifier"] == "m3"
    assert update(store, other["llmId"], {"endpointUrl": "https://api.openai.com/v1/"}, BOB)


def test_an_identity_is_free_again_once_its_entry_moves_away_or_is_deleted(store: LLMStore) -> None:
    first = create(store, modelIdentifier="m1")
    update(store, first["llmId"], {"modelIdentifier": "m2"})  # m1 is free now, m2 is taken
    again = create(store, modelIdentifier="m1")
    with pytest.raises(AlreadyExists) as info:
        create(store, modelIdentifier="m2")
    assert info.value.existing_llm_id == first["llmId"]
    # Credentials are part of the identity: a different key is a different entry; changing it moves the identity.
    keyed = create(store, modelIdentifier="m2", credentials=api_key_credentials("other-key"))
    update(store, keyed["llmId"], {"credentials": api_key_credentials("third-key")})
    create(store, modelIdentifier="m2", credentials=api_key_credentials("other-key"))
    store.delete(ALICE, again["llmId"])
    assert create(store, modelIdentifier="m1")["llmId"] != again["llmId"]
    store.clear()
    create(store, modelIdentifier="m2")  # nothing stored, nothing to collide with


def test_merge_labels_beyond_twenty_is_invalid(store: LLMStore) -> None:
    llm = create(store, labels={f"k{i}": "v" for i in range(15)})
    with pytest.raises(ValidationError) as info:
        update(store, llm["llmId"], {"mergeLabels": {f"n{i}": "v" for i in range(6)}})
    assert info.value.field == "mergeLabels"
    assert len(store.get(ALICE, llm["llmId"])["labels"]) == 15


def test_update_and_delete_permissions(store: LLMStore) -> None:
    llm = create(store)
    with pytest.raises(PermissionDenied):
        update(store, llm["llmId"], {"description": "x"}, BOB)
    with pytest.raises(PermissionDenied):
        store.delete(BOB, llm["llmId"])
    with pytest.raises(NotFound):
        update(store, UUID, {"description": "x"})
    store.delete(ADMIN, llm["llmId"])
    with pytest.raises(NotFound):
        store.delete(ALICE, llm["llmId"])
    assert len(store) == 0


def test_records_never_contain_the_secret(store: LLMStore) -> None:
    create(store, credentials=api_key_credentials())
    (rec,) = store.records()
    assert SECRET not in repr(rec)
    assert rec["credentials"]["apiKey"]["inlineSecret"] == "<redacted>"
    assert rec["ownerId"] == ALICE.id
    assert rec["credentialsFingerprint"] == credentials_fingerprint(api_key_credentials())
    assert rec["canonicalEndpointUrl"] == "https://api.openai.com/v1"


def test_render_omits_unset_optionals_and_returns_copies(store: LLMStore) -> None:
    llm = create(store, clientConfig={"a": {"b": 1}})
    for key in ("description", "version", "monitoringEndpoint", "defaultSamplingParams", "maxContextLength"):
        assert key not in llm
    llm["clientConfig"]["a"]["b"] = 2
    llm["labels"]["x"] = "y"
    again = store.get(ALICE, llm["llmId"])
    assert again["clientConfig"] == {"a": {"b": 1}} and again["labels"] == {}
    assert render_llm({**again, "credentials": None}, include_credentials=True).get("credentials") is None
