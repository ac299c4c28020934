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
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
#: Only where the operator watches every namespace (the ClusterRole): one watch stream per namespace needs kopf's
#: namespace observation, which comes with its CRD observation. A Role cannot grant them and needs neither.
CLUSTER_RULES = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
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
    ],
)
def test_rbac_is_exactly_the_documented_set(rules: Any, expected: list[dict[str, Any]]) -> None:
    assert rules() == expected


def test_helm_grants_cluster_reads_only_in_the_cluster_role() -> None:
    text = (DEPLOY / "helm" / "goodmem-operator" / "templates" / "rbac.yaml").read_text()
    cluster, namespaced = text.split("{{- else }}")
    assert 'include "goodmem-operator.clusterRules"' in cluster
    assert "clusterRules" not in namespaced


def test_no_wildcards_and_secrets_read_only() -> None:
    for rule in RULES + CLUSTER_RULES:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key]
    secrets = [r for r in RULES if "secrets" in r["resources"]]
    assert [set(r["verbs"]) for r in secrets] == [{"get", "list", "watch"}]


def test_readme_documents_the_same_rules() -> None:
    readme = (ROOT / "README.md").read_text()
    for rule in RULES + CLUSTER_RULES:
        group = rule["apiGroups"][0] or "core"
        line = f"| `{group}` | `{rule['resources'][0]}` | {', '.join(f'`{v}`' for v in rule['verbs'])} |"
        assert line in readme, f"README Permissions table lacks: {line}"


def test_base_does_not_ship_the_crd() -> None:
    base = _load(DEPLOY / "base" / "kustomization.yaml")
    assert not any("crd" in str(r).lower() for r in base["resources"]), "the CRD is installed from crds/, not by -k"


def _deployment() -> dict[str, Any]:
    return _load(DEPLOY / "base" / "deployment.yaml")


def test_one_replica_recreate() -> None:
    spec = _deployment()["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}


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
