"""The reconcile against the registry emulator over real HTTP: every rule of issue #2."""

from __future__ import annotations

import pytest

from goodmem_emulator import Emulator
from goodmem_operator.api.mapping import OWNER_UID_LABEL
from goodmem_operator.reconcile import LLMObject, Reconciler, RetryLater, derived_llm_id
from goodmem_operator.registry import RegistryClient

from .conftest import FakeSecrets, after, make_llm, with_spec, writes

pytestmark = pytest.mark.integration

SENTINEL = "SENTINEL-sk-9f8e7d6c5b4a"


async def test_create_then_noop(emulator: Emulator, reconciler: Reconciler) -> None:
    obj = make_llm({"labels": {"team": "a"}})
    out = await reconciler.reconcile(obj, trigger="create")
    assert out.result == "success" and out.retry_after is None
    assert out.status["llmId"] == derived_llm_id(obj.uid)
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["reason"] == "Available" and ready["observedGeneration"] == 1
    [record] = emulator.records()
    assert record["llmId"] == derived_llm_id(obj.uid)
    assert record["labels"]["team"] == "a" and record["labels"][OWNER_UID_LABEL] == obj.uid
    requests = {k: v for k, v in emulator.stats()["requests"].items() if v}
    assert requests == {"POST /v1/llms": 1}, "a brand-new resource creates at once: one request, no GET first"

    emulator.reset_stats()
    obj = after(obj, out)
    again = await reconciler.reconcile(obj, trigger="resume")
    assert again.result == "noop" and again.status_patch(obj.status) == {}
    assert writes(emulator) == {}, "a no-op reconcile makes no write"


async def test_update_sends_only_changed_fields_and_never_provider_type(
    emulator: Emulator, reconciler: Reconciler
) -> None:
    obj = make_llm({"labels": {"a": "1", "b": "2"}})
    obj = after(obj, await reconciler.reconcile(obj))
    emulator.reset_stats()
    changed = with_spec(obj, displayName="Renamed", labels={"a": "1"})
    out = await reconciler.reconcile(changed)
    assert out.result == "success"
    log = [e for e in emulator.stats()["log"] if e["method"] == "PUT"]
    assert len(log) == 1
    body = log[0]["body"]
    assert set(body) == {"displayName", "replaceLabels"}
    assert body["replaceLabels"] == {
        "a": "1",
        **{k: v for k, v in emulator.records()[0]["labels"].items() if k.startswith("goodmem.ai/")},
    }
    assert "providerType" not in body
    assert emulator.records()[0]["labels"].get("b") is None


async def test_lost_create_response_is_not_duplicated(emulator: Emulator, reconciler: Reconciler) -> None:
    obj = make_llm()
    emulator.set_faults(dropResponseAfterCommit=1)
    first = await reconciler.reconcile(obj)
    assert first.result == "error" and first.retry_after is not None
    assert len(emulator.records()) == 1  # committed, answer lost
    emulator.clear_faults()
    assert "llmId" not in after(obj, first).status, "the lost answer left no id in status"
    emulator.reset_stats()
    second = await reconciler.reconcile(after(obj, first))
    assert second.result in ("success", "noop")
    assert len(emulator.records()) == 1, "the retry must find its own entry, not create a second"
    # The retry creates first (status has no id); the registry's 409 for our own id sends it to a GET.
    assert [(e["method"], e["status"]) for e in emulator.stats()["log"]] == [("POST", 409), ("GET", 200)]
    assert second.status["llmId"] == derived_llm_id(obj.uid)
    assert not any(e.reason == "Created" for e in second.events)


async def test_known_entry_is_observed_before_any_write(
    emulator: Emulator, reconciler: Reconciler, admin: RegistryClient
) -> None:
    # With an id in status (or spec.llmId), the reconcile GETs first: a vanished entry is recreated, never blindly
    # posted.
    obj = make_llm()
    obj = after(obj, await reconciler.reconcile(obj, trigger="create"))
    emulator.reset_stats()
    out = await reconciler.reconcile(with_spec(obj, displayName="Renamed"), trigger="update")
    assert out.result == "success"
    assert [e["method"] for e in emulator.stats()["log"]] == ["GET", "PUT"]


async def test_vanished_entry_is_recreated_with_same_id(
    emulator: Emulator, reconciler: Reconciler, admin: RegistryClient
) -> None:
    obj = make_llm()
    obj = after(obj, await reconciler.reconcile(obj))
    await admin.delete_llm(obj.status["llmId"])
    out = await reconciler.reconcile(obj, trigger="drift")
    assert out.result == "success"
    assert [r["llmId"] for r in emulator.records()] == [obj.status["llmId"]]
    assert any(e.reason == "Recreated" for e in out.events)


async def test_bad_request_is_permanent_one_call_per_generation(emulator: Emulator, reconciler: Reconciler) -> None:
    obj = make_llm()
    emulator.set_faults(errorRate=1.0, errorStatus=400)
    out = await reconciler.reconcile(obj)
    assert out.result == "permanent" and out.retry_after is None
    synced = next(c for c in out.status["conditions"] if c["type"] == "Synced")
    assert synced["reason"] == "InvalidSpec" and "not retried" in synced["message"]
    calls = sum(emulator.stats()["requests"].values())
    assert calls == 1
    obj = after(obj, out)
    for _ in range(3):  # resync, drift timer, resume: no hot loop
        assert (await reconciler.reconcile(obj, trigger="drift")).result == "permanent"
    assert sum(emulator.stats()["requests"].values()) == calls, "no second registry call for the same generation"
    emulator.clear_faults()
    fixed = await reconciler.reconcile(with_spec(obj, displayName="Fixed"))
    assert fixed.result == "success", "a spec change re-arms the reconcile at once"


@pytest.mark.parametrize(
    ("status", "reason", "retryable"),
    [
        (401, "Unauthorized", True),
        (403, "Forbidden", True),
        (500, "RegistryUnavailable", True),
        (503, "RegistryUnavailable", True),
    ],
)
async def test_error_classes(
    emulator: Emulator, reconciler: Reconciler, status: int, reason: str, retryable: bool
) -> None:
    emulator.set_faults(errorRate=1.0, errorStatus=status)
    out = await reconciler.reconcile(make_llm())
    synced = next(c for c in out.status["conditions"] if c["type"] == "Synced")
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert synced["reason"] == reason and ready["reason"] == "Creating"
    assert (out.retry_after is not None) is retryable
    assert "retrying in" in synced["message"]


async def test_backoff_grows_and_is_capped(emulator: Emulator, registry: RegistryClient, secrets: FakeSecrets) -> None:
    from goodmem_operator.reconcile import ReconcileSettings

    rec = Reconciler(registry, secrets, ReconcileSettings(backoff_base=1.0, backoff_cap=8.0))
    emulator.set_faults(outage=True)
    obj = make_llm()
    delays = [(await rec.reconcile(obj)).retry_after for _ in range(7)]
    assert all(d is not None for d in delays)
    assert delays[3] > delays[0] and max(delays) <= 8.0  # type: ignore[operator]


async def test_rate_limited_honours_retry_after(emulator: Emulator, reconciler: Reconciler) -> None:
    emulator.set_faults(rateLimit={"retryAfter": 7})
    out = await reconciler.reconcile(make_llm())
    assert out.retry_after == 7
    assert next(c for c in out.status["conditions"] if c["type"] == "Synced")["reason"] == "RateLimited"


async def test_duplicate_identity_is_already_exists_naming_the_other(
    emulator: Emulator, reconciler: Reconciler
) -> None:
    first = await reconciler.reconcile(make_llm(name="first"))
    out = await reconciler.reconcile(make_llm(name="second"))
    assert out.result == "permanent"
    synced = next(c for c in out.status["conditions"] if c["type"] == "Synced")
    assert synced["reason"] == "AlreadyExists" and first.status["llmId"] in synced["message"]
    assert len(emulator.records()) == 1


async def test_missing_secret_heals_when_created(
    emulator: Emulator, reconciler: Reconciler, secrets: FakeSecrets
) -> None:
    obj = make_llm({"credentials": {"apiKey": {"secretKeyRef": {"name": "k", "key": "api-key"}}}})
    out = await reconciler.reconcile(obj)
    assert next(c for c in out.status["conditions"] if c["type"] == "Ready")["reason"] == "SecretNotFound"
    assert out.retry_after is not None
    assert sum(emulator.stats()["requests"].values()) == 0, "no registry call without credentials"
    secrets.data[("ns1", "k")] = {"other": "x"}
    out = await reconciler.reconcile(after(obj, out))
    assert next(c for c in out.status["conditions"] if c["type"] == "Ready")["reason"] == "SecretKeyNotFound"
    secrets.data[("ns1", "k")] = {"api-key": SENTINEL}
    out = await reconciler.reconcile(after(obj, out))
    assert out.result == "success"
    assert emulator.records()[0]["credentialsFingerprint"]


async def test_rotation_sends_credentials_once(
    emulator: Emulator, reconciler: Reconciler, secrets: FakeSecrets
) -> None:
    secrets.data[("ns1", "k")] = {"api-key": "first-key"}
    obj = make_llm({"credentials": {"apiKey": {"secretKeyRef": {"name": "k", "key": "api-key"}}}})
    obj = after(obj, await reconciler.reconcile(obj))
    before = emulator.records()[0]["credentialsFingerprint"]
    emulator.reset_stats()
    assert (await reconciler.reconcile(obj, trigger="drift")).result == "noop", "unchanged credentials are not resent"
    secrets.data[("ns1", "k")] = {"api-key": "second-key"}
    out = await reconciler.reconcile(obj, trigger="secret")
    assert out.result == "success" and [e.reason for e in out.events] == ["CredentialsRotated"]
    puts = [e for e in emulator.stats()["log"] if e["method"] == "PUT"]
    assert len(puts) == 1 and set(puts[0]["body"]) == {"credentials"}
    assert emulator.records()[0]["credentialsFingerprint"] != before
    obj = after(obj, out)
    assert (await reconciler.reconcile(obj, trigger="drift")).result == "noop"


def _ready(out: object) -> dict:
    return next(c for c in out.status["conditions"] if c["type"] == "Ready")  # type: ignore[attr-defined]


async def test_unlabelled_secret_refused_with_the_label_command_and_no_registry_call(
    emulator: Emulator, reconciler: Reconciler, secrets: FakeSecrets
) -> None:
    secrets.data[("ns1", "k")] = {"api-key": SENTINEL}
    secrets.unlabelled.add(("ns1", "k"))
    obj = make_llm({"credentials": {"apiKey": {"secretKeyRef": {"name": "k", "key": "api-key"}}}})
    out = await reconciler.reconcile(obj, trigger="create")
    ready = _ready(out)
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotLabelled")
    assert "kubectl label secret -n ns1 k goodmem.ai/credentials=true" in ready["message"]
    assert SENTINEL not in repr(out), "the value of a Secret that did not opt in goes nowhere"
    assert out.result == "error" and out.retry_after is not None, "retried (a safety net: the label event heals it)"
    assert sum(emulator.stats()["requests"].values()) == 0 and emulator.records() == []
    secrets.unlabelled.clear()  # kubectl label secret ...
    out = await reconciler.reconcile(after(obj, out), trigger="secret")
    assert out.result == "success" and _ready(out)["reason"] == "Available"


async def test_label_removed_after_create_refuses_but_keeps_the_entry(
    emulator: Emulator, reconciler: Reconciler, secrets: FakeSecrets
) -> None:
    secrets.data[("ns1", "k")] = {"api-key": "first"}
    obj = make_llm({"credentials": {"apiKey": {"secretKeyRef": {"name": "k", "key": "api-key"}}}})
    obj = after(obj, await reconciler.reconcile(obj, trigger="create"))
    [record] = emulator.records()
    emulator.reset_stats()
    secrets.unlabelled.add(("ns1", "k"))
    secrets.data[("ns1", "k")] = {"api-key": "second"}  # a rotation the Secret no longer consents to
    out = await reconciler.reconcile(obj, trigger="secret")
    ready = _ready(out)
    assert (ready["status"], ready["reason"]) == ("False", "SecretNotLabelled")
    assert "keeps the credentials it already has" in ready["message"]
    assert sum(emulator.stats()["requests"].values()) == 0, "no registry call: nothing written, nothing deleted"
    assert emulator.records() == [record]
    assert "credentialsFingerprint" not in out.status, "the last applied fingerprint stays in status"


async def test_status_fingerprint_changes_on_rotation_and_only_then(
    emulator: Emulator, reconciler: Reconciler, secrets: FakeSecrets
) -> None:
    secrets.data[("ns1", "k")] = {"api-key": "first", "other": "x"}
    obj = make_llm({"credentials": {"apiKey": {"secretKeyRef": {"name": "k", "key": "api-key"}}}})
    obj = after(obj, await reconciler.reconcile(obj, trigger="create"))
    first = obj.status["credentialsFingerprint"]
    assert first and "first" not in first

    unrelated = [
        ("description", lambda o: with_spec(o, description="changed")),
        ("registry labels", lambda o: with_spec(o, labels={"team": "b"})),
        ("another key of the Secret", lambda o: (secrets.data[("ns1", "k")].update(other="y"), o)[1]),
        ("annotation", lambda o: LLMObject(**{**o.__dict__, "annotations": {"note": "x"}})),
    ]
    for what, change in unrelated:
        obj = change(obj)
        out = await reconciler.reconcile(obj, trigger="update")
        assert out.result in ("success", "noop"), what
        obj = after(obj, out)
        assert obj.status["credentialsFingerprint"] == first, f"a {what} change moved the fingerprint"

    secrets.data[("ns1", "k")]["api-key"] = "second"
    obj = after(obj, await reconciler.reconcile(obj, trigger="secret"))
    second = obj.status["credentialsFingerprint"]
    assert second != first, "a rotation changes the fingerprint"
    secrets.data[("ns1", "k")]["api-key"] = "first"
    obj = after(obj, await reconciler.reconcile(obj, trigger="secret"))
    assert obj.status["credentialsFingerprint"] == first, "the fingerprint is a function of the key's value"


async def test_cross_namespace_secret_refused_without_reading_it(
    reconciler: Reconciler, secrets: FakeSecrets, emulator: Emulator
) -> None:
    secrets.data[("other", "k")] = {"api-key": SENTINEL}
    obj = make_llm({"credentials": {"apiKey": {"secretKeyRef": {"name": "k", "key": "api-key", "namespace": "other"}}}})
    out = await reconciler.reconcile(obj)
    assert out.result == "permanent"
    assert next(c for c in out.status["conditions"] if c["type"] == "Ready")["reason"] == "SecretNotAllowed"
    assert secrets.reads == 0 and emulator.records() == []


async def test_drift_corrected_with_one_put_of_the_drifted_fields(
    emulator: Emulator, reconciler: Reconciler, admin: RegistryClient
) -> None:
    obj = make_llm({"description": "mine", "labels": {"a": "1"}})
    obj = after(obj, await reconciler.reconcile(obj))
    await admin.update_llm(obj.status["llmId"], {"description": "theirs", "mergeLabels": {"x": "y"}})
    emulator.reset_stats()
    out = await reconciler.reconcile(obj, trigger="drift")
    [event] = out.events
    assert event.reason == "DriftCorrected" and "description" in event.message and "labels" in event.message
    puts = [e for e in emulator.stats()["log"] if e["method"] == "PUT"]
    assert len(puts) == 1 and set(puts[0]["body"]) == {"description", "replaceLabels"}
    assert emulator.records()[0]["description"] == "mine" and "x" not in emulator.records()[0]["labels"]


async def test_delete_and_already_gone(emulator: Emulator, reconciler: Reconciler) -> None:
    obj = make_llm()
    obj = after(obj, await reconciler.reconcile(obj))
    events = await reconciler.finalize(obj)
    assert [e.reason for e in events] == ["Deleted"] and emulator.records() == []
    events = await reconciler.finalize(obj)
    assert "already gone" in events[0].message


async def test_delete_retries_when_registry_down(emulator: Emulator, reconciler: Reconciler) -> None:
    obj = make_llm()
    obj = after(obj, await reconciler.reconcile(obj))
    emulator.set_faults(outage=True)
    with pytest.raises(RetryLater):
        await reconciler.finalize(obj)
    emulator.clear_faults()
    await reconciler.finalize(obj)
    assert emulator.records() == []


async def test_paused_makes_no_write_and_shows_the_plan(emulator: Emulator, reconciler: Reconciler) -> None:
    obj = make_llm(annotations={"goodmem.ai/paused": "true"})
    out = await reconciler.reconcile(obj)
    assert out.result == "paused"
    assert next(c for c in out.status["conditions"] if c["type"] == "Synced")["reason"] == "ReconcilePaused"
    assert next(c for c in out.status["conditions"] if c["type"] == "UpToDate")["status"] == "False"
    assert {c["path"] for c in out.status["pendingChanges"]} >= {"displayName", "endpointUrl"}
    assert writes(emulator) == {}, "paused: no registry write"
