"""Least privilege, proven: deploy/ applied with `kubectl apply -k`, the operator run with ONLY its
ServiceAccount's identity (a TokenRequest token), a full create/update/rotate/delete cycle with leader election on
(the Lease in goodmem-system, as the Deployment runs it), and the identity shown unable to do anything else.

How the rules were found (README, Install: Permissions): kopf's sources (clients/, reactor/observation.py)
and the operator's own Kubernetes calls (a Secret read, a status patch). Each one is shown to be needed by
`test_each_rule_is_needed`: for every (apiGroup, resource, verb) the deploy/ ClusterRole grants, the
operator runs with exactly that one removed and the API server's audit log shows the 403 it meets (llms
list/watch: nothing is served; llms patch: no finalizer; llms/status patch: no status; secrets get: the
metadata-only read that tells a Secret without the opt-in label from a missing one; secrets list: the Secret
watch and the read of a labelled Secret (a list by name with the label selector); secrets watch: the Secret
watch, so no rotation; events create: no Events). No `get` on LLMs is needed. Watching every namespace, the
operator opens one watch stream per namespace (watching.py), which takes kopf's namespace observation (namespaces
list/watch) and with it its CRD observation (customresourcedefinitions list/watch); it asks for the namespace
rights first (a SelfSubjectAccessReview) and without them falls back to one cluster-wide stream, so those two are
proven by the fallback rather than by a 403. With --namespace nothing cluster-scoped is read. The leader
election's Role (deploy/base/leader-election-role.yaml: create leases; get and update the Lease goodmem-operator by
name, in goodmem-system only) is proven rule by rule by `test_each_lease_rule_is_needed`.

This module runs its own control plane: the session's operator (tests/e2e/conftest.py) watches every
namespace as admin and would reconcile these LLMs too, which would prove nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from goodmem_devcluster import ControlPlane
from goodmem_devcluster._proc import free_ports
from goodmem_devcluster.audit import REVIEWS, WRITE_VERBS
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess
from goodmem_devcluster.testing import control_plane_session

from .conftest import ROOT, Kube, llm_manifest, secret_manifest

pytestmark = pytest.mark.e2e

SYSTEM_NS = "goodmem-system"
SA = "goodmem-operator"
SA_USER = f"system:serviceaccount:{SYSTEM_NS}:{SA}"
REF = {
    "apiKey": {"secretKeyRef": {"name": "key", "key": "api-key"}, "headerName": "Authorization", "prefix": "Bearer "}
}
#: The documented rules, as (apiGroup, resource, verb).
GRANTED = {
    ("goodmem.ai", "llms", "list"),
    ("goodmem.ai", "llms", "watch"),
    ("goodmem.ai", "llms", "patch"),
    ("goodmem.ai", "llms/status", "patch"),
    ("goodmem.ai", "goodmemconnections", "list"),
    ("goodmem.ai", "goodmemconnections", "watch"),
    ("goodmem.ai", "goodmemconnections", "patch"),
    ("goodmem.ai", "goodmemconnections/status", "patch"),
    ("", "secrets", "get"),
    ("", "secrets", "list"),
    ("", "secrets", "watch"),
    ("", "events", "create"),
}
#: The ClusterRole only (a single-namespace Role has none of these): watching every namespace, one stream each, and
#: the cluster-scoped ClusterGoodMemConnections.
CLUSTER_GRANTED = {
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("goodmem.ai", "clustergoodmemconnections", "list"),
    ("goodmem.ai", "clustergoodmemconnections", "watch"),
    ("goodmem.ai", "clustergoodmemconnections", "patch"),
    ("goodmem.ai", "clustergoodmemconnections/status", "patch"),
}
#: The connection kinds: test_each_rule_is_needed gives each of their cases a connection object to handle.
CONNECTION_RESOURCES = {"goodmemconnections", "clustergoodmemconnections"}
CLUSTER_ROLE = ROOT / "deploy" / "overlays" / "cluster-wide" / "clusterrole.yaml"
#: Leader election, in the operator's namespace only: create, and get/update of the Lease goodmem-operator by name.
LEASE_ROLE = ROOT / "deploy" / "base" / "leader-election-role.yaml"
LEASE_ROLE_NAME = "goodmem-operator-leader-election"
LEASE = "goodmem-operator"
LEASE_GRANTED = {
    ("coordination.k8s.io", "leases", "create"),
    ("coordination.k8s.io", "leases", "get"),
    ("coordination.k8s.io", "leases", "update"),
}
#: The flags of an operator that runs as the Deployment does: leader election, the Lease in goodmem-system.
ELECTED = ("--leader-election", "--operator-namespace", SYSTEM_NS)
CREDENTIALS_LABEL = {"goodmem.ai/credentials": "true"}  # the opt-in label a Secret needs to be used


def _lease_role() -> dict[str, Any]:
    return dict(next(doc for doc in yaml.safe_load_all(LEASE_ROLE.read_text()) if doc["kind"] == "Role"))


def manifest_rules(path: Path = CLUSTER_ROLE) -> list[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the deploy/ ClusterRole grants (tests/unit/test_deploy.py keeps the
    Role and the Helm chart equal to it); with LEASE_ROLE, the leader election's Role."""
    role = _lease_role() if path == LEASE_ROLE else yaml.safe_load(path.read_text())
    return sorted(
        {
            (group, resource, verb)
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
    )


#: What breaks without each rule; the 403 the API server answers is for that same verb and resource.
#: A rule in deploy/ with no entry here fails test_each_rule_is_needed: prove it is needed, then add it.
WITHOUT_RULE = {
    ("goodmem.ai", "llms", "list"): "kopf cannot list LLMs: nothing is served",
    ("goodmem.ai", "llms", "watch"): "kopf cannot watch LLMs: nothing is served",
    ("goodmem.ai", "llms", "patch"): "no finalizer: a deleted LLM would leave its registry entry behind",
    ("goodmem.ai", "llms/status", "patch"): "no status: Ready, llmId and the conditions are never written",
    ("", "secrets", "get"): "a referenced Secret without the opt-in label cannot be told from a missing one",
    ("", "secrets", "list"): "the Secret watch cannot start: no rotation is seen",
    ("", "secrets", "watch"): "the Secret watch cannot start: no rotation is seen",
    ("", "events", "create"): "no Events on LLMs",
    # The operator asks before it opens a stream per namespace (a SelfSubjectAccessReview: no 403), so these two
    # are proven by the fallback instead: one cluster-wide stream, and the log says which right is missing.
    ("", "namespaces", "list"): "no stream per namespace: one cluster-wide stream, so namespaces wait on each other",
    ("", "namespaces", "watch"): "no stream per namespace: one cluster-wide stream, so namespaces wait on each other",
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): "kopf cannot follow the LLM CRD (upgrades unseen)",
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): "kopf cannot follow the LLM CRD (upgrades unseen)",
    # Connections (issue #15): a GoodMemConnection in the case's namespace and a ClusterGoodMemConnection selecting
    # it (`_connections`). No `get` on either kind nor on their /status: granted, no case ever met a 403 without it
    # (kopf reads them from its watch), so deploy/ does not grant it.
    ("goodmem.ai", "goodmemconnections", "list"): "kopf cannot list GoodMemConnections: no LLM finds its connection",
    ("goodmem.ai", "goodmemconnections", "watch"): "kopf cannot watch GoodMemConnections: no LLM finds its connection",
    ("goodmem.ai", "goodmemconnections", "patch"): "no finalizer: a connection in use could be deleted under its LLMs",
    ("goodmem.ai", "goodmemconnections/status", "patch"): "no connection status: Ready, principal, users never shown",
    ("goodmem.ai", "clustergoodmemconnections", "list"): "kopf cannot list ClusterGoodMemConnections",
    ("goodmem.ai", "clustergoodmemconnections", "watch"): "kopf cannot watch ClusterGoodMemConnections",
    ("goodmem.ai", "clustergoodmemconnections", "patch"): "no finalizer on a cluster connection in use",
    ("goodmem.ai", "clustergoodmemconnections/status", "patch"): "no cluster connection status",
}
#: Without each Lease rule no replica ever works (the Lease cannot be made, read, taken or renewed): nothing is served.
WITHOUT_LEASE_RULE = {
    ("coordination.k8s.io", "leases", "create"): "the first replica cannot create the Lease: no replica ever works",
    ("coordination.k8s.io", "leases", "get"): "no replica can read the Lease: none ever works",
    ("coordination.k8s.io", "leases", "update"): "a free Lease cannot be taken (nor renewed, nor released)",
}
#: Rules whose absence the operator detects and works around (watching.choose): proven by the fallback, not a 403.
ASKED_FIRST = {("", "namespaces", "list"), ("", "namespaces", "watch")}

#: 403s, "Forbidden", kopf's "Not enough permissions": any of them in the log means a missing right.
#: (?<![,.\d]) keeps a timestamp's milliseconds ("01:57:37,403") from matching.
DENIED = re.compile(r"(?i)forbidden|(?<![,.\d])403(?!\d)|not enough permissions")


#: The dev cluster's policy (writes by everyone) plus every request of the operator's identity, reads
#: included, so a 403 on a list, watch or get shows in the audit log too. Metadata level: no bodies.
AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
omitManagedFields: true
rules:
  - level: Metadata
    users: ["{SA_USER}"]
  - level: Metadata
    verbs: [{", ".join(f'"{v}"' for v in WRITE_VERBS)}]
  - level: None
"""


@pytest.fixture(scope="module")
def cluster(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    policy = tmp_path_factory.mktemp("rbac-audit") / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    with control_plane_session(pytestconfig, extra_apiserver_args=[f"--audit-policy-file={policy}"]) as cp:
        cp.install_crds(ROOT / "crds", server_side=True)
        yield cp


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emu = EmulatorProcess(
        tmp_path_factory.mktemp("rbac-emulator") / "emulator.log",
        api_key="rbac-operator-key",
        admin_key="rbac-admin-key",
    ).start()
    try:
        yield emu
    finally:
        emu.stop()


def _fresh_namespace(cp: ControlPlane) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cp.kubectl("create", "namespace", name)
    return name


def can_i(cp: ControlPlane, kubeconfig: Path, verb: str, resource: str, namespace: str | None) -> bool:
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    res = cp.kubectl("auth", "can-i", verb, resource, *scope, kubeconfig=kubeconfig, check=False)
    return res.stdout.strip() == "yes"


def rules_in(cp: ControlPlane, kubeconfig: Path, namespace: str) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the identity holds in `namespace` (a SelfSubjectRulesReview),
    less the self-review APIs every authenticated user has."""
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": namespace},
    }
    res = cp.kubectl(
        "create", "--validate=false", "-o", "json", "-f", "-", input=json.dumps(review), kubeconfig=kubeconfig
    )
    out: set[tuple[str, str, str]] = set()
    for rule in json.loads(res.stdout)["status"]["resourceRules"]:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return {r for r in out if not r[1].startswith("selfsubject")}


def wait_until(what: Any, timeout: float = 15.0, message: str = "") -> None:
    """RBAC reaches the authorizer through an informer: poll, never assume."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s: {message}")


def sa_requests(cp: ControlPlane, since: datetime) -> list[tuple[str, str, str, str]]:
    """(verb, resource[/subresource], response code, stage) of every request the operator's identity made
    since `since` (AUDIT_POLICY records all of them, reads included)."""
    out = []
    for ev in cp.audit_events():
        if ev.get("user", {}).get("username") != SA_USER:
            continue
        if datetime.fromisoformat(ev["requestReceivedTimestamp"]) < since:
            continue
        ref = ev.get("objectRef", {})
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.append((ev["verb"], resource, str(ev.get("responseStatus", {}).get("code")), ev.get("stage", "")))
    return out


def sa_writes(cp: ControlPlane, since: datetime) -> set[tuple[str, str, str]]:
    """(verb, resource[/subresource], response code) of every write the operator's identity made since `since`.
    A SelfSubjectAccessReview is a `create` that stores nothing (the operator asks one at startup: watching.py)."""
    return {
        (verb, resource, code)
        for verb, resource, code, stage in sa_requests(cp, since)
        if stage == "ResponseComplete" and verb in WRITE_VERBS and resource not in REVIEWS
    }


def sa_watch_scopes(cp: ControlPlane, since: datetime, resource: str) -> set[str | None]:
    """The namespaces of the operator's watches on `resource` since `since` (None: a cluster-wide watch)."""
    return {
        ev.get("objectRef", {}).get("namespace")
        for ev in cp.audit_events()
        if ev.get("user", {}).get("username") == SA_USER
        and datetime.fromisoformat(ev["requestReceivedTimestamp"]) >= since
        and ev.get("verb") == "watch"
        and ev.get("objectRef", {}).get("resource") == resource
    }


def sa_denied(cp: ControlPlane, since: datetime) -> set[tuple[str, str]]:
    """(verb, resource[/subresource]) of every request of the operator's identity answered 403 since `since`."""
    return {(verb, resource) for verb, resource, code, _ in sa_requests(cp, since) if code == "403"}


def start_operator(kubeconfig: Path, registry: EmulatorProcess, log: Path, *args: str) -> OperatorProcess:
    return OperatorProcess(
        log,
        kubeconfig=kubeconfig,
        base_url=registry.base_url,
        api_key=registry.api_key,
        extra_args=["--debug", "--log-format", "full", "--drift-interval", "3600", *args],
    ).start()


def _healthy(port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _puts(registry: EmulatorProcess, llm_id: str) -> list[dict[str, Any]]:
    return [e for e in registry.stats()["log"] if e["method"] == "PUT" and llm_id in e["path"]]


def test_cluster_wide_install_runs_a_full_cycle_with_only_its_identity(
    cluster: ControlPlane, registry: EmulatorProcess, tmp_path: Path
) -> None:
    cp, kube = cluster, Kube(cluster)
    cp.kubectl("apply", "-k", str(ROOT / "deploy" / "overlays" / "cluster-wide"))
    kubeconfig = cp.kubeconfig_for_service_account(SYSTEM_NS, SA)
    wait_until(lambda: can_i(cp, kubeconfig, "watch", "llms.goodmem.ai", None), message="the ClusterRoleBinding")
    ns = _fresh_namespace(cp)
    assert rules_in(cp, kubeconfig, ns) == GRANTED | CLUSTER_GRANTED, "exactly the documented rules, nothing more"
    wait_until(lambda: can_i(cp, kubeconfig, "create", "leases", SYSTEM_NS), message="the Lease RoleBinding")
    assert rules_in(cp, kubeconfig, SYSTEM_NS) == GRANTED | CLUSTER_GRANTED | LEASE_GRANTED, "and the Lease's"
    assert not can_i(cp, kubeconfig, "get", "leases/another-lease", SYSTEM_NS), "only the Lease by its name"
    assert not can_i(cp, kubeconfig, "create", "leases", ns), "the Lease rules only in the operator's namespace"
    cp.kubectl("-n", SYSTEM_NS, "delete", "lease", LEASE, "--ignore-not-found")

    started = datetime.now(UTC)
    [health_port] = free_ports(1)
    op = start_operator(
        kubeconfig,
        registry,
        tmp_path / "operator.log",
        f"--liveness=http://127.0.0.1:{health_port}/healthz",
        *ELECTED,
    )  # the Deployment's probe, on a free port, and its leader election
    try:
        kube.wait_for(lambda: _healthy(health_port), 15, "the liveness endpoint")
        # create, with credentials from a Secret
        kube.apply(ns, secret_manifest("key", {"api-key": "first-value"}))
        kube.apply(ns, llm_manifest("rbac", credentials=REF))
        kube.wait_condition(ns, "rbac", "True", "Available")
        obj = kube.get(ns, "llm", "rbac")
        assert "goodmem.ai/finalizer" in obj["metadata"]["finalizers"]
        llm_id = obj["status"]["llmId"]
        record = registry.record(llm_id)
        assert record is not None and record["labels"]["goodmem.ai/owner-uid"] == obj["metadata"]["uid"]
        kube.wait_for(lambda: "Created" in [e["reason"] for e in kube.events(ns)], 10, "the Created Event")

        # update: one PUT of the changed field
        registry.reset_stats()
        kube.run(
            "-n", ns, "patch", "llm", "rbac", "--type", "merge", "-p", '{"spec":{"description":"least privilege"}}'
        )
        kube.wait_for(lambda: kube.get(ns, "llm", "rbac")["status"].get("observedGeneration") == 2, 30, "generation 2")
        kube.wait_condition(ns, "rbac", "True", "Available")
        puts = _puts(registry, llm_id)
        assert [p["body"] for p in puts] == [{"description": "least privilege"}]

        # rotate the Secret: one PUT of the credentials
        fingerprint = registry.record(llm_id)["credentialsFingerprint"]
        registry.reset_stats()
        kube.apply(ns, secret_manifest("key", {"api-key": "second-value"}))
        kube.wait_for(lambda: registry.record(llm_id)["credentialsFingerprint"] != fingerprint, 20, "rotation")
        puts = _puts(registry, llm_id)
        assert len(puts) == 1 and set(puts[0]["body"]) == {"credentials"}

        # delete: the entry goes, the finalizer is released
        kube.run("-n", ns, "delete", "llm", "rbac", "--wait=true", "--timeout=30s")
        assert kube.get(ns, "llm", "rbac") is None
        assert registry.record(llm_id) is None
    finally:
        op.stop()

    log = op.log_text()
    denied = [line for line in log.splitlines() if DENIED.search(line)]
    assert not denied, "\n".join(denied[:10])
    writes = sa_writes(cp, started)
    assert {(verb, resource) for verb, resource, _ in writes} == {
        ("patch", "llms"),
        ("patch", "llms/status"),
        ("create", "events"),
        ("create", "leases"),  # the Lease, made by the first replica
        ("update", "leases"),  # renewed, and released on the clean stop
    }, writes
    assert "released the Lease" in log
    assert {code for *_, code in writes} <= {"200", "201"}, writes


def test_the_identity_cannot_write_secrets_nor_touch_anything_else(cluster: ControlPlane) -> None:
    cp = cluster
    cp.kubectl("apply", "-k", str(ROOT / "deploy" / "overlays" / "cluster-wide"))
    kubeconfig = cp.kubeconfig_for_service_account(SYSTEM_NS, SA)
    wait_until(lambda: can_i(cp, kubeconfig, "watch", "llms.goodmem.ai", None), message="the ClusterRoleBinding")
    ns = _fresh_namespace(cp)
    for verb in ("get", "list", "watch"):
        assert can_i(cp, kubeconfig, verb, "secrets", ns), verb
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        assert not can_i(cp, kubeconfig, verb, "secrets", ns), f"{verb} secrets"
    for verb, resource in [
        ("get", "configmaps"),
        ("create", "configmaps"),
        ("get", "deployments.apps"),
        ("create", "deployments.apps"),
        ("get", "pods"),
        ("create", "pods"),
        ("delete", "pods"),
        ("create", "serviceaccounts/token"),
        ("create", "llms.goodmem.ai"),
        ("update", "llms.goodmem.ai"),
        # Connections are the users' to create and delete; the operator reads them and patches finalizer and status.
        ("get", "goodmemconnections.goodmem.ai"),
        ("get", "clustergoodmemconnections.goodmem.ai"),
        ("create", "goodmemconnections.goodmem.ai"),
        ("update", "goodmemconnections.goodmem.ai"),
        ("delete", "goodmemconnections.goodmem.ai"),
        ("create", "clustergoodmemconnections.goodmem.ai"),
        ("update", "clustergoodmemconnections.goodmem.ai"),
        ("delete", "clustergoodmemconnections.goodmem.ai"),
        ("delete", "llms.goodmem.ai"),
        ("get", "llms.goodmem.ai"),
        ("delete", "events"),
        ("patch", "events"),
        # Namespaces and CRDs are listed and watched (a stream per namespace), never written.
        ("create", "namespaces"),
        ("delete", "namespaces"),
        ("patch", "namespaces"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("update", "customresourcedefinitions.apiextensions.k8s.io"),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ]:
        assert not can_i(cp, kubeconfig, verb, resource, ns), f"{verb} {resource}"
    # And for real, not only as a review: writing a Secret is refused by the API server.
    res = cp.kubectl(
        "-n", ns, "create", "secret", "generic", "stolen", "--from-literal=k=v", kubeconfig=kubeconfig, check=False
    )
    assert res.returncode != 0 and "forbidden" in res.stderr.lower(), res.stderr
    res = cp.kubectl("-n", ns, "create", "configmap", "nope", kubeconfig=kubeconfig, check=False)
    assert res.returncode != 0 and "forbidden" in res.stderr.lower(), res.stderr


def _single_namespace_overlay(tmp_path: Path, watched: str) -> Path:
    """An overlay on top of deploy/overlays/single-namespace, as the README tells users to write one."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    deploy = os.path.relpath(ROOT / "deploy", overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n- {deploy}/overlays/single-namespace\n"
        "configMapGenerator:\n- name: goodmem-operator-config\n  behavior: merge\n"
        f"  literals:\n  - GOODMEM_WATCH_NAMESPACES={watched}\n"
        f"components:\n- {deploy}/components/watched-namespace\n"
    )
    return overlay


def test_single_namespace_install_works_there_and_nowhere_else(
    cluster: ControlPlane, registry: EmulatorProcess, tmp_path: Path
) -> None:
    cp, kube = cluster, Kube(cluster)
    # Same ServiceAccount as the cluster-wide install: take the cluster-wide grant away first.
    cp.kubectl("delete", "clusterrolebinding", SA, "--ignore-not-found")
    cp.kubectl("delete", "clusterrole", SA, "--ignore-not-found")
    kubeconfig = cp.kubeconfig_for_service_account(SYSTEM_NS, SA)
    wait_until(lambda: not can_i(cp, kubeconfig, "watch", "llms.goodmem.ai", None), message="the grant to go")

    watched, other = _fresh_namespace(cp), _fresh_namespace(cp)
    overlay = _single_namespace_overlay(tmp_path, watched)
    rendered = cp.kubectl("kustomize", str(overlay)).stdout
    assert "kind: ClusterRole" not in rendered
    cp.kubectl("apply", "-k", str(overlay))
    wait_until(lambda: can_i(cp, kubeconfig, "watch", "llms.goodmem.ai", watched), message="the RoleBinding")
    assert rules_in(cp, kubeconfig, watched) == GRANTED
    assert rules_in(cp, kubeconfig, other) == set(), "no rights outside the watched namespace"
    assert not can_i(cp, kubeconfig, "list", "llms.goodmem.ai", None)

    op = start_operator(kubeconfig, registry, tmp_path / "operator.log", "--namespace", watched)
    try:
        kube.apply(watched, secret_manifest("key", {"api-key": "ns-value"}))
        kube.apply(watched, llm_manifest("inside", credentials=REF))
        kube.apply(other, llm_manifest("outside"))
        kube.wait_condition(watched, "inside", "True", "Available")
        llm_id = kube.get(watched, "llm", "inside")["status"]["llmId"]
        kube.run("-n", watched, "delete", "llm", "inside", "--wait=true", "--timeout=30s")
        assert registry.record(llm_id) is None
        outside = kube.get(other, "llm", "outside")
        assert not outside.get("status") and not outside["metadata"].get("finalizers"), "never touched"
    finally:
        op.stop()
    denied = [line for line in op.log_text().splitlines() if DENIED.search(line)]
    assert not denied, "\n".join(denied[:10])


def test_readme_command_releases_finalizers_left_by_an_uninstalled_operator(
    cluster: ControlPlane, registry: EmulatorProcess, tmp_path: Path
) -> None:
    """README, Uninstall: the operator is gone, its LLMs hang in Terminating; the documented command frees
    them and leaves the registry entries as they are."""
    cp, kube = cluster, Kube(cluster)
    ns = _fresh_namespace(cp)
    op = OperatorProcess(
        tmp_path / "operator.log",
        kubeconfig=cp.kubeconfig_path,
        base_url=registry.base_url,
        api_key=registry.api_key,
        extra_args=["--namespace", ns],
    ).start()
    try:
        for name in ("left-1", "left-2"):
            kube.apply(ns, llm_manifest(name))
        for name in ("left-1", "left-2"):
            kube.wait_condition(ns, name, "True", "Available")
    finally:
        op.stop()  # "uninstalled"
    ids = [kube.get(ns, "llm", n)["status"]["llmId"] for n in ("left-1", "left-2")]
    kube.run("-n", ns, "delete", "llm", "--all", "--wait=false")
    time.sleep(1.0)
    assert all(kube.get(ns, "llm", n)["metadata"].get("deletionTimestamp") for n in ("left-1", "left-2"))

    readme = (ROOT / "README.md").read_text()
    [block] = [b for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if '"finalizers":null' in b]
    shim = tmp_path / "bin"
    shim.mkdir()
    kubectl = shim / "kubectl"
    kubectl.write_text("#!/bin/sh\nexec " + shlex.join(cp.kubectl_command()) + ' "$@"\n')
    kubectl.chmod(0o755)
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(cp.kubectl_env(), PATH=f"{shim}:{os.environ['PATH']}"),
        check=False,
    )
    assert res.returncode == 0, res.stderr
    kube.wait_for(lambda: all(kube.get(ns, "llm", n) is None for n in ("left-1", "left-2")), 15, "LLMs gone")
    for llm_id in ids:
        record = registry.record(llm_id)
        assert record is not None and "goodmem.ai/owner-uid" in record["labels"], "entries left as they were"


def test_the_rule_table_matches_deploy() -> None:
    """No stale entry: every rule WITHOUT_RULE explains is one deploy/ grants (the converse is checked per rule)."""
    assert set(WITHOUT_RULE) <= set(manifest_rules()), set(WITHOUT_RULE) - set(manifest_rules())
    assert set(manifest_rules()) == GRANTED | CLUSTER_GRANTED, "the documented rules are the ones in deploy/"
    assert set(WITHOUT_LEASE_RULE) == set(manifest_rules(LEASE_ROLE)) == LEASE_GRANTED


def _cluster_role_without(rule: tuple[str, str, str]) -> str:
    """deploy/'s ClusterRole with the one verb `rule` names taken out (a rule left with no verb is dropped)."""
    role = yaml.safe_load(CLUSTER_ROLE.read_text())
    group, resource, verb = rule
    rules = []
    for r in role["rules"]:
        if group in r["apiGroups"] and resource in r["resources"]:
            rest = [res for res in r["resources"] if res != resource]
            if rest:
                rules.append({**r, "resources": rest})
            if [v for v in r["verbs"] if v != verb]:
                rules.append({**r, "resources": [resource], "verbs": [v for v in r["verbs"] if v != verb]})
        else:
            rules.append(r)
    role["rules"] = rules
    return json.dumps(role)


def _connections(cp: ControlPlane, kube: Kube, ns: str, registry: EmulatorProcess) -> None:
    """A GoodMemConnection in `ns` and a ClusterGoodMemConnection selecting it, each with its labelled key Secret (the
    cluster one's in the operator's namespace), pointing at the registry. Not named `default`: the scenario's LLM
    keeps the operator's own settings, as in every other case."""
    key = {"name": "rbac-conn-key", "key": "api-key"}
    for namespace in (ns, SYSTEM_NS):
        kube.apply(namespace, secret_manifest(key["name"], {"api-key": registry.api_key}))
    spec = {"baseUrl": registry.base_url, "apiKeySecretRef": key}
    kube.apply(
        ns,
        json.dumps(
            {
                "apiVersion": "goodmem.ai/v1alpha1",
                "kind": "GoodMemConnection",
                "metadata": {"name": "rbac"},
                "spec": spec,
            }
        ),
    )
    cluster_connection = {
        "apiVersion": "goodmem.ai/v1alpha1",
        "kind": "ClusterGoodMemConnection",
        "metadata": {"name": f"rbac-{ns}"},
        "spec": {**spec, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
    }
    cp.kubectl("apply", "-f", "-", input=json.dumps(cluster_connection))


def _watching(requests: list[tuple[str, str, str, str]], resource: str) -> bool:
    """The operator's watch on `resource` is open (its listing is done)."""
    return any(verb == "watch" and res == resource and code == "200" for verb, res, code, _ in requests)


@pytest.mark.parametrize("rule", manifest_rules(), ids=lambda r: f"{r[1]}-{r[2]}")
def test_each_rule_is_needed(
    cluster: ControlPlane, registry: EmulatorProcess, tmp_path: Path, rule: tuple[str, str, str]
) -> None:
    """deploy/'s ClusterRole less the one verb `rule` names: the operator meets a 403 for exactly that verb and
    resource (the audit log), and no other. One short scenario each: a labelled Secret, the operator started with
    the ServiceAccount's token, once its watches are open an LLM that uses the Secret; stop at the 403. (The
    operator watches every namespace, so an LLM left by an earlier case may meet the 403 first: the same proof.)"""
    assert rule in WITHOUT_RULE, f"{rule} is granted in deploy/ but no case shows it is needed: add one to WITHOUT_RULE"
    cp, kube = cluster, Kube(cluster)
    _group, resource, verb = rule
    cp.kubectl("apply", "-k", str(ROOT / "deploy" / "overlays" / "cluster-wide"))
    kubeconfig = cp.kubeconfig_for_service_account(SYSTEM_NS, SA)
    ns = _fresh_namespace(cp)
    try:
        cp.kubectl("apply", "-f", "-", input=_cluster_role_without(rule))
        wait_until(
            lambda: rules_in(cp, kubeconfig, ns) == (GRANTED | CLUSTER_GRANTED) - {rule},
            message=f"the ClusterRole without {rule}",
        )
        # The Secret exists before the operator starts: unused then, so not cached, and the LLM's reconcile reads it.
        # Labelled Secrets are read with a list by name (label selector); `get` is the metadata-only read that tells
        # an unlabelled Secret from a missing one, so its case uses a Secret that did not opt in.
        labels = {} if rule == ("", "secrets", "get") else CREDENTIALS_LABEL
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "key", "labels": labels},
            "stringData": {"api-key": "rule-value"},
        }
        kube.apply(ns, json.dumps(secret))
        if resource.split("/")[0] in CONNECTION_RESOURCES:
            _connections(cp, kube, ns, registry)  # something for the connection handlers to finalize and report on
        started = datetime.now(UTC)
        op = start_operator(kubeconfig, registry, tmp_path / "operator.log")
        expected = (verb, resource)
        try:

            def seen() -> bool:
                return expected in sa_denied(cp, started)

            # Once both watches are open (or the 403 came first), the LLM: finalizer, Secret read, status, Event.
            kube.wait_for(
                lambda: seen() or all(_watching(sa_requests(cp, started), r) for r in ("llms", "secrets")),
                30,
                "the operator's watches",
            )
            if rule in ASKED_FIRST:
                # Served through one cluster-wide stream instead of one per namespace, and the log says why.
                kube.apply(ns, llm_manifest("needs-" + verb, credentials=REF))
                kube.wait_condition(ns, "needs-" + verb, timeout=30)
                assert sa_watch_scopes(cp, started, "llms") == {None}, "one cluster-wide LLM watch, none per namespace"
                assert f"may not {verb} namespaces" in op.log_text()
            else:
                if not seen():
                    kube.apply(ns, llm_manifest("needs-" + verb, credentials=REF))
                kube.wait_for(seen, 30, f"a 403 for {verb} {resource} ({WITHOUT_RULE[rule]})")
        finally:
            op.stop()
        denied = sa_denied(cp, started)
        assert denied == (set() if rule in ASKED_FIRST else {expected}), f"only the removed rule is missing: {denied}"
        log_lines = [line[:200] for line in op.log_text().splitlines() if "forbidden" in line.lower()]
        print(
            f"\nwithout {verb} {resource}: 403 in the audit log ({WITHOUT_RULE[rule]}); operator log: {log_lines[:1]}"
        )
    finally:
        cp.kubectl("apply", "-k", str(ROOT / "deploy" / "overlays" / "cluster-wide"))


def _lease_role_without(verb: str) -> str:
    """deploy/'s Lease Role with `verb` taken out (a rule left with no verb is dropped)."""
    role = _lease_role()
    rules = []
    for r in role["rules"]:
        verbs = [v for v in r["verbs"] if v != verb]
        if verbs:
            rules.append({**r, "verbs": verbs})
    role["rules"] = rules
    role["metadata"]["namespace"] = SYSTEM_NS
    return json.dumps(role)


def _free_lease() -> str:
    """A released Lease (no holder), as a clean stop leaves it: the next replica reads it, then takes it (update)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    spec = {"holderIdentity": "", "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now}
    meta = {"name": LEASE, "namespace": SYSTEM_NS}
    return json.dumps({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec})


@pytest.mark.parametrize("rule", manifest_rules(LEASE_ROLE), ids=lambda r: f"{r[1]}-{r[2]}")
def test_each_lease_rule_is_needed(
    cluster: ControlPlane, registry: EmulatorProcess, tmp_path: Path, rule: tuple[str, str, str]
) -> None:
    """The Lease Role less the one verb `rule` names, leader election on as in the Deployment: the operator meets
    a 403 for exactly that verb on leases (the audit log), never starts working (kopf never logs in), and meets no
    other 403. For `update` a released Lease exists (it is read, then taken); for `create` none does."""
    assert rule in WITHOUT_LEASE_RULE, f"{rule} is granted in deploy/ but no case shows it is needed"
    cp = cluster
    _group, resource, verb = rule
    cp.kubectl("apply", "-k", str(ROOT / "deploy" / "overlays" / "cluster-wide"))
    kubeconfig = cp.kubeconfig_for_service_account(SYSTEM_NS, SA)
    try:
        cp.kubectl("apply", "-f", "-", input=_lease_role_without(verb))
        wait_until(
            lambda: rules_in(cp, kubeconfig, SYSTEM_NS) == (GRANTED | CLUSTER_GRANTED | LEASE_GRANTED) - {rule},
            message=f"the Lease Role without {verb}",
        )
        cp.kubectl("-n", SYSTEM_NS, "delete", "lease", LEASE, "--ignore-not-found")
        if verb == "update":
            cp.kubectl("apply", "-f", "-", input=_free_lease())
        started = datetime.now(UTC)
        op = OperatorProcess(
            tmp_path / "operator.log",
            kubeconfig=kubeconfig,
            base_url=registry.base_url,
            api_key=registry.api_key,
            extra_args=["--debug", "--log-format", "full", *ELECTED],
        ).start(ready=None)
        expected = (verb, resource)
        try:
            Kube(cp).wait_for(lambda: expected in sa_denied(cp, started), 30, f"a 403 for {verb} {resource}")
            time.sleep(2.5)  # one more attempt (the retry period): still refused, still not working
        finally:
            op.stop()
        denied = sa_denied(cp, started)
        assert denied == {expected}, f"only the removed rule is missing: {denied}"
        log = op.log_text()
        assert OperatorProcess.WORKING.decode() not in log, "without the rule this replica never works"
        assert "HTTP 403" in log, "the refusal is logged (its status, never a body)"
        print(f"\nwithout {verb} {resource}: 403 in the audit log ({WITHOUT_LEASE_RULE[rule]})")
    finally:
        cp.kubectl("apply", "-k", str(ROOT / "deploy" / "overlays" / "cluster-wide"))
        cp.kubectl("-n", SYSTEM_NS, "delete", "lease", LEASE, "--ignore-not-found")
