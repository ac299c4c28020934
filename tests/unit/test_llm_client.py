"""The LLM's own rules (llm.py) as a table: the engine with the real LLM client over a fake registry, no HTTP.

Each row seeds the registry, reconciles one LLM and states the registry calls, the result, the Synced reason
and the Events. The same rules run over HTTP against the emulator in tests/integration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from goodmem_operator.api.mapping import OWNER_LABEL, OWNER_UID_LABEL, ownership_labels
from goodmem_operator.llm import INHERITED, LLMObject
from goodmem_operator.reconcile import Reconciler, ReconcileSettings
from goodmem_operator.registry import Conflict, NotFound
from goodmem_operator.secrets import SecretData
from goodmem_operator.trust import derived_llm_id, grant_label

pytestmark = pytest.mark.unit

UID = "11111111-1111-4111-8111-111111111111"
MINE = derived_llm_id(UID)
OTHER = "22222222-2222-4222-8222-222222222222"
SPEC = {"displayName": "M", "providerType": "VLLM", "endpointUrl": "http://vllm.test/v1", "modelIdentifier": "m"}
MARKS = ownership_labels("c1", "team-a", "llm", UID)
GRANT = {grant_label("c1", "team-a"): "adopt"}
THEIRS = {OWNER_UID_LABEL: "someone", OWNER_LABEL: "c1/team-b/x"}


class FakeRegistry:
    """The registry's five verbs over a dict; a create of an id in use or of a known identity answers 409."""

    def __init__(self, entries: dict[str, dict[str, Any]]) -> None:
        self.entries = {k: {"llmId": k, **v} for k, v in entries.items()}
        self.calls: list[str] = []

    async def get_llm(self, llm_id: str) -> dict[str, Any]:
        self.calls.append("get")
        if llm_id not in self.entries:
            raise NotFound("404")
        return dict(self.entries[llm_id])

    async def create_llm(self, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("create")
        same = [
            k
            for k, e in self.entries.items()
            if (e.get("endpointUrl"), e.get("modelIdentifier")) == (body["endpointUrl"], body["modelIdentifier"])
        ]
        if body["llmId"] in self.entries or same:
            raise Conflict("409", existing_id=body["llmId"] if body["llmId"] in self.entries else None)
        self.entries[body["llmId"]] = {k: v for k, v in body.items() if k != "credentials"}
        return dict(self.entries[body["llmId"]])

    async def list_llms(self, **_: Any) -> list[dict[str, Any]]:
        self.calls.append("list")
        return [dict(e) for e in self.entries.values()]

    async def update_llm(self, llm_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("update")
        entry = self.entries[llm_id]
        entry.update({k: v for k, v in body.items() if k not in ("replaceLabels", "credentials")})
        if "replaceLabels" in body:
            entry["labels"] = dict(body["replaceLabels"])
        return dict(entry)

    async def delete_llm(self, llm_id: str) -> None:
        self.calls.append("delete")
        self.entries.pop(llm_id, None)


class NoSecrets:
    async def read(self, namespace: str, name: str) -> SecretData | None:
        return None


def entry(labels: dict[str, str] | None = None, **over: Any) -> dict[str, Any]:
    return {**SPEC, "labels": dict(labels or {}), **over}


@dataclass(frozen=True)
class Row:
    entries: dict[str, dict[str, Any]]
    spec: dict[str, Any]
    status: dict[str, Any]
    calls: list[str]
    result: str
    synced: str
    events: list[str]
    fingerprint: str | None = None  # status.credentialsFingerprint on success
    gated: bool = False  # status.lastAttempt set (a permanent refusal of these inputs)
    entry_labels: dict[str, str] = field(default_factory=dict)  # labels of the entry afterwards (when given)


ROWS: dict[str, Row] = {
    "fresh resource: one POST, no GET first": Row({}, {}, {}, ["create"], "success", "ReconcileSuccess", ["Created"]),
    "lost create: the 409 for our own id re-reads it, nothing duplicated": Row(
        {MINE: entry(MARKS)}, {}, {}, ["create", "get"], "noop", "ReconcileSuccess", []
    ),
    "vanished entry: recreated at the same id": Row(
        {}, {}, {"llmId": MINE}, ["get", "create"], "success", "ReconcileSuccess", ["Recreated"]
    ),
    "unowned entry without a grant: NotGranted, nothing written": Row(
        {OTHER: entry()}, {"llmId": OTHER}, {}, ["get"], "error", "NotGranted", []
    ),
    "unowned entry granting adopt: adopted, its labels become ours, its credentials inherited": Row(
        {OTHER: entry(GRANT)},
        {"llmId": OTHER},
        {},
        ["get", "update"],
        "success",
        "ReconcileSuccess",
        ["Adopted", "Updated"],
        fingerprint=INHERITED,
        entry_labels={**MARKS},
    ),
    "another namespace's entry: Conflict, permanent for these inputs": Row(
        {OTHER: entry(THEIRS)}, {"llmId": OTHER}, {}, ["get"], "permanent", "Conflict", [], gated=True
    ),
    "providerType cannot change: InvalidSpec": Row(
        {MINE: entry(MARKS, providerType="OLLAMA")},
        {},
        {"llmId": MINE},
        ["get"],
        "permanent",
        "InvalidSpec",
        [],
        gated=True,
    ),
    "inherited credentials never follow a new endpoint": Row(
        {OTHER: entry(GRANT, endpointUrl="http://elsewhere.test/v1")},
        {"llmId": OTHER},
        {},
        ["get"],
        "permanent",
        "CredentialsNotSupplied",
        [],
        gated=True,
    ),
    "same identity, adoptionPolicy Never: AlreadyExists": Row(
        {OTHER: entry()}, {}, {}, ["create", "get", "list"], "permanent", "AlreadyExists", [], gated=True
    ),
    "same identity, IfMatching, granted: that entry adopted": Row(
        {OTHER: entry(GRANT)},
        {"adoptionPolicy": "IfMatching"},
        {},
        ["create", "get", "list", "update"],
        "success",
        "ReconcileSuccess",
        ["Adopted", "Updated"],
        fingerprint=INHERITED,
        entry_labels={**MARKS},
    ),
    "same identity, IfMatching, no grant: NotGranted": Row(
        {OTHER: entry()}, {"adoptionPolicy": "IfMatching"}, {}, ["create", "get", "list"], "error", "NotGranted", []
    ),
    "same identity, IfMatching, another namespace's: AlreadyExists, its id not named": Row(
        {OTHER: entry(THEIRS)},
        {"adoptionPolicy": "IfMatching"},
        {},
        ["create", "get", "list"],
        "permanent",
        "AlreadyExists",
        [],
        gated=True,
    ),
}


def llm(spec: dict[str, Any], status: dict[str, Any]) -> LLMObject:
    return LLMObject(
        namespace="team-a",
        name="llm",
        uid=UID,
        generation=1,
        spec={**SPEC, **spec},
        status=dict(status),
        annotations={},
    )


def reconciler(registry: FakeRegistry) -> Reconciler:
    return Reconciler(registry, NoSecrets(), ReconcileSettings(cluster_name="c1", fingerprint_key=b"k"))  # type: ignore[arg-type]


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
async def test_llm_rules(row: Row) -> None:
    registry = FakeRegistry(row.entries)
    out = await reconciler(registry).reconcile(llm(row.spec, row.status), trigger="create")
    synced = out.condition("Synced")
    assert synced is not None
    assert (registry.calls, out.result, synced["reason"]) == (row.calls, row.result, row.synced)
    assert [e.reason for e in out.events if e.type == "Normal"] == row.events
    assert bool(out.status.get("lastAttempt")) is row.gated
    if row.fingerprint is not None:
        assert out.status["credentialsFingerprint"] == row.fingerprint
    if row.entry_labels:
        [adopted] = registry.entries.values()
        assert adopted["labels"] == row.entry_labels, "the grant is used up by the adoption"
    if "llmId" not in row.spec and row.entries.get(OTHER, {}).get("labels") == THEIRS:
        assert OTHER not in synced["message"], "another tenant's entry id is not named"


@pytest.mark.parametrize(
    ("policy", "labels", "calls", "event", "left"),
    [
        ("Delete", MARKS, ["get", "delete"], "Deleted", None),
        ("Orphan", {**MARKS, "team": "a"}, ["get", "update"], "Orphaned", {"team": "a", **GRANT}),
        ("Delete", THEIRS, ["get"], "Released", THEIRS),
    ],
    ids=["delete", "orphan leaves a grant for its namespace", "not ours: left in place"],
)
async def test_deletion_policy(
    policy: str, labels: dict[str, str], calls: list[str], event: str, left: dict[str, str] | None
) -> None:
    registry = FakeRegistry({MINE: entry(labels)})
    events = await reconciler(registry).finalize(llm({"deletionPolicy": policy}, {"llmId": MINE}))
    assert registry.calls == calls and [e.reason for e in events] == [event]
    assert (registry.entries[MINE]["labels"] if MINE in registry.entries else None) == left


# -- plan before apply (issue #17) --------------------------------------------------------------------

OBSERVE = {"managementPolicy": "ObserveOnly", "llmId": OTHER}
OBSERVE_GRANT = {grant_label("c1", "team-a"): "observe"}


async def test_observe_only_shows_what_managing_would_change_and_never_writes() -> None:
    """The exact fields, with the registry's and the spec's values; the operator's own labels (a grant) are not a
    difference; credentials named in the spec only as hidden (never read under ObserveOnly)."""
    registry = FakeRegistry(
        {OTHER: entry({"team": "a", **OBSERVE_GRANT}, description="by hand", capabilities={"supportsChat": True})}
    )
    spec = {
        **OBSERVE,
        "description": "declared",
        "labels": {"team": "b"},
        "capabilities": {"supportsChat": True, "supportsStreaming": True},
        "credentials": {"apiKey": {"secretKeyRef": {"name": "s", "key": "k"}}},
    }
    out = await reconciler(registry).reconcile(llm(spec, {}), trigger="create")
    assert registry.calls == ["get"], "ObserveOnly: one read, no write"
    assert out.status["pendingChanges"] == [
        {"path": "capabilities.supportsStreaming", "old": False, "new": True},
        {"path": "credentials", "hidden": True},
        {"path": "description", "old": "by hand", "new": "declared"},
        {"path": "labels.team", "old": "a", "new": "b"},
    ]
    up = out.condition("UpToDate")
    assert up is not None and up["status"] == "False" and up["reason"] == "PendingChanges"
    assert "description" in up["message"] and "labels.team" in up["message"]


async def test_observe_only_matching_entry_is_up_to_date() -> None:
    registry = FakeRegistry({OTHER: entry({"team": "a", **OBSERVE_GRANT})})
    out = await reconciler(registry).reconcile(llm({**OBSERVE, "labels": {"team": "a"}}, {}), trigger="create")
    up = out.condition("UpToDate")
    assert up is not None and up["status"] == "True"
    assert out.status["pendingChanges"] == []


async def test_observe_only_naming_the_entry_only_is_not_compared() -> None:
    registry = FakeRegistry({OTHER: entry(OBSERVE_GRANT)})
    obj = LLMObject(namespace="team-a", name="llm", uid=UID, generation=1, spec=OBSERVE, status={}, annotations={})
    out = await reconciler(registry).reconcile(obj, trigger="create")
    up = out.condition("UpToDate")
    assert up is not None and (up["status"], up["reason"]) == ("Unknown", "NotComparable")
    assert out.status.get("pendingChanges") is None


async def test_dry_run_plans_a_create_without_writing() -> None:
    registry = FakeRegistry({})
    obj = llm({"labels": {"team": "a"}}, {})
    obj = LLMObject(**{**obj.__dict__, "annotations": {"goodmem.ai/dry-run": "true"}})
    out = await reconciler(registry).reconcile(obj, trigger="create")
    assert registry.calls == [] and registry.entries == {}, "a fresh resource plans its create without a call"
    assert out.status["plannedAction"] == "Create"
    paths = [c["path"] for c in out.status["pendingChanges"]]
    assert {"displayName", "endpointUrl", "labels.team", f"labels.{OWNER_LABEL}", "llmId"} <= set(paths)
    assert [e.reason for e in out.events] == ["DryRun"] and "would create" in out.events[0].message


class OneSecret:
    """A Secret reader with one labelled Secret whose version and watch time the test sets."""

    def __init__(self, value: str, version: str, observed_at: float | None) -> None:
        self.secret = SecretData({"goodmem.ai/credentials": "true"}, {"k": value}, version, observed_at)

    async def read(self, namespace: str, name: str) -> SecretData | None:
        return self.secret


async def test_rotation_is_visible_in_status_and_measured() -> None:
    """status.credentialsSecretVersion / credentialsChangedTime follow the Secret version the registry got; the
    rotation metric measures from the Secret event to the PUT's answer, once per rotation."""
    registry = FakeRegistry({})
    secrets = OneSecret("v1", "41", time.monotonic())
    measured: list[float] = []
    settings = ReconcileSettings(cluster_name="c1", fingerprint_key=b"k", rotation_observer=measured.append)
    rec = Reconciler(registry, secrets, settings)  # type: ignore[arg-type]
    creds = {"credentials": {"apiKey": {"secretKeyRef": {"name": "s", "key": "k"}}}}
    created = await rec.reconcile(llm(creds, {}), trigger="create")
    assert created.status["credentialsSecretVersion"] == "41" and created.status["credentialsChangedTime"]
    assert measured == [], "a create is no rotation"
    status = {**created.status}

    noop = await rec.reconcile(llm(creds, status), trigger="drift")
    assert "credentialsSecretVersion" not in noop.status, "unchanged credentials: the recorded version stays"

    secrets.secret = SecretData(secrets.secret.labels, {"k": "v2"}, "42", time.monotonic() - 1.5)
    rotated = await rec.reconcile(llm(creds, status), trigger="secret")
    assert registry.calls[-1] == "update" and rotated.status["credentialsSecretVersion"] == "42"
    assert len(measured) == 1 and 1.5 <= measured[0] < 60
