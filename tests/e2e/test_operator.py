"""The operator as a real process against a real kube-apiserver + etcd and the registry emulator over HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from goodmem_devcluster import ControlPlane
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess

from .conftest import ROOT, Kube, llm_manifest

pytestmark = pytest.mark.e2e

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _puts(emulator: EmulatorProcess, llm_id: str) -> list[dict]:
    return [e for e in emulator.stats()["log"] if e["method"] == "PUT" and llm_id in e["path"]]


def test_examples_become_ready_and_match_the_registry(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    assert EXAMPLES, "examples/ must ship manifests"
    for path in EXAMPLES:
        kube.run("-n", namespace, "apply", "-f", str(path))
    names = [
        json.loads(line)["metadata"]["name"]
        for line in kube.run(
            "-n", namespace, "get", "llms", "-o", 'jsonpath={range .items[*]}{@}{"\\n"}{end}'
        ).stdout.splitlines()
        if line
    ]
    assert len(names) >= 4
    for name in names:
        kube.wait_condition(namespace, name, "True", "Available")
        obj = kube.get(namespace, "llm", name)
        record = emulator.record(obj["status"]["llmId"])
        assert record is not None, f"{name}: no registry entry"
        assert record["displayName"] == obj["spec"]["displayName"]
        assert record["modelIdentifier"] == obj["spec"]["modelIdentifier"]
        assert record["labels"]["goodmem.ai/owner-uid"] == obj["metadata"]["uid"]
        for key, value in (obj["spec"].get("labels") or {}).items():
            assert record["labels"][key] == value
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        synced = kube.condition(namespace, name, "Synced")
        assert synced and synced["status"] == "True"


def test_update_sends_exactly_one_put_with_that_field(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, llm_manifest("upd", labels={"a": "1"}))
    kube.wait_condition(namespace, "upd")
    llm_id = kube.get(namespace, "llm", "upd")["status"]["llmId"]
    assert _puts(emulator, llm_id) == []
    kube.run(
        "-n", namespace, "patch", "llm", "upd", "--type", "merge", "-p", '{"spec":{"description":"now described"}}'
    )
    kube.wait_for(
        lambda: kube.get(namespace, "llm", "upd")["status"].get("observedGeneration") == 2, 30, "generation 2"
    )
    kube.wait_condition(namespace, "upd")
    puts = _puts(emulator, llm_id)
    assert len(puts) == 1, puts
    assert puts[0]["body"] == {"description": "now described"}
    assert emulator.record(llm_id)["description"] == "now described"


def test_delete_removes_entry_and_releases_finalizer(
    kube: Kube, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    kube.apply(namespace, llm_manifest("del"))
    kube.wait_condition(namespace, "del")
    obj = kube.get(namespace, "llm", "del")
    assert "goodmem.ai/finalizer" in obj["metadata"]["finalizers"]
    llm_id = obj["status"]["llmId"]
    kube.run("-n", namespace, "delete", "llm", "del", "--wait=true", "--timeout=30s")
    assert kube.get(namespace, "llm", "del") is None
    assert emulator.record(llm_id) is None
    deletes = [e for e in emulator.stats()["log"] if e["method"] == "DELETE" and llm_id in e["path"]]
    assert len(deletes) == 1


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"providerType": "OPENAI_TYPO"}, 'Unsupported value: "OPENAI_TYPO"'),
        ({"defaultSamplingParams": {"temperature": 2.5}}, "should be less than or equal to 2"),
        ({"labels": {f"k{i}": "v" for i in range(21)}}, "must have at most 18 items"),
        ({"defaultSamplingParams": {"stopSequences": ["s"] * 11}}, "must have at most 10 items"),
        ({"displayName": ""}, "should be at least 1 chars long"),
        ({"credentials": {"apiKey": {"inlineSecret": "x"}}}, 'unknown field "spec.credentials.apiKey.inlineSecret"'),
        ({"labels": {"goodmem.ai/owner": "me"}}, "reserved for the operator"),
    ],
    ids=["bad-enum", "temperature", "21-labels", "11-stop-sequences", "empty-name", "inline-secret", "reserved-label"],
)
def test_invalid_specs_rejected_by_the_api_server(
    kube: Kube, namespace: str, crds: None, spec: dict, expected: str
) -> None:
    res = kube.apply(namespace, llm_manifest("bad", **spec), check=False)
    assert res.returncode != 0
    assert expected in res.stderr, res.stderr
    assert kube.get(namespace, "llm", "bad") is None


def test_provider_type_is_immutable(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    kube.apply(namespace, llm_manifest("immut"))
    res = kube.apply(namespace, llm_manifest("immut", providerType="VLLM"), check=False)
    assert res.returncode != 0
    assert "providerType is immutable" in res.stderr, res.stderr


def test_printer_columns(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    kube.apply(namespace, llm_manifest("cols", providerType="OLLAMA", modelIdentifier="llama3:8b"))
    kube.wait_condition(namespace, "cols")
    out = kube.run("-n", namespace, "get", "llms").stdout.splitlines()
    assert out[0].split() == ["NAME", "READY", "SYNCED", "PROVIDER", "MODEL", "LLM-ID", "AGE"]
    row = out[1].split()
    llm_id = kube.get(namespace, "llm", "cols")["status"]["llmId"]
    assert row[:6] == ["cols", "True", "True", "OLLAMA", "llama3:8b", llm_id]
    wide = kube.run("-n", namespace, "get", "llms", "-o", "wide").stdout.splitlines()[0].split()
    assert "REASON" in wide and "DISPLAY-NAME" in wide


def test_status_goes_through_the_status_subresource(
    kube: Kube, namespace: str, operator: OperatorProcess, control_plane: ControlPlane
) -> None:
    kube.apply(namespace, llm_manifest("sub"))
    kube.wait_condition(namespace, "sub")
    before = kube.get(namespace, "llm", "sub")["status"]
    # A write of .status through the main resource is ignored by the API server when the subresource is on.
    kube.run("-n", namespace, "patch", "llm", "sub", "--type", "merge", "-p", '{"status":{"llmId":"forged"}}')
    assert kube.get(namespace, "llm", "sub")["status"]["llmId"] == before["llmId"]
    # ...so the operator's status must have come through /status: the audit log shows it.
    audit = Path(control_plane.audit_log_path).read_text().splitlines()
    status_writes = [
        json.loads(line)
        for line in audit
        if '"subresource":"status"' in line and f'"namespace":"{namespace}"' in line and '"name":"sub"' in line
    ]
    assert any(e["verb"] == "patch" and e["objectRef"]["resource"] == "llms" for e in status_writes)


def test_kopf_writes_metadata_only_for_its_finalizer(
    kube: Kube, namespace: str, operator: OperatorProcess, control_plane: ControlPlane
) -> None:
    """kopf's bookkeeping (the diff-base digest, handler progress) lives in status.kopf and goes out in the same
    /status patch as the conditions: per create one metadata patch (the finalizer), per update none."""
    kube.apply(namespace, llm_manifest("lean"))
    kube.wait_condition(namespace, "lean")
    body = kube.get(namespace, "llm", "lean")
    assert not [k for k in (body["metadata"].get("annotations") or {}) if k.startswith("kopf.goodmem.ai/")]
    assert body["status"]["kopf"]["lastHandled"].startswith("sha256:")
    assert "goodmem.ai/finalizer" in body["metadata"]["finalizers"]
    kube.apply(namespace, llm_manifest("lean", displayName="Lean, renamed"))
    kube.wait_for(lambda: kube.get(namespace, "llm", "lean")["status"].get("observedGeneration") == 2, 20, "update")
    time.sleep(1.0)

    def operator_writes() -> list[tuple[str, str]]:
        out = []
        for line in Path(control_plane.audit_log_path).read_text().splitlines():
            if (
                '"resource":"llms"' not in line
                or f'"namespace":"{namespace}"' not in line
                or '"name":"lean"' not in line
            ):
                continue
            event = json.loads(line)
            if (
                event["stage"] == "ResponseComplete"
                and event["userAgent"].startswith("kopf/")
                and event["verb"] != "get"
            ):
                out.append((event["verb"], event["objectRef"].get("subresource", "")))
        return out

    writes = operator_writes()
    assert writes.count(("patch", "")) == 1, writes  # the finalizer, nothing else on the object itself
    assert writes.count(("patch", "status")) == 2, writes  # one per handled change: create, update


def test_describe_shows_why_not_ready(kube: Kube, namespace: str, operator: OperatorProcess) -> None:
    kube.apply(
        namespace, llm_manifest("nosecret", credentials={"apiKey": {"secretKeyRef": {"name": "absent", "key": "k"}}})
    )
    kube.wait_condition(namespace, "nosecret", "False", "SecretNotFound")
    out = kube.run("-n", namespace, "describe", "llm", "nosecret").stdout
    assert "SecretNotFound" in out and f"Secret {namespace}/absent not found" in out
