"""Deleting a namespace that holds LLMs and their Secrets (issue #16 part 4), on a control plane of its own that runs
kube-controller-manager: each LLM's deletion policy is applied, no entry that should go is left behind, and the
namespace finishes deleting, both with the operator running and with the operator down while the namespace is
deleted. Another namespace's LLMs get no registry write throughout.

The namespace controller deletes a namespace's content all at once (Secrets and LLMs alike), so an LLM's release may
run after its Secret is gone: releasing must not need it. Counts come from this module's own emulator, filtered by
the ids of each test's own LLMs; the times are printed, never asserted (the bound is a generous window).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from goodmem_devcluster import ControlPlane
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess
from goodmem_emulator import owner_id_for_key

from .conftest import ROOT, Kube, llm_manifest, secret_manifest

pytestmark = pytest.mark.e2e

#: How long a namespace may take to go once the operator runs. While LLMs with a finalizer remain, the namespace
#: controller looks again every 8 s (its 15 s estimate for content with finalizers, halved, plus one).
NAMESPACE_GONE_WITHIN = 90.0
OWNER = "goodmem.ai/owner"
OWNER_UID = "goodmem.ai/owner-uid"
TEAM_KEY = "ns-team-registry-key"  # a namespace's own registry principal, through its GoodMemConnection


@pytest.fixture(scope="module")
def cp(control_plane_with_controller_manager: ControlPlane) -> ControlPlane:
    return control_plane_with_controller_manager


@pytest.fixture(scope="module")
def k(cp: ControlPlane) -> Kube:
    return Kube(cp)


@pytest.fixture(scope="module")
def registry(cp: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(
        tmp_path_factory.mktemp("ns-emulator") / "emulator.log",
        api_key="ns-operator-key",
        admin_key="ns-admin-key",
        more_keys=(TEAM_KEY,),
    ).start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def op(
    cp: ControlPlane, registry: EmulatorProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator watching every namespace (one stream per namespace, following namespaces: the default)."""
    cp.install_crds(ROOT / "crds")
    operator = OperatorProcess(
        tmp_path_factory.mktemp("ns-operator") / "operator.log",
        kubeconfig=cp.kubeconfig_path,
        base_url=registry.base_url,
        api_key=registry.api_key,
        extra_args=["--debug", "--log-format", "full", "--drift-interval", "3600"],
    ).start()
    try:
        yield operator
    finally:
        operator.stop()


@dataclass
class Tenant:
    """A namespace with a labelled Secret and three LLMs that use it: two `Delete` (one by default), one `Orphan`."""

    namespace: str
    ids: dict[str, str]  # LLM name -> registry id
    uids: dict[str, str]  # LLM name -> resource UID

    DELETED = ("gone-explicit", "gone-default")
    ORPHANED = "kept"


def populate(k: Kube, prefix: str, connection_to: str = "") -> Tenant:
    """With `connection_to` (a registry URL), the namespace's LLMs go through its own GoodMemConnection `default`."""
    ns = f"{prefix}-{uuid.uuid4().hex[:8]}"
    k.run("create", "namespace", ns)
    if connection_to:
        k.apply(ns, secret_manifest("registry", {"api-key": TEAM_KEY}))
        k.apply(
            ns,
            json.dumps(
                {
                    "apiVersion": "goodmem.ai/v1alpha1",
                    "kind": "GoodMemConnection",
                    "metadata": {"name": "default"},
                    "spec": {"baseUrl": connection_to, "apiKeySecretRef": {"name": "registry", "key": "api-key"}},
                }
            ),
        )
        k.wait_for(
            lambda: "Connected" in json.dumps((k.get(ns, "goodmemconnection", "default") or {}).get("status")),
            30,
            "the connection Ready",
        )
    k.apply(ns, secret_manifest("creds", {"api-key": f"sk-{ns}"}))
    ref = {"apiKey": {"secretKeyRef": {"name": "creds", "key": "api-key"}}}
    k.apply(ns, llm_manifest("gone-explicit", deletionPolicy="Delete", credentials=ref))
    k.apply(ns, llm_manifest("gone-default", credentials=ref))
    k.apply(ns, llm_manifest("kept", deletionPolicy="Orphan", credentials=ref, labels={"team": "x"}))
    ids, uids = {}, {}
    for name in (*Tenant.DELETED, Tenant.ORPHANED):
        k.wait_condition(ns, name, timeout=60)
        obj = k.get(ns, "llm", name)
        ids[name], uids[name] = obj["status"]["llmId"], obj["metadata"]["uid"]
    return Tenant(ns, ids, uids)


@pytest.fixture(scope="module")
def bystander(k: Kube, op: OperatorProcess) -> Tenant:
    """Another namespace's LLMs, Ready before any namespace is deleted, never touched afterwards."""
    return populate(k, "bystander")


def writes(registry: EmulatorProcess, llm_id: str) -> list[str]:
    """The registry writes to one entry: its create (POST with this client-chosen id), PUTs and DELETEs."""
    found = []
    for e in registry.stats()["log"]:
        body = e.get("body")
        if (
            e["method"] == "POST"
            and e["route"] == "/v1/llms"
            and isinstance(body, dict)
            and body.get("llmId") == llm_id
        ):
            found.append("POST")
        elif e["method"] in ("PUT", "DELETE") and e["path"] == f"/v1/llms/{llm_id}":
            found.append(e["method"])
    return found


def namespace_exists(k: Kube, ns: str) -> bool:
    return k.run("get", "namespace", ns, check=False).returncode == 0


def wait_namespace_gone(k: Kube, ns: str, since: float, after: str) -> None:
    k.wait_for(lambda: not namespace_exists(k, ns), NAMESPACE_GONE_WITHIN, f"namespace {ns} to finish deleting")
    print(f"\n[namespace deletion] {ns} gone {time.monotonic() - since:.1f}s after {after}")


def assert_policies_applied(cp: ControlPlane, registry: EmulatorProcess, tenant: Tenant) -> None:
    ns = tenant.namespace
    for name in Tenant.DELETED:
        llm_id = tenant.ids[name]
        assert registry.record(llm_id) is None, f"{name}: deletionPolicy Delete, its entry must be gone"
        assert writes(registry, llm_id) == ["POST", "DELETE"], name
    kept = registry.record(tenant.ids[Tenant.ORPHANED])
    assert kept is not None, "deletionPolicy Orphan: the entry stays"
    assert kept["labels"] == {"team": "x", f"goodmem.ai/grant.default.{ns}": "adopt"}, (
        "no ownership marks left; only the grant that lets this namespace adopt it back"
    )
    assert writes(registry, tenant.ids[Tenant.ORPHANED]) == ["POST", "PUT"], "one PUT strips the ownership labels"
    owned = [r["llmId"] for r in registry.records() if f"/{ns}/" in (r.get("labels") or {}).get(OWNER, "")]
    assert owned == [], "no entry of the deleted namespace still claims an owner"
    refused = [
        e
        for e in cp.audit_events()
        if (e.get("objectRef") or {}).get("namespace") == ns and (e.get("responseStatus") or {}).get("code") == 403
    ]
    assert refused == [], "no Event (or anything else) is sent into the namespace while it is being deleted"


def assert_untouched(k: Kube, registry: EmulatorProcess, tenant: Tenant) -> None:
    for name, llm_id in tenant.ids.items():
        assert writes(registry, llm_id) == ["POST"], f"{tenant.namespace}/{name}: no registry write since its create"
        record = registry.record(llm_id)
        assert record is not None and record["labels"][OWNER_UID] == tenant.uids[name]
        assert (k.condition(tenant.namespace, name) or {}).get("status") == "True"


def test_deleting_a_namespace_applies_each_deletion_policy_and_the_namespace_goes(
    cp: ControlPlane, k: Kube, op: OperatorProcess, registry: EmulatorProcess, bystander: Tenant
) -> None:
    tenant = populate(k, "tenant")
    start = time.monotonic()
    k.run("delete", "namespace", tenant.namespace, "--wait=false")
    wait_namespace_gone(k, tenant.namespace, start, "kubectl delete namespace (operator running)")
    assert_policies_applied(cp, registry, tenant)
    assert_untouched(k, registry, bystander)


def test_a_namespace_with_its_own_connection_releases_through_it_and_goes(
    cp: ControlPlane, k: Kube, op: OperatorProcess, registry: EmulatorProcess, bystander: Tenant
) -> None:
    """The namespace's connection, its key Secret and its LLMs are deleted at once: the LLMs are released through the
    connection with the key it last had, the connection's finalizer holds until they are, and the namespace goes."""
    tenant = populate(k, "conn", connection_to=registry.base_url)
    owners = {registry.record(llm_id)["ownerId"] for llm_id in tenant.ids.values()}  # type: ignore[index]
    assert owners == {owner_id_for_key(TEAM_KEY)}, "the entries were made under the namespace's own principal"
    start = time.monotonic()
    k.run("delete", "namespace", tenant.namespace, "--wait=false")
    wait_namespace_gone(k, tenant.namespace, start, "kubectl delete namespace (LLMs on a GoodMemConnection)")
    assert_policies_applied(cp, registry, tenant)
    assert_untouched(k, registry, bystander)


def test_a_namespace_deleted_while_the_operator_is_down_finishes_when_it_is_back(
    cp: ControlPlane, k: Kube, op: OperatorProcess, registry: EmulatorProcess, bystander: Tenant
) -> None:
    """The namespace controller deletes the Secrets and marks the LLMs for deletion; the LLMs wait on the operator's
    finalizer, so the namespace stays Terminating. The operator, started again, finds the namespace being deleted,
    releases its LLMs without their Secret (gone by then), and the namespace goes."""
    tenant = populate(k, "offline")
    ns = tenant.namespace
    op.stop()
    try:
        k.run("delete", "namespace", ns, "--wait=false")

        def held_by_finalizers() -> bool:
            body = json.loads(k.run("get", "namespace", ns, "-o", "json").stdout)
            conditions = {c["type"]: c["status"] for c in body.get("status", {}).get("conditions") or []}
            return conditions.get("NamespaceFinalizersRemaining") == "True"

        k.wait_for(held_by_finalizers, 60, f"the namespace controller to find {ns}'s LLMs held by their finalizer")
        secrets = json.loads(k.run("-n", ns, "get", "secrets", "-o", "json").stdout)["items"]
        assert secrets == [], "the Secrets are gone before the operator is back: releasing cannot read them"
        llms = json.loads(k.run("-n", ns, "get", "llms", "-o", "json").stdout)["items"]
        assert sorted(o["metadata"]["name"] for o in llms) == sorted(tenant.ids)
        assert all(o["metadata"].get("deletionTimestamp") for o in llms)
        for llm_id in tenant.ids.values():
            assert writes(registry, llm_id) == ["POST"], "nothing happens in the registry while the operator is down"
    finally:
        restarted = time.monotonic()
        op.start()
    wait_namespace_gone(k, ns, restarted, "the operator's restart (it was down during kubectl delete namespace)")
    assert_policies_applied(cp, registry, tenant)
    assert_untouched(k, registry, bystander)


def test_the_garbage_collector_cascades_owner_references(k: Kube) -> None:
    """The other controller this control plane runs: a dependent goes with its owner."""
    ns = f"gc-{uuid.uuid4().hex[:8]}"
    k.run("create", "namespace", ns)
    owner = json.loads(k.run("-n", ns, "create", "configmap", "owner", "-o", "json").stdout)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    k.apply(
        ns,
        json.dumps(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dependent", "ownerReferences": [ref]}}
        ),
    )
    k.run("-n", ns, "delete", "configmap", "owner")
    k.wait_for(lambda: k.get(ns, "configmap", "dependent") is None, 60, "the dependent ConfigMap to be collected")
