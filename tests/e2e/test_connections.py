"""Connections on the real control plane: every team its own registry identity.

team-a and team-b each have a GoodMemConnection named `default` with their own key (their own principal in the
emulator); a ClusterGoodMemConnection serves the namespaces it selects; a second emulator plays team-a's
registry going down. The operator is the session's, running as a real process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess
from goodmem_emulator import owner_id_for_key
from tests.leakscan import assert_no_leaks

from .conftest import OPERATOR_NAMESPACE, SENTINEL, TEAM_KEYS, Kube, llm_manifest, scrape_metrics, secret_manifest

pytestmark = pytest.mark.e2e

KEY_A, KEY_B, KEY_PLATFORM = TEAM_KEYS


def connection_manifest(name: str, base_url: str, secret: str = "registry", **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "goodmem.ai/v1alpha1",
            "kind": "GoodMemConnection",
            "metadata": {"name": name},
            "spec": {"baseUrl": base_url, "apiKeySecretRef": {"name": secret, "key": "api-key"}, **spec},
        }
    )


def cluster_connection_manifest(name: str, base_url: str, secret: str, selector: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "goodmem.ai/v1alpha1",
            "kind": "ClusterGoodMemConnection",
            "metadata": {"name": name},
            "spec": {
                "baseUrl": base_url,
                "apiKeySecretRef": {"name": secret, "key": "api-key"},
                "namespaceSelector": selector,
            },
        }
    )


def new_namespace(kube: Kube, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kube.run("create", "namespace", name)
    if labels:
        kube.run("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
    return name


def team(kube: Kube, base_url: str, key: str, prefix: str) -> str:
    """A namespace with its labelled key Secret and its `default` GoodMemConnection, Ready."""
    ns = new_namespace(kube, prefix)
    kube.apply(ns, secret_manifest("registry", {"api-key": key}))
    kube.apply(ns, connection_manifest("default", base_url))
    wait_connection(kube, ns, "default")
    return ns


def connection_ready(kube: Kube, ns: str, name: str, kind: str = "goodmemconnection") -> dict[str, Any] | None:
    obj = kube.get(ns, kind, name) or {}
    ready = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
    return obj if ready and ready["status"] == "True" else None


def wait_connection(kube: Kube, ns: str, name: str, kind: str = "goodmemconnection") -> dict[str, Any]:
    return kube.wait_for(lambda: connection_ready(kube, ns, name, kind), 30, f"{kind} {ns}/{name} Ready")  # type: ignore[no-any-return]


def entry(kube: Kube, emulator: EmulatorProcess, ns: str, name: str) -> dict[str, Any]:
    llm_id = kube.get(ns, "llm", name)["status"]["llmId"]
    record = emulator.record(llm_id)
    assert record is not None, f"{ns}/{name}: no registry entry {llm_id}"
    return record


@pytest.fixture(scope="module")
def operator_namespace(kube: Kube) -> str:
    kube.run("create", "namespace", OPERATOR_NAMESPACE, check=False)  # the session operator's own (may exist)
    return OPERATOR_NAMESPACE


@pytest.fixture
def outage_registry(tmp_path: Path) -> Iterator[EmulatorProcess]:
    """A second registry (team-a's own), stopped by pid at the end."""
    emu = EmulatorProcess(tmp_path / "second-emulator.log", api_key=KEY_A, admin_key="e2e-second-admin").start()
    try:
        yield emu
    finally:
        emu.stop()


def test_each_team_writes_under_its_own_principal(
    kube: Kube, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    a = team(kube, emulator.base_url, KEY_A, "team-a")
    b = team(kube, emulator.base_url, KEY_B, "team-b")
    kube.apply(a, llm_manifest("chat"))
    kube.apply(b, llm_manifest("chat", endpointUrl="https://b.models.example.test/v1"))
    for ns in (a, b):
        kube.wait_condition(ns, "chat")
        assert kube.get(ns, "llm", "chat")["status"]["connection"] == "GoodMemConnection/default"
    assert entry(kube, emulator, a, "chat")["ownerId"] == owner_id_for_key(KEY_A)
    assert entry(kube, emulator, b, "chat")["ownerId"] == owner_id_for_key(KEY_B)
    # The connection's status: the principal the registry named, its users; printer columns show them.
    status = kube.wait_for(
        lambda: (s := kube.get(a, "goodmemconnection", "default")["status"]).get("llmCount") == 1 and s,
        45,
        "llmCount 1",
    )
    assert status["principal"] == owner_id_for_key(KEY_A) and status["users"] == [f"{a}/chat"]
    table = kube.run("-n", a, "get", "gmconn").stdout
    assert "Base-URL" in table.upper().replace("BASE-URL", "Base-URL") and owner_id_for_key(KEY_A) in table

    # team-b names team-a's entry: its key may not touch it; nothing changes there.
    stolen_id = entry(kube, emulator, a, "chat")["llmId"]
    before = emulator.record(stolen_id)
    kube.apply(b, llm_manifest("steal", llmId=stolen_id, displayName="Taken over"))
    kube.wait_condition(b, "steal", status="False")
    time.sleep(1)
    assert emulator.record(stolen_id) == before


def test_missing_connection_waits_and_heals(kube: Kube, operator: OperatorProcess, emulator: EmulatorProcess) -> None:
    ns = new_namespace(kube, "team-w")
    kube.apply(ns, llm_manifest("waits", connectionRef={"kind": "GoodMemConnection", "name": "later"}))
    kube.wait_condition(ns, "waits", status="False", reason="ConnectionNotFound")
    kube.apply(ns, secret_manifest("registry", {"api-key": KEY_B}))
    kube.apply(ns, connection_manifest("later", emulator.base_url))
    kube.wait_condition(ns, "waits", timeout=30)  # healed by itself: no edit of the LLM
    assert entry(kube, emulator, ns, "waits")["ownerId"] == owner_id_for_key(KEY_B)
    # connectionRef is immutable: the API server refuses the change.
    moved = kube.apply(
        ns, llm_manifest("waits", connectionRef={"kind": "GoodMemConnection", "name": "other"}), check=False
    )
    assert moved.returncode != 0 and "connectionRef is immutable" in moved.stderr


def test_cluster_connection_serves_only_selected_namespaces(
    kube: Kube, operator: OperatorProcess, emulator: EmulatorProcess, operator_namespace: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    name = f"shared-{tag}"
    kube.apply(operator_namespace, secret_manifest(name, {"api-key": KEY_PLATFORM}))
    kube.apply("default", cluster_connection_manifest(name, emulator.base_url, name, {"matchLabels": {"tier": tag}}))
    wait_connection(kube, "", name, "clustergoodmemconnection")
    selected = new_namespace(kube, "sel", {"tier": tag})
    unselected = new_namespace(kube, "unsel")
    ref = {"connectionRef": {"kind": "ClusterGoodMemConnection", "name": name}}
    kube.apply(selected, llm_manifest("x", **ref))
    kube.apply(unselected, llm_manifest("y", **ref))
    kube.wait_condition(selected, "x")
    assert entry(kube, emulator, selected, "x")["ownerId"] == owner_id_for_key(KEY_PLATFORM)
    kube.wait_condition(unselected, "y", status="False", reason="ConnectionNotAllowed")
    # Labelling the namespace lets it in: the LLM heals by itself.
    kube.run("label", "namespace", unselected, f"tier={tag}")
    kube.wait_condition(unselected, "y", timeout=30)
    assert entry(kube, emulator, unselected, "y")["ownerId"] == owner_id_for_key(KEY_PLATFORM)


def test_a_registry_down_behind_one_connection_does_not_hold_up_another(
    kube: Kube, operator: OperatorProcess, emulator: EmulatorProcess, outage_registry: EmulatorProcess
) -> None:
    a = team(kube, outage_registry.base_url, KEY_A, "down-a")
    b = team(kube, emulator.base_url, KEY_B, "up-b")
    outage_registry.set_faults(outage=True)
    for i in range(10):
        kube.apply(a, llm_manifest(f"a{i}"))
    kube.wait_condition(a, "a0", status="False", timeout=30)
    started = time.monotonic()
    kube.apply(b, llm_manifest("lone"))
    kube.wait_condition(b, "lone", timeout=30)
    print(f"team-b's lone create while team-a's registry is down: {time.monotonic() - started:.2f}s")
    assert entry(kube, emulator, b, "lone")["ownerId"] == owner_id_for_key(KEY_B)
    outage_registry.clear_faults()
    for i in range(10):
        kube.wait_condition(a, f"a{i}", timeout=60)  # back: team-a converges (its own retries, the breaker's probe)


def test_deleting_a_connection_in_use_waits_and_deletes_no_entry(
    kube: Kube, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    ns = team(kube, emulator.base_url, KEY_A, "del")
    kube.apply(ns, llm_manifest("kept", deletionPolicy="Orphan"))
    kube.wait_condition(ns, "kept")
    llm_id = kube.get(ns, "llm", "kept")["status"]["llmId"]
    kube.run("-n", ns, "delete", "goodmemconnection", "default", "--wait=false")
    held = kube.wait_for(
        lambda: (
            (c := kube.get(ns, "goodmemconnection", "default"))
            and (c.get("status") or {}).get("users") == [f"{ns}/kept"]
            and c
        ),
        30,
        "the connection held, its user listed",
    )
    assert held["metadata"].get("deletionTimestamp")
    reasons = {e["reason"] for e in kube.events(ns) if e["involvedObject"]["kind"] == "GoodMemConnection"}
    assert "InUse" in reasons
    kube.run("-n", ns, "delete", "llm", "kept")
    kube.wait_for(lambda: kube.get(ns, "goodmemconnection", "default") is None, 30, "the connection gone")
    assert emulator.record(llm_id) is not None  # Orphan: the entry stays; deleting the connection deleted nothing


def test_a_connection_key_never_leaks(kube: Kube, operator: OperatorProcess, emulator: EmulatorProcess) -> None:
    """The sentinel as a connection's registry key: accepted, then rotated to a sentinel the registry refuses
    (Unauthorized), then back; it shows nowhere but in the registry's own hands."""
    ns = team(kube, emulator.base_url, SENTINEL + "-connection", "leak")
    kube.apply(ns, llm_manifest("leak"))
    kube.wait_condition(ns, "leak")
    kube.apply(ns, secret_manifest("registry", {"api-key": SENTINEL + "-refused"}))
    kube.wait_for(
        lambda: "Unauthorized" in json.dumps((kube.get(ns, "goodmemconnection", "default") or {}).get("status")),
        30,
        "the refused key shows as Unauthorized",
    )
    kube.apply(ns, secret_manifest("registry", {"api-key": SENTINEL + "-connection"}))
    wait_connection(kube, ns, "default")
    reasons = {e["reason"] for e in kube.events(ns) if e["involvedObject"]["kind"] == "GoodMemConnection"}
    assert "KeyRotated" in reasons
    places = {
        "operator log (debug)": operator.log_text(),
        "connection": json.dumps(kube.get(ns, "goodmemconnection", "default")),
        "LLM": json.dumps(kube.get(ns, "llm", "leak")),
        "events": json.dumps(kube.events(ns)),
        "metrics": scrape_metrics(operator),
    }
    assert_no_leaks(places, SENTINEL)


def test_a_restart_does_not_flap_llms_on_connections(
    kube: Kube, operator: OperatorProcess, emulator: EmulatorProcess
) -> None:
    """LLMs bound to connections are resumed after the connections are known (the startup seed): no
    ConnectionNotFound/NotReady for a moment on every restart."""
    ns = team(kube, emulator.base_url, KEY_A, "restart")
    kube.apply(ns, llm_manifest("steady"))
    kube.wait_condition(ns, "steady")
    before = kube.condition(ns, "steady")
    operator.stop()
    operator.start()
    kube.wait_for(lambda: "connection(s) at startup" in operator.log_text(), 30, "the startup seed")
    kube.wait_for(lambda: "steady" in operator.log_text().rsplit("connection(s) at startup", 1)[1], 30, "the resume")
    time.sleep(2)
    assert kube.condition(ns, "steady") == before, "Ready unchanged through the restart"
    reasons = {e["reason"] for e in kube.events(ns)}
    assert not reasons & {"ConnectionNotFound", "ConnectionNotReady", "ConnectionNotAllowed"}, reasons


def test_team_keys_rotate_without_a_restart(kube: Kube, operator: OperatorProcess, emulator: EmulatorProcess) -> None:
    """team-a's key is rotated while its LLMs converge: the registry learns the new key, the Secret changes, the old
    key is revoked; every LLM reaches Ready under the same principal, the operator process is the same. Then an LLM
    that failed Unauthorized (the key revoked before the Secret changed) retries as soon as the Secret changes, not
    after its backoff."""
    tag = uuid.uuid4().hex[:6]
    first, second, third = (f"rot-{tag}-{n}" for n in ("one", "two", "three"))
    principal = emulator.add_key(first)
    pid = operator.pid
    ns = team(kube, emulator.base_url, first, "rotate")
    for i in range(5):
        kube.apply(ns, llm_manifest(f"r{i}"))
    emulator.add_key(second, same_as=first)
    kube.apply(ns, secret_manifest("registry", {"api-key": second}))
    kube.wait_for(
        lambda: any(
            e["reason"] == "KeyRotated" and e["involvedObject"]["kind"] == "GoodMemConnection" for e in kube.events(ns)
        ),
        30,
        "the KeyRotated Event",
    )
    emulator.revoke_key(first)
    for i in range(5, 10):
        kube.apply(ns, llm_manifest(f"r{i}"))
    for i in range(10):
        kube.wait_condition(ns, f"r{i}", timeout=30)
        assert entry(kube, emulator, ns, f"r{i}")["ownerId"] == principal
    status = kube.get(ns, "goodmemconnection", "default")["status"]
    assert status.get("keyRotatedTime") and status["principal"] == principal

    emulator.add_key(third, same_as=second)  # the registry knows the next key...
    emulator.revoke_key(second)  # ...and drops the current one before the Secret has the next
    kube.apply(ns, llm_manifest("late"))
    kube.wait_condition(ns, "late", status="False", reason="Unauthorized", ctype="Synced", timeout=30)
    kube.apply(ns, secret_manifest("registry", {"api-key": third}))
    kube.wait_condition(ns, "late", timeout=30)  # the auth backoff is 120 s: this is the rotation's retry
    assert entry(kube, emulator, ns, "late")["ownerId"] == principal
    assert operator.pid == pid, "no restart"


def test_export_through_a_connection(
    kube: Kube, operator: OperatorProcess, emulator: EmulatorProcess, tmp_path: Path
) -> None:
    """`goodmem-operator export --connection`: reads the registry through a team's connection (its URL and key, read
    with the caller's kubeconfig, never the operator's key), and the manifests name that connection; applied, they
    observe the team's entries, all UpToDate=True."""
    from tests.e2e.test_plan import _imported

    ns = team(kube, emulator.base_url, KEY_B, "export")
    ids = {
        emulator._admin("POST", "/v1/llms", _imported(i, ns), api_key=KEY_B)["llm"]["llmId"]  # by hand, team-b's key
        for i in range(3)
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOODMEM_")}
    env["KUBECONFIG"] = str(kube.cp.kubeconfig_path)
    out = tmp_path / "export.yaml"
    cli = Path(sys.executable).with_name("goodmem-operator")
    args = ["export", "--connection", "GoodMemConnection/default", "-n", ns, "-l", f"batch={ns}", "-o", str(out)]
    res = subprocess.run(
        [str(cli), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0 and "3 manifests, 0 skipped" in res.stderr, res.stderr
    assert out.read_text().count("connectionRef") == 3 and KEY_B not in out.read_text() + res.stderr
    kube.run("-n", ns, "apply", "-f", str(out))

    def observed() -> list[dict[str, Any]] | None:
        items = json.loads(kube.run("-n", ns, "get", "llms", "-o", "json").stdout)["items"]
        ups = [
            next((c for c in (i.get("status") or {}).get("conditions", []) if c["type"] == "UpToDate"), {})
            for i in items
        ]
        return items if len(items) == 3 and all(u.get("status") == "True" for u in ups) else None

    items = kube.wait_for(observed, 60, "the exported LLMs UpToDate=True")
    assert {i["spec"]["llmId"] for i in items} == ids
    assert {i["status"]["connection"] for i in items} == {"GoodMemConnection/default"}
