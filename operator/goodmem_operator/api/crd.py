"""Render the CustomResourceDefinitions (LLM, GoodMemConnection, ClusterGoodMemConnection) from the pydantic models.

`python -m goodmem_operator.api.crd [PATH]` writes the LLM's YAML (default: stdout); `python -m
goodmem_operator.api.crd --all DIR` writes every kind's as `DIR/<group>_<plural>.yaml`. The files in `crds/` are
that output, and a unit test fails when a checked-in file and the models disagree.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from goodmem_operator.api.connections import (
    CLUSTER_CONNECTION_PLURAL,
    CONNECTION_PLURAL,
    ClusterGoodMemConnectionSpec,
    ConnectionStatus,
    GoodMemConnectionSpec,
)
from goodmem_operator.api.types import (
    CLUSTER_CONNECTION_KIND,
    CONNECTION_KIND,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    VERSION,
    LLMSpec,
    LLMStatus,
)

_DROP = {"title"}


_CEL = "x-kubernetes-validations"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, with both sets of CEL rules kept."""
    merged = {**base, **over}
    if _CEL in base and _CEL in over:
        merged[_CEL] = base[_CEL] + over[_CEL]
    return merged


def _resolved(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """$ref replaced by its definition (the field's own description wins over the model docstring), and an
    Optional (anyOf with null) collapsed to its one type."""
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        node = _merge(target, node)
    if "anyOf" in node:
        options = [opt for opt in node.pop("anyOf") if opt.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot render a union of {len(options)} types in a structural schema")
        node = _resolved(_merge(options[0], node), defs)
    return node


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """Drop what OpenAPI v3 structural schemas refuse; one-line descriptions."""
    if node.get("default", "absent") is None:
        del node["default"]
    for key in _DROP:
        node.pop(key, None)
    if isinstance(node.get("additionalProperties"), bool):
        # `true` is implied and `false` may not stand beside `properties` in a structural
        # schema; unknown fields are pruned by the API server and refused by strict clients.
        del node["additionalProperties"]
    if isinstance(node.get("description"), str):
        node["description"] = " ".join(node["description"].split())
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            # JSON Schema's number form (pydantic's gt/lt); OpenAPI v3 says it as a bound plus a boolean.
            node[bound] = value
            node[exclusive] = True
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
    return node


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Resolve $ref, collapse Optional (anyOf with null) and drop what OpenAPI v3 structural schemas refuse."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = _structural(_resolved(dict(node), defs))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _inline(value, defs)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _inline(raw, defs)
    return schema


def _condition_column(name: str, ctype: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{ctype}")].status',
        "description": f"The {ctype} condition.",
    }


def _definition(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    scope: str,
    description: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["goodmem"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "APIVersion of this object."},
                                "kind": {"type": "string", "description": "Kind of this object."},
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(spec),
                                "status": openapi_schema(status),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd() -> dict[str, Any]:
    """The LLM's CRD."""
    return _definition(
        kind=KIND,
        plural=PLURAL,
        short_names=SHORT_NAMES,
        scope="Namespaced",
        description=(
            "An LLM connection in the GoodMem registry (endpoint, model, credentials, "
            "capabilities, sampling defaults, labels), managed by goodmem-operator."
        ),
        spec=LLMSpec,
        status=LLMStatus,
        columns=[
            _condition_column("Ready", "Ready"),
            _condition_column("Synced", "Synced"),
            {"name": "Provider", "type": "string", "jsonPath": ".spec.providerType"},
            {"name": "Model", "type": "string", "jsonPath": ".spec.modelIdentifier"},
            {"name": "LLM-ID", "type": "string", "jsonPath": ".status.llmId"},
            {
                "name": "Reason",
                "type": "string",
                "priority": 1,
                "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            },
            {**_condition_column("Up-To-Date", "UpToDate"), "priority": 1},
            {"name": "Display-Name", "type": "string", "priority": 1, "jsonPath": ".spec.displayName"},
            {"name": "Connection", "type": "string", "priority": 1, "jsonPath": ".status.connection"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def _connection_columns() -> list[dict[str, Any]]:
    return [
        _condition_column("Ready", "Ready"),
        {"name": "Base-URL", "type": "string", "jsonPath": ".spec.baseUrl"},
        {"name": "Principal", "type": "string", "jsonPath": ".status.principal"},
        {"name": "LLMs", "type": "integer", "jsonPath": ".status.llmCount"},
        {
            "name": "Reason",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def connection_crd() -> dict[str, Any]:
    """The GoodMemConnection's CRD (namespaced)."""
    return _definition(
        kind=CONNECTION_KIND,
        plural=CONNECTION_PLURAL,
        short_names=["gmconn"],
        scope="Namespaced",
        description=(
            "A GoodMem registry identity for this namespace's LLMs: the registry's base URL, the API key (from a "
            "Secret of this namespace) and request limits, used by goodmem-operator."
        ),
        spec=GoodMemConnectionSpec,
        status=ConnectionStatus,
        columns=_connection_columns(),
    )


def cluster_connection_crd() -> dict[str, Any]:
    """The ClusterGoodMemConnection's CRD (cluster-scoped)."""
    return _definition(
        kind=CLUSTER_CONNECTION_KIND,
        plural=CLUSTER_CONNECTION_PLURAL,
        short_names=["cgmconn"],
        scope="Cluster",
        description=(
            "A GoodMem registry identity shared by the namespaces it selects: the registry's base URL, the API key "
            "(from a Secret in the operator's namespace) and request limits, used by goodmem-operator."
        ),
        spec=ClusterGoodMemConnectionSpec,
        status=ConnectionStatus,
        columns=_connection_columns(),
    )


#: Every CRD the operator serves, by file name under crds/.
CRDS = {
    f"{GROUP}_{PLURAL}.yaml": crd,
    f"{GROUP}_{CONNECTION_PLURAL}.yaml": connection_crd,
    f"{GROUP}_{CLUSTER_CONNECTION_PLURAL}.yaml": cluster_connection_crd,
}


HEADER = "# Generated from goodmem_operator.api.types by `python -m goodmem_operator.api.crd`. Do not edit.\n"


def render(definition: dict[str, Any] | None = None) -> str:
    """A CRD as the YAML checked in under crds/ (default: the LLM's)."""
    dumped: str = yaml.safe_dump(crd() if definition is None else definition, sort_keys=False, width=120)
    return HEADER + dumped


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--all":
        for name, build in CRDS.items():
            with open(f"{sys.argv[2]}/{name}", "w", encoding="utf-8") as fh:
                fh.write(render(build()))
        return
    text = render()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
