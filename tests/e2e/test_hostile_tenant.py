"""Issue #13 on the real control plane: namespace B tries every move against namespace A.

Team A manages entries (one live, one orphaned back to it) and keeps changing its spec while namespace B
("evil") names A's entry ids, matches A's entry's identity, observes it, borrows A's Secret, asks for
another owner, labels nothing and loops its drift checks. Each move must be refused with a precise
condition that names nothing of A, A's entries must receive no write from B, and A keeps converging.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from goodmem_devcluster import ControlPlane
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess

from .conftest import SENTINEL, Kube, llm_manifest, secret_manifest

pytestmark = pytest.mark.e2e


@pytest.fixture
def evil(control_plane: ControlPlane) -> Iterator[str]:
    name = f"evil-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    yield name


def llm_manifest_spec(name: str) -> dict:
    return json.loads(llm_manifest(name))["spec"]


def _ready_reason(kube: Kube, namespace: str, name: str, reason: str) -> dict:
    return kube.wait_condition(namespace, name, "False", reason, ctype="Synced", timeout=30)


def test_namespace_b_cannot_reach_namespace_a(
    kube: Kube, namespace: str, evil: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    team_a = namespace
    # -- team A: a live entry with a key from a Secret, and one orphaned entry granted back to A -----------
    kube.apply(team_a, secret_manifest("a-key", {"api-key": SENTINEL}))
    key_ref = {"apiKey": {"secretKeyRef": {"name": "a-key", "key": "api-key"}}}
    kube.apply(team_a, llm_manifest("live", credentials=key_ref, labels={"project": "a-secret-project"}))
    kube.apply(team_a, llm_manifest("plain"))
    kube.apply(team_a, llm_manifest("old", deletionPolicy="Orphan"))
    for name in ("live", "plain", "old"):
        kube.wait_condition(team_a, name)
    live = kube.get(team_a, "llm", "live")
    live_id, orphan_id = live["status"]["llmId"], kube.get(team_a, "llm", "old")["status"]["llmId"]
    plain = kube.get(team_a, "llm", "plain")
    plain_id = plain["status"]["llmId"]
    identity = ("displayName", "providerType", "endpointUrl", "modelIdentifier")
    kube.run("-n", team_a, "delete", "llm", "old", "--wait=true", "--timeout=30s")
    assert emulator.record(orphan_id)["labels"] == {f"goodmem.ai/grant.default.{team_a}": "adopt"}
    live_spec = dict(live["spec"])
    emulator.reset_stats()

    # -- namespace B's moves ----------------------------------------------------------------------------
    kube.apply(evil, secret_manifest("b-other", {"token": "not-for-the-registry"}, labelled=False))
    moves = {
        # take over A's live entry by id, pointing it at B's host
        "by-id": {"llmId": live_id, "endpointUrl": "https://evil.test/v1"},
        # take over A's orphaned entry (its grant names A only)
        "orphan": {"llmId": orphan_id, "endpointUrl": "https://evil.test/v1"},
        # match the identity of A's managed entry, and of A's orphaned one, and ask to adopt whatever matches
        "matching": {**{k: plain["spec"][k] for k in identity}, "adoptionPolicy": "IfMatching"},
        "matching-orphan": {**{k: llm_manifest_spec("old")[k] for k in identity}, "adoptionPolicy": "IfMatching"},
        # read A's Secret through the operator
        "borrow": {
            "credentials": {"apiKey": {"secretKeyRef": {"name": "a-key", "key": "api-key", "namespace": team_a}}}
        },
        # act as another registry principal
        "owner": {"ownerId": "0b0e6f1c-3a4e-4b7d-9e8f-1c2d3e4f5a6b"},
        # send a Secret of its own namespace that never opted in to being credentials
        "unlabelled": {"credentials": {"apiKey": {"secretKeyRef": {"name": "b-other", "key": "token"}}}},
    }
    for name, spec in moves.items():
        kube.apply(evil, llm_manifest(f"b-{name}", **spec))
    observe = {
        "apiVersion": "goodmem.ai/v1alpha1",
        "kind": "LLM",
        "metadata": {"name": "b-observe"},
        "spec": {"managementPolicy": "ObserveOnly", "llmId": live_id},
    }
    kube.apply(evil, json.dumps(observe))

    expected = {
        "b-by-id": "Conflict",
        "b-orphan": "NotGranted",
        "b-matching": "AlreadyExists",
        "b-matching-orphan": "NotGranted",
        "b-borrow": "SecretNotAllowed",
        "b-owner": "OwnerIdNotAllowed",
        "b-observe": "Conflict",
        "b-unlabelled": "SecretNotLabelled",
    }
    # Meanwhile team A changes its spec: it must keep converging.
    kube.apply(
        team_a,
        llm_manifest(
            "live", credentials=key_ref, labels={"project": "a-secret-project"}, description="changed during the attack"
        ),
    )
    for name, reason in expected.items():
        cond = _ready_reason(kube, evil, name, reason)
        # (b-borrow's message repeats the namespace B itself wrote; it says nothing of whether A's Secret exists)
        assert (name == "b-borrow" or team_a not in cond["message"]) and "a-secret-project" not in cond["message"], (
            name,
            cond["message"],
        )
        status = kube.get(evil, "llm", name)["status"]
        assert "observed" not in status, f"{name}: nothing of A's entry mirrored"
        assert name == "b-borrow" or team_a not in json.dumps(status), name
        if name.startswith("b-matching"):
            assert plain_id not in cond["message"] and orphan_id not in cond["message"], "A's ids are not named"
    kube.wait_for(
        lambda: emulator.record(live_id)["description"] == "changed during the attack",
        30,
        "team A's change applied during the attack",
    )
    kube.wait_condition(team_a, "live")

    # -- A's entries received no write but A's own update ------------------------------------------------
    # (The session's registry is shared with other tests: count what is A's or came from B, nothing else.)
    log = [e for e in emulator.stats()["log"] if e["method"] != "GET"]
    on_a = [
        (e["method"], e["path"]) for e in log if live_id in e["path"] or orphan_id in e["path"] or plain_id in e["path"]
    ]
    assert on_a == [("PUT", f"/v1/llms/{live_id}")], f"A's entries got a write besides A's own change: {on_a}"
    from_b = [
        (e["method"], e["status"]) for e in log if f"/{evil}/" in json.dumps((e.get("body") or {}).get("labels") or {})
    ]
    # B's two matching creates reached the registry and were refused (409); nothing else B asked for was written.
    assert from_b == [("POST", 409), ("POST", 409)], from_b
    assert not [r for r in emulator.records() if f"/{evil}/" in json.dumps(r.get("labels") or {})], "no entry for B"
    assert emulator.record(orphan_id)["labels"] == {f"goodmem.ai/grant.default.{team_a}": "adopt"}
    assert emulator.record(live_id)["endpointUrl"] == live_spec["endpointUrl"]

    # -- deleting every one of B's LLMs deletes nothing of A ---------------------------------------------
    for name in expected:
        kube.run("-n", evil, "delete", "llm", name, "--wait=true", "--timeout=30s")
    assert emulator.record(live_id) is not None and emulator.record(orphan_id) is not None

    # -- the grant works for the namespace it names -------------------------------------------------------
    # (the same endpoint as before: the entry keeps credentials "back" does not supply, so it may not move them)
    kube.apply(team_a, llm_manifest("back", **{**llm_manifest_spec("old"), "llmId": orphan_id}))
    kube.wait_condition(team_a, "back")
    assert emulator.record(orphan_id)["labels"]["goodmem.ai/owner"] == f"default/{team_a}/back"
