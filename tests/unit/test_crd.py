"""The checked-in CRD is exactly what the pydantic models render, and carries the contract's constraints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from goodmem_operator.api import crd

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "goodmem.ai_llms.yaml"


def test_checked_in_crd_matches_models() -> None:
    assert CRD_PATH.read_text() == crd.render(), (
        "crds/goodmem.ai_llms.yaml is stale: run `python -m goodmem_operator.api.crd crds/goodmem.ai_llms.yaml`"
    )


@pytest.mark.parametrize("name", sorted(crd.CRDS))
def test_every_checked_in_crd_matches_its_models(name: str) -> None:
    assert (ROOT / "crds" / name).read_text() == crd.render(crd.CRDS[name]()), f"crds/{name} is stale: run `make crd`"
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == sorted(crd.CRDS)


def _spec_schema() -> dict[str, Any]:
    return crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _walk(node: Any, path: str = "spec"):
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            yield f"{path}.{name}", sub
            yield from _walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            yield from _walk(node["items"], f"{path}[]")


@pytest.mark.parametrize("name", sorted(crd.CRDS))
def test_every_field_has_a_description(name: str) -> None:
    """`kubectl explain` documents every field of every kind."""
    properties = crd.CRDS[name]()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    missing = [path for path, sub in _walk(properties["spec"]) if not sub.get("description")]
    missing += [path for path, sub in _walk(properties["status"], "status") if not sub.get("description")]
    assert missing == []


def test_connection_kinds_scope_columns_and_selector() -> None:
    namespaced, cluster = crd.connection_crd(), crd.cluster_connection_crd()
    assert namespaced["spec"]["scope"] == "Namespaced" and cluster["spec"]["scope"] == "Cluster"
    for definition in (namespaced, cluster):
        version = definition["spec"]["versions"][0]
        names = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
        assert names == ["Ready", "Base-URL", "Principal", "LLMs", "Age"]
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert set(spec["required"]) >= {"baseUrl", "apiKeySecretRef"}
    cluster_spec = cluster["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "namespaceSelector" in cluster_spec["required"]
    assert (
        "namespaceSelector"
        not in namespaced["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    )


def test_connection_ref_is_immutable_through_cel() -> None:
    rules = {r["message"]: r for r in _spec_schema()["x-kubernetes-validations"]}
    rule = next(r for m, r in rules.items() if m.startswith("connectionRef is immutable"))
    assert "self.connectionRef == oldSelf.connectionRef" in rule["rule"]
    assert rule["fieldPath"] == ".connectionRef"
    assert _spec_schema()["properties"]["connectionRef"]["properties"]["kind"]["enum"] == [
        "GoodMemConnection",
        "ClusterGoodMemConnection",
    ]


def test_schema_is_structural() -> None:
    """No $ref, anyOf, or additionalProperties beside properties (the API server refuses those)."""
    text = yaml.safe_dump(crd.crd())
    assert "$ref" not in text and "anyOf" not in text and "title:" not in text
    for _, sub in _walk(_spec_schema()):
        assert not ("properties" in sub and "additionalProperties" in sub)


def test_contract_constraints_are_in_the_schema() -> None:
    spec = _spec_schema()["properties"]
    assert spec["displayName"]["minLength"] == 1 and spec["displayName"]["maxLength"] == 255
    assert spec["providerType"]["enum"] == [
        "OPENAI",
        "LITELLM_PROXY",
        "OPEN_ROUTER",
        "VLLM",
        "OLLAMA",
        "LLAMA_CPP",
        "CUSTOM_OPENAI_COMPATIBLE",
    ]
    assert spec["labels"]["maxProperties"] <= 20
    sampling = spec["defaultSamplingParams"]["properties"]
    assert sampling["temperature"]["minimum"] == 0 and sampling["temperature"]["maximum"] == 2
    assert sampling["topP"]["maximum"] == 1
    assert sampling["maxTokens"]["minimum"] == 1 and sampling["topK"]["minimum"] == 1
    assert sampling["frequencyPenalty"]["minimum"] == -2 and sampling["presencePenalty"]["maximum"] == 2
    assert sampling["stopSequences"]["maxItems"] == 10
    assert sampling["stopSequences"]["items"]["maxLength"] == 100
    assert spec["maxContextLength"]["maximum"] == 2**31 - 1
    assert "pattern" in spec["llmId"] and "pattern" in spec["ownerId"]
    assert spec["clientConfig"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "inlineSecret" not in yaml.safe_dump(spec["credentials"])


def test_provider_type_is_immutable_through_cel() -> None:
    rules = {r["message"]: r["rule"] for r in _spec_schema()["x-kubernetes-validations"]}
    rule = next(r for m, r in rules.items() if m.startswith("providerType is immutable"))
    assert "self.providerType == oldSelf.providerType" in rule


def test_printer_columns_and_subresource() -> None:
    version = crd.crd()["spec"]["versions"][0]
    names = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert names == ["Ready", "Synced", "Provider", "Model", "LLM-ID", "Age"]
    assert version["subresources"] == {"status": {}}
    assert crd.crd()["spec"]["names"]["shortNames"]


def test_exclusive_bounds_are_openapi_v3_booleans() -> None:
    """pydantic's gt=0 is JSON Schema's `exclusiveMinimum: 0`; the API server wants `minimum: 0` and `true`."""
    spec = crd.connection_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    timeout = spec["properties"]["requestTimeoutSeconds"]
    assert timeout["minimum"] == 0 and timeout["exclusiveMinimum"] is True and timeout["maximum"] == 300
