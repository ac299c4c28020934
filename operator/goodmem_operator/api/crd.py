"""Render the LLM CustomResourceDefinition from the pydantic models.

`python -m goodmem_operator.api.crd [PATH]` writes the YAML (default:
stdout); `crds/goodmem.ai_llms.yaml` is that output, and a unit test fails
when the checked-in file and the models disagree.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from goodmem_operator.api.types import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION, LLMSpec, LLMStatus

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


def crd() -> dict[str, Any]:
    spec_schema = openapi_schema(LLMSpec)
    status_schema = openapi_schema(LLMStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["goodmem"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
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
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "An LLM connection in the GoodMem registry (endpoint, model, credentials, "
                                "capabilities, sampling defaults, labels), managed by goodmem-operator."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "APIVersion of this object."},
                                "kind": {"type": "string", "description": "Kind of this object."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated from goodmem_operator.api.types by `python -m goodmem_operator.api.crd`. Do not edit.\n"


def render() -> str:
    dumped: str = yaml.safe_dump(crd(), sort_keys=False, width=120)
    return HEADER + dumped


def main() -> None:
    text = render()
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
