"""examples/two-teams/ read against the API models: every object valid, every reference resolvable within the
example, each team on its own key and registry, the cluster connection selecting exactly the namespace it means to,
and every secret value an obvious placeholder. (The API server's own verdict: tests/e2e/test_examples_two_teams.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from goodmem_operator.api.connections import (
    DEFAULT_CONNECTION_NAME,
    ClusterGoodMemConnectionSpec,
    GoodMemConnectionSpec,
)
from goodmem_operator.api.types import LLMSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "two-teams"
OPERATOR_NAMESPACE = "goodmem-system"  # where a ClusterGoodMemConnection's Secrets live (deploy/)
CREDENTIALS_LABEL = ("goodmem.ai/credentials", "true")


def _docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(EXAMPLE.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _of(kind: str) -> list[dict[str, Any]]:
    return [d for d in _docs() if d["kind"] == kind]


def _key(doc: dict[str, Any]) -> tuple[str | None, str]:
    return doc["metadata"].get("namespace"), doc["metadata"]["name"]


def test_the_example_holds_two_teams_and_a_shared_registry() -> None:
    assert {d["metadata"]["name"] for d in _of("Namespace")} == {"team-a", "team-b", "shared-apps"}
    assert {_key(d) for d in _of("GoodMemConnection")} == {("team-a", "default"), ("team-b", "default")}
    assert {_key(d) for d in _of("ClusterGoodMemConnection")} == {(None, "default")}
    assert {d["metadata"]["namespace"] for d in _of("LLM")} == {"team-a", "team-b", "shared-apps"}


def test_the_top_level_examples_stay_one_namespace_one_registry() -> None:
    """examples/*.yaml are applied with `-n NAMESPACE` against the operator's own registry (make demo, the e2e
    examples test, the image test): none may name a namespace or bring a connection; those live in two-teams/."""
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            assert doc["kind"] in {"LLM", "Secret"}, (path.name, doc["kind"])
            assert "namespace" not in doc["metadata"], path.name
            assert "connectionRef" not in (doc.get("spec") or {}), path.name


def test_every_object_is_valid_for_its_model() -> None:
    for doc in _of("LLM"):
        LLMSpec.model_validate(doc["spec"])
    for doc in _of("GoodMemConnection"):
        GoodMemConnectionSpec.model_validate(doc["spec"])
        assert doc["metadata"].get("namespace"), "a GoodMemConnection lives in its team's namespace"
    for doc in _of("ClusterGoodMemConnection"):
        ClusterGoodMemConnectionSpec.model_validate(doc["spec"])
        assert "namespace" not in doc["metadata"], "cluster-scoped"
    for doc in _docs():
        assert doc["apiVersion"] in {"v1", "goodmem.ai/v1alpha1"}, doc["kind"]
        if doc["kind"] not in {"Namespace", "ClusterGoodMemConnection"}:
            assert doc["metadata"].get("namespace"), f"{doc['kind']} {doc['metadata']['name']} names its namespace"


def _secret(namespace: str, name: str, key: str) -> dict[str, Any]:
    matches = [d for d in _of("Secret") if _key(d) == (namespace, name)]
    assert matches, f"Secret {namespace}/{name} is not in the example"
    [secret] = matches
    assert CREDENTIALS_LABEL in secret["metadata"].get("labels", {}).items(), f"{namespace}/{name} is not labelled"
    assert key in secret["stringData"], f"{namespace}/{name} has no key {key}"
    return secret


def test_every_key_reference_resolves_to_a_labelled_secret_where_the_operator_looks() -> None:
    for conn in _of("GoodMemConnection"):
        ref = conn["spec"]["apiKeySecretRef"]
        _secret(conn["metadata"]["namespace"], ref["name"], ref["key"])  # the connection's own namespace
    for conn in _of("ClusterGoodMemConnection"):
        ref = conn["spec"]["apiKeySecretRef"]
        _secret(OPERATOR_NAMESPACE, ref["name"], ref["key"])  # the operator's namespace, never a tenant's
    for llm in _of("LLM"):
        ref = ((llm["spec"].get("credentials") or {}).get("apiKey") or {}).get("secretKeyRef")
        if ref:
            _secret(llm["metadata"]["namespace"], ref["name"], ref["key"])


def test_each_team_has_its_own_key_and_registry() -> None:
    conns = {c["metadata"]["namespace"]: c for c in _of("GoodMemConnection")}
    keys = {
        ns: _secret(ns, c["spec"]["apiKeySecretRef"]["name"], "api-key")["stringData"]["api-key"]
        for ns, c in conns.items()
    }
    assert keys["team-a"] != keys["team-b"], "two principals need two keys"
    assert conns["team-a"]["spec"]["baseUrl"] != conns["team-b"]["spec"]["baseUrl"]
    assert all(c["metadata"]["name"] == DEFAULT_CONNECTION_NAME for c in conns.values())


def test_every_llm_resolves_to_the_connection_the_example_means() -> None:
    """The default order (README, Connections): spec.connectionRef, else the namespace's GoodMemConnection
    "default", else the ClusterGoodMemConnection "default" if it selects the namespace."""
    labels = {d["metadata"]["name"]: d["metadata"].get("labels", {}) for d in _of("Namespace")}
    namespaced = {_key(d) for d in _of("GoodMemConnection")}
    [cluster] = _of("ClusterGoodMemConnection")
    selector = ClusterGoodMemConnectionSpec.model_validate(cluster["spec"]).namespace_selector
    chosen = {}
    for llm in _of("LLM"):
        ns = llm["metadata"]["namespace"]
        labels_of_ns = {**labels[ns], "kubernetes.io/metadata.name": ns}  # the label the API server sets
        ref = llm["spec"].get("connectionRef")
        if ref is not None:
            assert ref["kind"] == "GoodMemConnection" and (ns, ref["name"]) in namespaced
            chosen[ns] = f"GoodMemConnection/{ref['name']}"
        elif (ns, DEFAULT_CONNECTION_NAME) in namespaced:
            chosen[ns] = "GoodMemConnection/default"
        else:
            assert selector.matches(labels_of_ns), f"{ns} is not selected by the cluster connection"
            chosen[ns] = "ClusterGoodMemConnection/default"
    assert chosen == {
        "team-a": "GoodMemConnection/default",
        "team-b": "GoodMemConnection/default",
        "shared-apps": "ClusterGoodMemConnection/default",
    }


def test_the_cluster_connection_selects_shared_apps_and_neither_team_nor_system_namespaces() -> None:
    [cluster] = _of("ClusterGoodMemConnection")
    selector = ClusterGoodMemConnectionSpec.model_validate(cluster["spec"]).namespace_selector
    labels = {d["metadata"]["name"]: d["metadata"].get("labels", {}) for d in _of("Namespace")}

    def selects(ns: str, extra: dict[str, str] | None = None) -> bool:
        return selector.matches({**labels.get(ns, {}), **(extra or {}), "kubernetes.io/metadata.name": ns})

    assert selects("shared-apps")
    assert not selects("team-a") and not selects("team-b")
    assert not selects("kube-system", {"goodmem-registry": "shared"}), "excluded by name even when labelled"


def test_secret_values_are_obvious_placeholders() -> None:
    for secret in _of("Secret"):
        for key, value in secret["stringData"].items():
            assert "FAKE" in value and "not-a-real-key" in value, f"{_key(secret)} {key} does not look fake"
