"""Issue #5 on the real control plane: deletion policy, adoption, conflict, drift, pause, observe-only, faults,
crashes."""

from __future__ import annotations

import json
import time

import pytest

from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess

from .conftest import Kube, llm_manifest, scrape_metrics

pytestmark = pytest.mark.e2e

HAND_MADE = {
    "displayName": "Hand-made",
    "providerType": "VLLM",
    "endpointUrl": "http://hand-made.test:8000/v1",
    "modelIdentifier": "hand-made-model",
    "labels": {"origin": "console"},
}


def _writes(emulator: EmulatorProcess, llm_id: str | None = None) -> list[dict]:
    return [
        e
        for e in emulator.stats()["log"]
        if e["method"] != "GET" and (llm_id is None or llm_id in e["path"] or e["method"] == "POST")
    ]


def test_orphan_leaves_the_entry_without_ownership(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, llm_manifest("orphan", deletionPolicy="Orphan", labels={"team": "x"}))
    kube.wait_condition(namespace, "orphan")
    llm_id = kube.get(namespace, "llm", "orphan")["status"]["llmId"]
    kube.run("-n", namespace, "delete", "llm", "orphan", "--wait=true", "--timeout=30s")
    record = emulator.record(llm_id)
    assert record is not None and record["labels"] == {"team": "x", f"goodmem.ai/grant.default.{namespace}": "adopt"}, (
        "ownership marks gone; a grant lets this namespace (only) adopt it back"
    )


def test_adopt_existing_entry(kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess) -> None:
    # Made with the registry key outside Kubernetes, with a grant that lets this namespace adopt it.
    grant = {f"goodmem.ai/grant.default.{namespace}": "adopt"}
    created = emulator.owner_request(
        "POST",
        "/v1/llms",
        {**HAND_MADE, "endpointUrl": f"http://{namespace}.test/v1", "labels": {**HAND_MADE["labels"], **grant}},
    )
    llm_id = created["llm"]["llmId"]
    emulator.reset_stats()
    kube.apply(
        namespace,
        llm_manifest(
            "adopt",
            **{
                **HAND_MADE,
                "endpointUrl": f"http://{namespace}.test/v1",
                "llmId": llm_id,
                "description": "managed now",
            },
        ),
    )
    kube.wait_condition(namespace, "adopt")
    assert [e["method"] for e in _writes(emulator)] == ["PUT"], "adoption is one update, no create, no delete"
    record = emulator.record(llm_id)
    assert record["description"] == "managed now" and record["labels"]["goodmem.ai/owner"].endswith(
        f"/{namespace}/adopt"
    )
    reasons = [e["reason"] for e in kube.events(namespace)]
    assert "Adopted" in reasons


def test_conflict_between_two_resources(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, llm_manifest("owner"))
    kube.wait_condition(namespace, "owner")
    llm_id = kube.get(namespace, "llm", "owner")["status"]["llmId"]
    kube.apply(namespace, llm_manifest("claimer", llmId=llm_id, displayName="stolen"))
    cond = kube.wait_condition(namespace, "claimer", "False", "Conflict")
    assert f"/{namespace}/owner" in cond["message"]
    assert emulator.record(llm_id)["displayName"] == "LLM owner"
    kube.run("-n", namespace, "delete", "llm", "claimer", "--wait=true", "--timeout=30s")
    assert emulator.record(llm_id) is not None, "deleting the loser never deletes the owner's entry"


def test_drift_corrected_and_reported(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    manifest = json.loads(llm_manifest("drifty", description="declared", labels={"a": "1"}))
    manifest["metadata"]["annotations"] = {"goodmem.ai/drift-interval": "30"}  # the floor (test_fairness.py)
    kube.apply(namespace, json.dumps(manifest))
    kube.wait_condition(namespace, "drifty")
    llm_id = kube.get(namespace, "llm", "drifty")["status"]["llmId"]
    emulator.admin_request("PUT", f"/v1/llms/{llm_id}", {"description": "changed by hand", "mergeLabels": {"b": "2"}})
    kube.wait_for(lambda: emulator.record(llm_id)["description"] == "declared", 75, "drift corrected")
    assert "b" not in emulator.record(llm_id)["labels"]
    event = kube.wait_for(
        lambda: next((e for e in kube.events(namespace) if e["reason"] == "DriftCorrected"), None), 10
    )
    assert "description" in event["message"] and "labels" in event["message"]
    assert "drift corrected in fields" in operator.log_text()


def test_vanished_entry_recreated_with_same_id(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    manifest = json.loads(llm_manifest("phoenix"))
    manifest["metadata"]["annotations"] = {"goodmem.ai/drift-interval": "30"}  # the floor (test_fairness.py)
    kube.apply(namespace, json.dumps(manifest))
    kube.wait_condition(namespace, "phoenix")
    llm_id = kube.get(namespace, "llm", "phoenix")["status"]["llmId"]
    emulator.admin_request("DELETE", f"/v1/llms/{llm_id}")
    kube.wait_for(lambda: emulator.record(llm_id) is not None, 75, "recreated")


def test_pause_and_resume(kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess) -> None:
    kube.apply(namespace, llm_manifest("pausable"))
    kube.wait_condition(namespace, "pausable")
    llm_id = kube.get(namespace, "llm", "pausable")["status"]["llmId"]
    kube.run("-n", namespace, "annotate", "llm", "pausable", "goodmem.ai/paused=true")
    kube.wait_condition(namespace, "pausable", "False", "ReconcilePaused", ctype="Synced")
    emulator.reset_stats()
    kube.run(
        "-n", namespace, "patch", "llm", "pausable", "--type", "merge", "-p", '{"spec":{"description":"while paused"}}'
    )
    # Paused: the entry is read, never written; status says what unpausing would change.
    pending = kube.wait_for(
        lambda: kube.get(namespace, "llm", "pausable")["status"].get("pendingChanges") or None, 20, "the plan"
    )
    assert [c["path"] for c in pending] == ["description"] and pending[0]["new"] == "while paused"
    assert (kube.condition(namespace, "pausable", "UpToDate") or {}).get("status") == "False"
    calls = [e for e in emulator.stats()["log"] if llm_id in e["path"]]
    assert calls and {e["method"] for e in calls} == {"GET"}, "paused: reads only, no registry write"
    kube.run("-n", namespace, "annotate", "llm", "pausable", "goodmem.ai/paused-")
    kube.wait_condition(namespace, "pausable", "True", "ReconcileSuccess", ctype="Synced")
    assert emulator.record(llm_id)["description"] == "while paused"


def test_observe_only(kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess) -> None:
    # Made outside Kubernetes with the registry key, granting this namespace observation only.
    grant = {f"goodmem.ai/grant.default.{namespace}": "observe"}
    created = emulator.owner_request(
        "POST",
        "/v1/llms",
        {**HAND_MADE, "endpointUrl": f"http://obs-{namespace}.test/v1", "labels": {**HAND_MADE["labels"], **grant}},
    )
    llm_id = created["llm"]["llmId"]
    emulator.reset_stats()
    manifest = {
        "apiVersion": "goodmem.ai/v1alpha1",
        "kind": "LLM",
        "metadata": {"name": "watcher"},
        "spec": {"managementPolicy": "ObserveOnly", "llmId": llm_id},
    }
    kube.apply(namespace, json.dumps(manifest))
    kube.wait_condition(namespace, "watcher", "True", "Observed")
    observed = kube.get(namespace, "llm", "watcher")["status"]["observed"]
    assert observed["displayName"] == "Hand-made" and observed["labels"] == {"origin": "console"}, "no grant mirrored"
    assert "ownerId" not in observed, "the entry's principal is not this namespace's business"
    kube.run("-n", namespace, "delete", "llm", "watcher", "--wait=true", "--timeout=30s")
    assert [e for e in emulator.stats()["log"] if e["method"] != "GET"] == []
    assert emulator.record(llm_id) is not None
    res = kube.apply(namespace, json.dumps({**manifest, "spec": {"managementPolicy": "ObserveOnly"}}), check=False)
    assert res.returncode != 0 and "ObserveOnly needs llmId" in res.stderr


def test_registry_outage_in_the_middle_of_creates(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    emulator.set_faults(outage=True)
    try:
        for i in range(5):
            kube.apply(namespace, llm_manifest(f"out-{i}"))
        cond = kube.wait_condition(namespace, "out-0", "False", "Creating")
        assert "retrying in" in cond["message"]
        synced = kube.condition(namespace, "out-0", "Synced")
        assert synced["reason"] == "RegistryUnavailable"
    finally:
        emulator.clear_faults()
    ids = []
    for i in range(5):
        kube.wait_condition(namespace, f"out-{i}", timeout=90)
        ids.append(kube.get(namespace, "llm", f"out-{i}")["status"]["llmId"])
    records = [r for r in emulator.records() if r["llmId"] in ids]
    assert len(records) == 5 and len({r["llmId"] for r in emulator.records()}) == len(emulator.records())


def test_operator_killed_mid_create_converges(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    """SIGKILL while creates are provably in flight: the registry has received POSTs and not answered them.

    The emulator holds every request 3 s (latencyMs), the kill lands as soon as its inFlight gauge shows a
    POST, and the gauge is read again after the process is gone: nothing can send a POST then, so one still
    in flight was sent before the kill and had no answer when it landed. Those creates commit after the
    operator died (their answers are lost); after a restart each LLM must have exactly one entry and be Ready.
    """
    names = [f"crash-{i}" for i in range(6)]
    emulator.set_faults(latencyMs=3000)  # every registry request is held 3 s
    try:
        for name in names:
            kube.apply(namespace, llm_manifest(name))
        kube.wait_for(lambda: emulator.stats()["inFlight"]["POST /v1/llms"] >= 1, 30, "a create in flight")
        operator.kill()  # SIGKILL; returns once the process is gone
        killed_ms = time.time() * 1000
        in_flight_after_kill = emulator.stats()["inFlight"]["POST /v1/llms"]
        emulator.clear_faults()  # requests already held keep their 3 s
        # The held creates are processed after the kill (answered to nobody): the proof names them.
        kube.wait_for(lambda: emulator.stats()["inFlight"]["POST /v1/llms"] == 0, 10, "held creates processed")
        answered_to_nobody = sorted(
            e["body"]["displayName"]
            for e in emulator.stats()["log"]
            if e["method"] == "POST"
            and e["ts"] > killed_ms
            and str((e["body"] or {}).get("displayName", "")).startswith("LLM crash-")
        )
    finally:
        emulator.clear_faults()
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()
    assert in_flight_after_kill >= 1, "no create was in flight when the kill landed"
    assert answered_to_nobody, "no crash-* create was received before the kill and answered after it"
    print(f"creates in flight at the kill: {in_flight_after_kill} ({answered_to_nobody})")

    for name in names:
        kube.wait_condition(namespace, name, timeout=60)
    records = emulator.records()
    for name in names:
        obj = kube.get(namespace, "llm", name)
        entries = [r for r in records if r["labels"].get("goodmem.ai/owner-uid") == obj["metadata"]["uid"]]
        assert [r["llmId"] for r in entries] == [obj["status"]["llmId"]], f"{name}: exactly one entry, in status"
    names_in_registry = [
        r["displayName"]
        for r in records
        if r["displayName"].startswith("LLM crash-")
        and r["labels"].get("goodmem.ai/owner", "").split("/")[1:2] == [namespace]
    ]
    assert sorted(names_in_registry) == sorted(f"LLM {n}" for n in names), "nothing duplicated, nothing missing"


def test_metrics_are_scraped(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    kube.apply(namespace, llm_manifest("metered"))
    kube.wait_condition(namespace, "metered")
    text = scrape_metrics(operator)
    for name in (
        "goodmem_operator_reconcile_total",
        "goodmem_operator_reconcile_duration_seconds_bucket",
        "goodmem_operator_registry_requests_total",
        "goodmem_operator_registry_request_duration_seconds_bucket",
        "goodmem_operator_drift_corrections_total",
        "goodmem_operator_llms",
    ):
        assert name in text, name
    assert 'goodmem_operator_registry_requests_total{status="201",verb="create"}' in text
    ready = [line for line in text.splitlines() if line.startswith('goodmem_operator_llms{ready="True"}')]
    assert ready and float(ready[0].split()[-1]) >= 1
