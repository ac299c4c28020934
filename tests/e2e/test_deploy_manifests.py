"""deploy/ rendered and checked by the real API server: kustomize overlays, Pod Security "restricted",
and the Helm chart (helm built from hack/go/helm, `helm template` + server-side dry run).

The PodSecurity admission plugin is on in the local kube-apiserver. For a Deployment it only warns
(it judges the pod template); a Pod is where it refuses, so the template is also submitted as a bare
Pod with --dry-run=server, and variants that break one rule each must be refused.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from goodmem_devcluster import ControlPlane
from goodmem_devcluster.testing import require_tool

from .conftest import ROOT

pytestmark = pytest.mark.e2e

DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "goodmem-operator"


def _ns(cp: ControlPlane, *labels: str) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    cp.kubectl("create", "namespace", name)
    if labels:
        cp.kubectl("label", "namespace", name, *labels)
    return name


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _render(cp: ControlPlane, path: Path) -> list[dict[str, Any]]:
    return _docs(cp.kubectl("kustomize", str(path)).stdout)


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


LEASE_ROLE = "goodmem-operator-leader-election"  # the leader election's Role and RoleBinding, in goodmem-system


def _watch_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Roles and RoleBindings of the watched namespaces (not the leader election's)."""
    return [d for d in docs if d["kind"] in ("Role", "RoleBinding") and "leader-election" not in d["metadata"]["name"]]


def _dry_run(cp: ControlPlane, docs: list[dict[str, Any]]) -> subprocess.CompletedProcess:
    body = "\n---\n".join(json.dumps(d) for d in docs)
    return cp.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=body, check=False)


def test_overlays_render_and_the_api_server_accepts_them(control_plane: ControlPlane) -> None:
    cp = control_plane
    wide = _render(cp, DEPLOY / "overlays" / "cluster-wide")
    single = _render(cp, DEPLOY / "overlays" / "single-namespace")
    lease_rbac = ["Role", "RoleBinding"]  # leader election, in goodmem-system (both overlays)
    cluster_rbac = ["ClusterRole", "ClusterRoleBinding"]
    assert sorted(d["kind"] for d in wide) == sorted(
        ["Namespace", "ServiceAccount", *cluster_rbac, "ConfigMap", "Secret", "Deployment", *lease_rbac]
    )
    assert sorted(d["kind"] for d in single) == sorted(
        ["Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret", "Deployment", *lease_rbac]
    )
    watched = _one(single, "ConfigMap")["data"]["GOODMEM_WATCH_NAMESPACES"]
    assert _one(single, "Role", "goodmem-operator")["metadata"]["namespace"] == watched
    assert _one(single, "RoleBinding", "goodmem-operator")["metadata"]["namespace"] == watched
    for docs in (wide, single):
        assert _one(docs, "Role", LEASE_ROLE)["metadata"]["namespace"] == "goodmem-system"
        assert _one(docs, "RoleBinding", LEASE_ROLE)["metadata"]["namespace"] == "goodmem-system"
    for docs in (wide, single):
        deployment = _one(docs, "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        # kustomize rewrote the references to the hashed ConfigMap and Secret names
        assert pod["containers"][0]["envFrom"][0]["configMapRef"]["name"] == _one(docs, "ConfigMap")["metadata"]["name"]
        key_volume = next(v for v in pod["volumes"] if v["name"] == "registry-api-key")
        assert key_volume["secret"]["secretName"] == _one(docs, "Secret")["metadata"]["name"]
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] in ("ServiceAccount", "Deployment")} == {
            "goodmem-system"
        }
    # The namespace for real (it is what both overlays install into), then everything as a server-side dry run.
    cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(_one(wide, "Namespace")))
    res = _dry_run(cp, wide)
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr, res.stderr
    cp.kubectl("create", "namespace", watched, check=False)
    res = _dry_run(cp, single)
    assert res.returncode == 0, res.stderr


def _pod_from(deployment: dict[str, Any], namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "goodmem-operator-psa", "namespace": namespace},
        "spec": copy.deepcopy(deployment["spec"]["template"]["spec"]),
    }


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(pod["spec"]["containers"][0])


VIOLATIONS = {
    "privilege-escalation": lambda p: _container(p)["securityContext"].update(allowPrivilegeEscalation=True),
    "capabilities-kept": lambda p: _container(p)["securityContext"].update(capabilities={"drop": ["NET_RAW"]}),
    "capability-added": lambda p: _container(p)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
    "root": lambda p: (
        p["spec"]["securityContext"].update(runAsNonRoot=False, runAsUser=0),
        _container(p)["securityContext"].update(runAsNonRoot=False, runAsUser=0),
    ),
    "no-seccomp": lambda p: (
        p["spec"]["securityContext"].pop("seccompProfile"),
        _container(p)["securityContext"].pop("seccompProfile"),
    ),
    "host-path": lambda p: p["spec"]["volumes"].append({"name": "h", "hostPath": {"path": "/etc"}}),
    "privileged": lambda p: _container(p)["securityContext"].update(privileged=True, allowPrivilegeEscalation=True),
}


@pytest.fixture(scope="module")
def deployment(control_plane: ControlPlane) -> dict[str, Any]:
    return _one(_render(control_plane, DEPLOY / "overlays" / "cluster-wide"), "Deployment")


def test_deployment_passes_pod_security_restricted(control_plane: ControlPlane, deployment: dict[str, Any]) -> None:
    cp = control_plane
    ns = _ns(cp, "pod-security.kubernetes.io/enforce=restricted", "pod-security.kubernetes.io/warn=restricted")
    applied = copy.deepcopy(deployment)
    applied["metadata"]["namespace"] = ns
    res = cp.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(applied))
    assert "PodSecurity" not in res.stderr and "Warning" not in res.stderr, res.stderr
    res = cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(_pod_from(deployment, ns)), check=False)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("violation", sorted(VIOLATIONS))
def test_a_weaker_pod_is_refused(control_plane: ControlPlane, deployment: dict[str, Any], violation: str) -> None:
    cp = control_plane
    ns = _ns(cp, "pod-security.kubernetes.io/enforce=restricted")
    pod = _pod_from(deployment, ns)
    VIOLATIONS[violation](pod)
    res = cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert res.returncode != 0 and 'violates PodSecurity "restricted:latest"' in res.stderr, res.stderr
    bad = copy.deepcopy(deployment)
    bad["metadata"]["namespace"] = ns
    bad["spec"]["template"]["spec"] = pod["spec"]
    res = cp.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(bad), check=False)
    assert res.returncode == 0 and "would violate PodSecurity" in res.stderr, "a Deployment is only warned about"


# -- Helm ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Any:
    binary = require_tool("helm", pytestconfig)
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(
        os.environ,
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
    )

    def run(*args: str) -> str:
        res = subprocess.run([str(binary), *args], capture_output=True, text=True, env=env, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        return res.stdout

    return run


def test_helm_chart_lints(helm: Any) -> None:
    assert "0 chart(s) failed" in helm("lint", str(CHART))


def test_helm_chart_cluster_wide_dry_runs_on_the_api_server(control_plane: ControlPlane, helm: Any) -> None:
    cp = control_plane
    release_ns = _ns(cp, "pod-security.kubernetes.io/enforce=restricted")
    docs = _docs(
        helm(
            "template",
            "gm",
            str(CHART),
            "--namespace",
            release_ns,
            "--set",
            "registry.baseUrl=https://registry.example.test",
        )
    )
    assert sorted(d["kind"] for d in docs) == sorted(
        ["ServiceAccount", "Secret", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Deployment"]
    )
    lease_role = _one(docs, "Role")
    assert lease_role["metadata"]["namespace"] == release_ns
    kustomize_lease = _one(_render(cp, DEPLOY / "overlays" / "cluster-wide"), "Role", LEASE_ROLE)["rules"]
    assert lease_role["rules"][0] == kustomize_lease[0]
    assert lease_role["rules"][1] == {**kustomize_lease[1], "resourceNames": ["gm-goodmem-operator"]}, "the release's"
    kustomize_rules = _one(_render(cp, DEPLOY / "overlays" / "cluster-wide"), "ClusterRole")["rules"]
    assert _one(docs, "ClusterRole")["rules"] == kustomize_rules
    res = _dry_run(cp, docs)
    assert res.returncode == 0, res.stderr
    assert "Warning" not in res.stderr, res.stderr
    pod = _pod_from(_one(docs, "Deployment"), release_ns)
    res = cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
    assert res.returncode == 0, res.stderr
    env = {
        e["name"]: e.get("value") for e in _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["GOODMEM_BASE_URL"] == "https://registry.example.test" and env["GOODMEM_WATCH_NAMESPACES"] == ""
    assert env["GOODMEM_LEASE_NAME"] == "gm-goodmem-operator", "the Lease the Role names"


def test_helm_chart_watching_namespaces_has_no_cluster_role(control_plane: ControlPlane, helm: Any) -> None:
    cp = control_plane
    release_ns, team_a, team_b = _ns(cp), _ns(cp), _ns(cp)
    docs = _docs(
        helm(
            "template",
            "gm",
            str(CHART),
            "--namespace",
            release_ns,
            "--set",
            f"watchNamespaces={{{team_a},{team_b}}}",
            "--set",
            "registry.apiKey.existingSecret=my-registry-key",
        )
    )
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ServiceAccount"] + ["Role", "RoleBinding"] * 3 + ["Deployment"]), kinds
    assert {d["metadata"]["namespace"] for d in _watch_roles(docs)} == {team_a, team_b}
    assert {d["metadata"]["namespace"] for d in docs if "leader-election" in d["metadata"]["name"]} == {release_ns}
    deployment = _one(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GOODMEM_WATCH_NAMESPACES"] == f"{team_a},{team_b}"
    key_volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "registry-api-key")
    assert key_volume["secret"]["secretName"] == "my-registry-key"
    res = _dry_run(cp, docs)
    assert res.returncode == 0, res.stderr


def test_argocd_cm_patch_from_the_readme_adds_only_the_health_check(control_plane: ControlPlane) -> None:
    """README, GitOps: `kubectl -n argocd patch configmap argocd-cm --type merge --patch-file ...`."""
    cp = control_plane
    ns = _ns(cp)  # stands in for `argocd`
    cp.kubectl("-n", ns, "create", "configmap", "argocd-cm", "--from-literal=url=https://argocd.example.test")
    cp.kubectl(
        "-n",
        ns,
        "patch",
        "configmap",
        "argocd-cm",
        "--type",
        "merge",
        "--patch-file",
        str(DEPLOY / "argocd" / "argocd-cm.yaml"),
    )
    data = json.loads(cp.kubectl("-n", ns, "get", "configmap", "argocd-cm", "-o", "json").stdout)["data"]
    connection_health = (DEPLOY / "argocd" / "connection-health.lua").read_text()
    assert data == {
        "url": "https://argocd.example.test",
        "resource.customizations.health.goodmem.ai_LLM": (DEPLOY / "argocd" / "health.lua").read_text(),
        "resource.customizations.health.goodmem.ai_GoodMemConnection": connection_health,
        "resource.customizations.health.goodmem.ai_ClusterGoodMemConnection": connection_health,
    }
    readme = (ROOT / "README.md").read_text()
    assert (
        "kubectl -n argocd patch configmap argocd-cm --type merge --patch-file deploy/argocd/argocd-cm.yaml" in readme
    )


def test_the_readme_overlay_example_renders(control_plane: ControlPlane, tmp_path: Path) -> None:
    """README, Install: the example overlay sets the image, the registry URL and the key."""
    readme = (ROOT / "README.md").read_text()
    [example] = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "# my-goodmem/kustomization.yaml" in b]
    overlay = tmp_path / "my-goodmem"
    overlay.mkdir()
    deploy = os.path.relpath(DEPLOY, overlay)
    (overlay / "kustomization.yaml").write_text(example.replace("../goodmem-operator/deploy", deploy))
    (overlay / "registry-api-key.txt").write_text("the-real-key")
    docs = _render(control_plane, overlay)
    pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/platform/goodmem-operator:0.1.0"
    config = _one(docs, "ConfigMap")
    assert config["data"]["GOODMEM_BASE_URL"] == "https://goodmem.example.internal"
    assert config["data"]["GOODMEM_LOG_FORMAT"] == "json", "merged, not replaced"
    secret = _one(docs, "Secret")
    assert base64.b64decode(secret["data"]["api-key"]).decode() == "the-real-key"
    key_volume = next(v for v in pod["volumes"] if v["name"] == "registry-api-key")
    assert key_volume["secret"]["secretName"] == secret["metadata"]["name"]
