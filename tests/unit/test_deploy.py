"""deploy/ read as files: the RBAC is the documented least-privilege set everywhere, the pod is locked down.

Rendering and applying them is end-to-end (tests/e2e/test_deploy_manifests.py, test_deploy_rbac.py).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

#: What the operator uses, and nothing else (README, Install: Permissions). Each entry was shown to be
#: needed by removing it and watching the operator fail (see the e2e RBAC test's docstring).
RULES = [
    {"apiGroups": ["goodmem.ai"], "resources": ["llms"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": ["goodmem.ai"], "resources": ["llms/status"], "verbs": ["patch"]},
    {"apiGroups": ["goodmem.ai"], "resources": ["goodmemconnections"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": ["goodmem.ai"], "resources": ["goodmemconnections/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
#: Only in the ClusterRole: one watch stream per namespace needs kopf's namespace observation, which comes with its
#: CRD observation; ClusterGoodMemConnections are cluster-scoped. A Role cannot grant these.
CLUSTER_RULES = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
    {"apiGroups": ["goodmem.ai"], "resources": ["clustergoodmemconnections"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": ["goodmem.ai"], "resources": ["clustergoodmemconnections/status"], "verbs": ["patch"]},
]
#: Leader election (README, High availability), in the operator's own namespace: get and update only the Lease by
#: name; create cannot be limited by name (authorized before the object has one).
LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["goodmem-operator"],
        "verbs": ["get", "update"],
    },
]


def _load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def _helm_rules(template: str = "rules") -> list[dict[str, Any]]:
    text = (DEPLOY / "helm" / "goodmem-operator" / "templates" / "_helpers.tpl").read_text()
    block = re.search(rf'define "goodmem-operator\.{template}" -}}}}\n(.*?)\{{\{{- end -}}}}', text, re.S)
    assert block, f"the {template} template is missing from _helpers.tpl"
    return list(yaml.safe_load(block.group(1)))


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        pytest.param(
            lambda: _load(DEPLOY / "overlays" / "cluster-wide" / "clusterrole.yaml")["rules"],
            RULES + CLUSTER_RULES,
            id="clusterrole",
        ),
        pytest.param(lambda: _load(DEPLOY / "overlays" / "single-namespace" / "role.yaml")["rules"], RULES, id="role"),
        pytest.param(_helm_rules, RULES, id="helm"),
        pytest.param(lambda: _helm_rules("clusterRules"), CLUSTER_RULES, id="helm-cluster"),
        pytest.param(lambda: _lease_role()["rules"], LEASE_RULES, id="lease-role"),
    ],
)
def test_rbac_is_exactly_the_documented_set(rules: Any, expected: list[dict[str, Any]]) -> None:
    assert rules() == expected


def _lease_role() -> dict[str, Any]:
    [role, _binding] = yaml.safe_load_all((DEPLOY / "base" / "leader-election-role.yaml").read_text())
    return dict(role)


def test_the_lease_role_is_bound_to_the_operator_in_its_own_namespace() -> None:
    role, binding = yaml.safe_load_all((DEPLOY / "base" / "leader-election-role.yaml").read_text())
    assert "namespace" not in role["metadata"], "the base's namespace (the operator's), not a watched one"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "goodmem-operator"}]
    assert "leader-election-role.yaml" in _load(DEPLOY / "base" / "kustomization.yaml")["resources"]


def test_helm_lease_rules_name_the_releases_lease() -> None:
    text = (DEPLOY / "helm" / "goodmem-operator" / "templates" / "_helpers.tpl").read_text()
    block = re.search(r'define "goodmem-operator\.leaseRules" -}}\n(.*?)\{\{- end -}}', text, re.S)
    assert block
    rendered = block.group(1).replace('{{ include "goodmem-operator.fullname" . | quote }}', '"goodmem-operator"')
    assert yaml.safe_load(rendered) == LEASE_RULES
    deployment = (DEPLOY / "helm" / "goodmem-operator" / "templates" / "deployment.yaml").read_text()
    assert (
        'name: GOODMEM_LEASE_NAME\n          value: {{ include "goodmem-operator.fullname" . | quote }}' in deployment
    )


def test_helm_grants_cluster_reads_only_in_the_cluster_role() -> None:
    text = (DEPLOY / "helm" / "goodmem-operator" / "templates" / "rbac.yaml").read_text()
    cluster, namespaced = text.split("{{- else }}")
    assert 'include "goodmem-operator.clusterRules"' in cluster
    assert "clusterRules" not in namespaced


def test_no_wildcards_and_secrets_read_only() -> None:
    for rule in RULES + CLUSTER_RULES + LEASE_RULES:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key]
    secrets = [r for r in RULES if "secrets" in r["resources"]]
    assert [set(r["verbs"]) for r in secrets] == [{"get", "list", "watch"}]


def test_readme_documents_the_same_rules() -> None:
    readme = (ROOT / "README.md").read_text()
    for rule in RULES + CLUSTER_RULES + LEASE_RULES:
        group = rule["apiGroups"][0] or "core"
        line = f"| `{group}` | `{rule['resources'][0]}` | {', '.join(f'`{v}`' for v in rule['verbs'])} |"
        assert line in readme, f"README Permissions table lacks: {line}"


def test_base_does_not_ship_the_crd() -> None:
    base = _load(DEPLOY / "base" / "kustomization.yaml")
    assert not any("crd" in str(r).lower() for r in base["resources"]), "the CRD is installed from crds/, not by -k"


def test_no_crd_anywhere_in_deploy() -> None:
    """Every CRD (LLM and both connection kinds) is installed from crds/: a CRD in an overlay or the chart would be
    deleted by `kubectl delete -k` or `helm uninstall`, and every object of its kind with it."""
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".tpl"}:
            assert "kind: CustomResourceDefinition" not in path.read_text(), path
    assert not (DEPLOY / "helm" / "goodmem-operator" / "crds").exists(), "Helm never upgrades a chart's crds/"


def _crds() -> dict[str, dict[str, Any]]:
    """The CRDs in crds/ by plural (what `kubectl apply -f crds/` installs)."""
    out = {}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = _load(path)
        assert crd["kind"] == "CustomResourceDefinition", path
        assert path.name == f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml", path
        out[crd["spec"]["names"]["plural"]] = crd
    return out


def test_crds_holds_the_three_kinds_with_their_scope() -> None:
    crds = _crds()
    assert {p: (c["spec"]["names"]["kind"], c["spec"]["scope"]) for p, c in crds.items()} == {
        "llms": ("LLM", "Namespaced"),
        "goodmemconnections": ("GoodMemConnection", "Namespaced"),
        "clustergoodmemconnections": ("ClusterGoodMemConnection", "Cluster"),
    }
    for plural, crd in crds.items():
        assert crd["metadata"]["name"] == f"{plural}.goodmem.ai"
        assert "goodmem" in crd["spec"]["names"]["categories"], "kubectl get goodmem lists every kind"
        [version] = crd["spec"]["versions"]
        assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}


def test_rbac_names_every_kind_of_crds_at_its_scope() -> None:
    """The namespaced rules (Role, ClusterRole, Helm) cover exactly the namespaced kinds of crds/ and their status;
    the cluster rules exactly the cluster-scoped ones: a new kind without rules, or a rule for a kind a Role
    cannot grant, fails here."""
    crds = _crds()

    def goodmem(rules: list[dict[str, Any]]) -> set[str]:
        return {r.split("/")[0] for rule in rules if rule["apiGroups"] == ["goodmem.ai"] for r in rule["resources"]}

    assert goodmem(RULES) == {p for p, c in crds.items() if c["spec"]["scope"] == "Namespaced"}
    assert goodmem(CLUSTER_RULES) == {p for p, c in crds.items() if c["spec"]["scope"] == "Cluster"}
    for rule in RULES + CLUSTER_RULES:
        for resource in rule["resources"]:
            if resource.endswith("/status"):
                assert rule["apiGroups"] == ["goodmem.ai"] and "patch" in rule["verbs"]


def _deployment() -> dict[str, Any]:
    return _load(DEPLOY / "base" / "deployment.yaml")


def test_two_replicas_one_at_work() -> None:
    """Two pods with leader election: only the Lease holder works, so a rolling update (a surge pod that stands
    by until the old one releases the Lease) never lets two work at once."""
    spec = _deployment()["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert "--leader-election" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["GOODMEM_POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["GOODMEM_OPERATOR_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    [term] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_helm_runs_two_replicas_only_with_leader_election() -> None:
    values = _load(DEPLOY / "helm" / "goodmem-operator" / "values.yaml")
    assert values["replicas"] == 2 and values["leaderElection"]["enabled"] is True
    timings = values["leaderElection"]
    assert timings["leaseDuration"] > timings["renewDeadline"] > timings["retryPeriod"]
    text = (DEPLOY / "helm" / "goodmem-operator" / "templates" / "deployment.yaml").read_text()
    with_election, without = text.split("{{- else }}", 1)
    assert "RollingUpdate" in with_election and "--leader-election" in text
    assert "fail" in without and "replicas: 1" in without and "Recreate" in without


def test_restricted_security_context() -> None:
    pod = _deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [container] = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    allowed = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= allowed, volume


def test_liveness_probe_matches_the_operator_flag() -> None:
    [container] = _deployment()["spec"]["template"]["spec"]["containers"]
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]
    probe = container["livenessProbe"]["httpGet"]
    port = next(p for p in container["ports"] if p["name"] == probe["port"])
    assert probe["path"] == "/healthz" and port["containerPort"] == 8081


def test_resources_and_key_file() -> None:
    [container] = _deployment()["spec"]["template"]["spec"]["containers"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "registry-api-key")
    assert env["GOODMEM_API_KEY_FILE"].startswith(mount["mountPath"] + "/") and mount["readOnly"] is True
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), "a writable /tmp on a read-only root"


def test_configmap_keys_are_operator_settings() -> None:
    """Every GOODMEM_* literal in the kustomize ConfigMap is a variable the operator reads."""
    from goodmem_operator.config import env_names

    read = env_names()
    base = _load(DEPLOY / "base" / "kustomization.yaml")
    single = _load(DEPLOY / "overlays" / "single-namespace" / "kustomization.yaml")
    literals = [lit for gen in base["configMapGenerator"] + single["configMapGenerator"] for lit in gen["literals"]]
    for literal in literals:
        name = literal.split("=", 1)[0]
        assert name in read, f"{name} is not read by goodmem_operator.config"
