"""GoodMemConnection and ClusterGoodMemConnection objects in every status shape their API defines, for the Argo CD
health check (tests/unit/test_argocd_health.py) and kstatus (tests/integration/test_kstatus.py).

Unlike statuses.py (what the LLM Reconciler really writes), these are built by hand: each status goes through the
API models (`api.connections.ConnectionStatus`, `api.types.Condition`; unknown fields forbidden) and is dumped as
the CRD stores it (camelCase, unset fields omitted), one per Ready reason the connection kind documents. When the
connection handlers write statuses, build these from them instead, as statuses.py does for LLMs. Pure: no I/O.
"""

from __future__ import annotations

import copy
from typing import Any

from goodmem_operator.api.connections import ClusterGoodMemConnectionSpec, ConnectionStatus, GoodMemConnectionSpec
from goodmem_operator.api.types import Condition

PRINCIPAL = "4f9c2d7e-1b3a-5c6d-8e9f-0a1b2c3d4e5f"
NOW = "2026-12-04T18:00:00Z"

#: Ready=False reasons of a connection: scenario name -> (reason, a message; the key is never in one).
FALSE_REASONS = {
    "unauthorized": ("Unauthorized", "the registry refused the key (401)"),
    "unreachable": ("Unreachable", "GET /v1/llms: connection refused (retried)"),
    "registry-error": ("RegistryError", "GET /v1/llms answered 503 (retried)"),
    "secret-not-found": ("SecretNotFound", "Secret team-a/goodmem-key not found"),
    "secret-not-labelled": (
        "SecretNotLabelled",
        "Secret team-a/goodmem-key is not labelled goodmem.ai/credentials=true",
    ),
    "invalid-ca-bundle": ("InvalidCABundle", "Secret team-a/registry-ca key ca.crt holds no PEM certificate"),
    "not-allowed": ("NotAllowed", "the registry refused the key for listing LLMs (403)"),
}


def _ready(status: str, reason: str, message: str, generation: int) -> Condition:
    return Condition(
        type="Ready",
        status=status,
        reason=reason,
        message=message,
        last_transition_time=NOW,
        observed_generation=generation,
    )


def _status(ready: Condition | None, generation: int, **fields: Any) -> dict[str, Any]:
    status = ConnectionStatus(
        observed_generation=generation, conditions=[ready] if ready is not None else None, **fields
    )
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def _obj(
    status: dict[str, Any] | None,
    *,
    kind: str = "GoodMemConnection",
    generation: int = 1,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "default", "uid": "6a1f0d6e-0000-4000-8000-000000000001", "generation": generation}
    if kind == "GoodMemConnection":
        meta["namespace"] = "team-a"
    if deleting:
        meta["deletionTimestamp"] = "2030-01-01T00:00:00Z"
        meta["finalizers"] = ["goodmem.ai/finalizer"]
    spec: dict[str, Any] = {
        "baseUrl": "https://goodmem.team-a.example.test",
        "apiKeySecretRef": {"name": "goodmem-key", "key": "api-key"},
    }
    if kind == "ClusterGoodMemConnection":
        spec["namespaceSelector"] = {"matchLabels": {"goodmem.ai/tenant": "shared"}}
        ClusterGoodMemConnectionSpec.model_validate(spec)
    else:
        GoodMemConnectionSpec.model_validate(spec)
    out: dict[str, Any] = {"apiVersion": "goodmem.ai/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}
    if status is not None:
        out["status"] = status
    return out


def connection_statuses() -> dict[str, dict[str, Any]]:
    """Scenario name -> a connection object (a fresh deep copy each call)."""
    connected = _status(
        _ready("True", "Connected", "the registry accepted the key", 1),
        1,
        principal=PRINCIPAL,
        llm_count=2,
        users=["team-a/chat", "team-a/embed"],
        last_probe_time=NOW,
    )
    out: dict[str, dict[str, Any]] = {
        "fresh": _obj(None),
        "no-ready-yet": _obj(_status(None, 1)),
        "connected": _obj(connected),
        "connected-unused": _obj(
            _status(_ready("True", "Connected", "", 1), 1, principal=PRINCIPAL, llm_count=0, users=[])
        ),
        "rotated": _obj(
            _status(
                _ready("True", "Connected", "the registry accepted the key", 1),
                1,
                principal=PRINCIPAL,
                llm_count=2,
                key_rotated_time=NOW,
                last_probe_time=NOW,
            )
        ),
        "spec-edited": _obj(copy.deepcopy(connected), generation=2),
        "in-use-deleting": _obj(copy.deepcopy(connected), deleting=True),
        "cluster-connected": _obj(copy.deepcopy(connected), kind="ClusterGoodMemConnection"),
        "cluster-not-ready": _obj(
            _status(_ready("False", *FALSE_REASONS["unreachable"], 1), 1, llm_count=0),
            kind="ClusterGoodMemConnection",
        ),
    }
    for name, (reason, message) in FALSE_REASONS.items():
        out[name] = _obj(_status(_ready("False", reason, message, 1), 1, llm_count=1, users=["team-a/chat"]))
    return copy.deepcopy(out)
