"""Credentials from Secrets on the real control plane: rotation, healing, isolation, and no leaks."""

from __future__ import annotations

import json
import time

import pytest

from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess

from tests.leakscan import assert_no_leaks, without_emulator_redactions

from .conftest import SENTINEL, Kube, llm_manifest, scrape_metrics, secret_manifest

pytestmark = pytest.mark.e2e

REF = {"apiKey": {"secretKeyRef": {"name": "key", "key": "api-key"}, "headerName": "Authorization", "prefix": "Bearer "}}


def _fp(emulator: EmulatorProcess, llm_id: str) -> str:
    return emulator.record(llm_id)["credentialsFingerprint"]


def test_rotation_reaches_only_the_users_of_the_secret(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, secret_manifest("key", {"api-key": "first-key-value"}))
    kube.apply(namespace, secret_manifest("other", {"api-key": "unrelated"}))
    for name in ("r1", "r2"):
        kube.apply(namespace, llm_manifest(name, credentials=REF))
    kube.apply(namespace, llm_manifest("r3", credentials={"apiKey": {"secretKeyRef": {"name": "other", "key": "api-key"}}}))
    ids = {}
    for name in ("r1", "r2", "r3"):
        kube.wait_condition(namespace, name)
        ids[name] = kube.get(namespace, "llm", name)["status"]["llmId"]
    before = {n: _fp(emulator, i) for n, i in ids.items()}
    emulator.reset_stats()
    started = time.monotonic()
    kube.apply(namespace, secret_manifest("key", {"api-key": SENTINEL}))
    kube.wait_for(lambda: all(_fp(emulator, ids[n]) != before[n] for n in ("r1", "r2")), 20, "rotation")
    elapsed = time.monotonic() - started
    puts = [e for e in emulator.stats()["log"] if e["method"] == "PUT"]
    assert sorted(e["path"].rsplit("/", 1)[1] for e in puts) == sorted([ids["r1"], ids["r2"]]), "one PUT per user"
    assert all(set(e["body"]) == {"credentials"} for e in puts)
    assert _fp(emulator, ids["r3"]) == before["r3"]
    print(f"rotation reached 2 LLMs in {elapsed:.2f}s")
    # The status fingerprint follows, and a resync sends nothing more.
    kube.wait_for(lambda: kube.get(namespace, "llm", "r1")["status"]["credentialsFingerprint"]
                  != "", 10, "status fingerprint")
    time.sleep(1.0)
    assert len([e for e in emulator.stats()["log"] if e["method"] == "PUT"]) == 2


def test_unrelated_secret_churn_makes_no_registry_call(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, secret_manifest("key", {"api-key": "v"}))
    kube.apply(namespace, llm_manifest("churn", credentials=REF))
    kube.wait_condition(namespace, "churn")
    time.sleep(0.5)
    emulator.reset_stats()
    log_start = len(operator.log_text())
    for i in range(20):
        kube.apply(namespace, secret_manifest(f"noise-{i % 4}", {"x": str(i)}))
    kube.run("-n", namespace, "label", "secret", "key", "touched=yes")  # a change that is not the key's value
    time.sleep(2.0)
    assert sum(emulator.stats()["requests"].values()) == 0
    # Secrets no LLM uses are filtered out before the handler runs: of the 21 Secret events above, only the
    # used Secret's label change reaches it (the operator logs at debug level: one line per invocation).
    invoked = operator.log_text()[log_start:].count("Handler 'secret-changed' is invoked.")
    assert invoked == 1, f"the Secret handler ran {invoked} times for 20 unrelated events and 1 related one"


def test_switching_secrets_moves_the_rotation(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, secret_manifest("old-key", {"api-key": "old-1"}))
    kube.apply(namespace, secret_manifest("new-key", {"api-key": "new-1"}))
    kube.apply(namespace, llm_manifest("mover", credentials={"apiKey": {"secretKeyRef": {"name": "old-key", "key": "api-key"}}}))
    kube.wait_condition(namespace, "mover")
    llm_id = kube.get(namespace, "llm", "mover")["status"]["llmId"]
    first = _fp(emulator, llm_id)
    kube.apply(namespace, llm_manifest("mover", credentials={"apiKey": {"secretKeyRef": {"name": "new-key", "key": "api-key"}}}))
    kube.wait_for(lambda: _fp(emulator, llm_id) != first, 20, "credentials from the new Secret")
    moved = _fp(emulator, llm_id)
    time.sleep(1.0)
    emulator.reset_stats()
    kube.apply(namespace, secret_manifest("old-key", {"api-key": "old-2"}))  # no longer used by anyone
    time.sleep(2.0)
    assert sum(emulator.stats()["requests"].values()) == 0, "a Secret the LLM stopped using no longer reaches it"
    kube.apply(namespace, secret_manifest("new-key", {"api-key": "new-2"}))
    kube.wait_for(lambda: _fp(emulator, llm_id) != moved, 20, "rotation of the Secret now in use")
    assert [e["method"] for e in emulator.stats()["log"]].count("PUT") == 1


def test_llm_before_its_secret_heals_by_itself(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, llm_manifest("early", credentials=REF))
    cond = kube.wait_condition(namespace, "early", "False", "SecretNotFound")
    assert "not found" in cond["message"]
    kube.apply(namespace, secret_manifest("key", {"wrong-key": "v"}))
    kube.wait_condition(namespace, "early", "False", "SecretKeyNotFound")
    kube.apply(namespace, secret_manifest("key", {"api-key": "now-there"}))
    kube.wait_condition(namespace, "early", "True", "Available", timeout=20)


def test_secret_deleted_after_registration_keeps_registry_credentials(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, secret_manifest("key", {"api-key": "kept"}))
    kube.apply(namespace, llm_manifest("keep", credentials=REF))
    kube.wait_condition(namespace, "keep")
    llm_id = kube.get(namespace, "llm", "keep")["status"]["llmId"]
    fp = _fp(emulator, llm_id)
    kube.run("-n", namespace, "delete", "secret", "key")
    cond = kube.wait_condition(namespace, "keep", "False", "SecretNotFound")
    assert "keeps the credentials" in cond["message"]
    assert emulator.record(llm_id) is not None and _fp(emulator, llm_id) == fp


def test_cross_namespace_reference_refused(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess, control_plane
) -> None:
    other = namespace + "-x"
    control_plane.kubectl("create", "namespace", other)
    kube.apply(other, secret_manifest("key", {"api-key": SENTINEL}))
    creds = {"apiKey": {"secretKeyRef": {"name": "key", "key": "api-key", "namespace": other}}}
    kube.apply(namespace, llm_manifest("borrow", credentials=creds))
    cond = kube.wait_condition(namespace, "borrow", "False", "SecretNotAllowed")
    assert "another namespace" in cond["message"]
    assert all(r["displayName"] != "LLM borrow" for r in emulator.records())


def test_sentinel_never_leaks(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    """Plant the sentinel, drive create, rotation and registry errors that echo the request; scan everything.

    Only the PUT fails (errorMethods), so the rotation's credentials really go out and come back in the error
    text the operator reads; tests/integration/test_leak_scan.py shows this scan fails when redaction is off.
    """
    kube.apply(namespace, secret_manifest("key", {"api-key": SENTINEL + "-v1"}))
    kube.apply(namespace, llm_manifest("leak", credentials=REF, labels={"team": "sec"}))
    kube.wait_condition(namespace, "leak")
    emulator.set_faults(errorRate=1.0, errorStatus=400, errorMethods=["PUT"], echoRequest=True)
    try:
        kube.apply(namespace, secret_manifest("key", {"api-key": SENTINEL + "-v2"}))
        cond = kube.wait_condition(namespace, "leak", "False", "InvalidSpec", ctype="Synced", timeout=20)
        assert "registry answered 400" in cond["message"]
        assert "request body as received" in cond["message"] and "<redacted>" in cond["message"], \
            "the echoed credentials reached the operator (and were redacted)"
    finally:
        emulator.clear_faults()
    emulator.set_faults(errorRate=1.0, errorStatus=503, errorMethods=["PUT"], echoRequest=True)
    try:
        kube.apply(namespace, secret_manifest("key", {"api-key": SENTINEL + "-v3"}))
        kube.wait_condition(namespace, "leak", "False", "RegistryUnavailable", ctype="Synced", timeout=20)
    finally:
        emulator.clear_faults()
    kube.wait_condition(namespace, "leak", "True", "Available", timeout=60)

    llm = kube.get(namespace, "llm", "leak")
    events = kube.events(namespace)
    record = emulator.record(llm["status"]["llmId"])
    metrics = scrape_metrics(operator)
    places = {
        "operator log (debug)": operator.log_text(),
        "LLM object and status": json.dumps(llm),
        "events": json.dumps(events),
        # The record view without the credentials the emulator redacts itself (labels included).
        "emulator record view": json.dumps(without_emulator_redactions(record)),
        "metrics": metrics,
    }
    assert "[DEBUG   ]" in places["operator log (debug)"], "the scan must cover debug-level logs"
    assert 'verb="update"' in metrics, "the scan must cover the metrics of the failed and retried updates"
    assert_no_leaks(places, SENTINEL)
