"""Pydantic models for the `GoodMemConnection` and `ClusterGoodMemConnection` custom resources.

A connection is a registry identity: the registry's base URL and the API key (from a Secret) the operator uses
for the LLMs bound to it, with its own request limits. `GoodMemConnection` is namespaced (its Secrets in its own
namespace); `ClusterGoodMemConnection` is cluster-scoped, its Secrets in the operator's namespace, usable by the
namespaces its `namespaceSelector` selects. Like `api.types`, these models are the single source of their CRDs
(`api.crd` renders them into `crds/`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from goodmem_operator.api.types import (
    Condition,
    _Model,
    cel,
)

CONNECTION_PLURAL = "goodmemconnections"
CLUSTER_CONNECTION_PLURAL = "clustergoodmemconnections"
#: status.connection of an LLM bound to the operator's own settings (--base-url and its key), not to an object.
OPERATOR_CONNECTION = "Operator"
#: The connection an LLM without spec.connectionRef uses: the namespace's, else the cluster's, of this name.
DEFAULT_CONNECTION_NAME = "default"
USERS_SHOWN = 20


class KeySelector(_Model):
    """A key of a Kubernetes Secret labelled goodmem.ai/credentials=true."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, description="Key inside the Secret's data.")


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(_Model):
    """One matchExpressions entry of a Kubernetes label selector."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
                    "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist",
                )
            ]
        }
    )

    key: str = Field(min_length=1, max_length=317, description="The label key.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] | None = Field(default=None, max_length=64, description="Values for In and NotIn.")


class NamespaceSelector(_Model):
    """A Kubernetes label selector over namespaces; empty selects every namespace."""

    match_labels: dict[str, str] | None = Field(default=None, description="Labels a namespace must have.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=32, description="Requirements a namespace's labels must meet (all of them)."
    )

    def matches(self, labels: dict[str, str]) -> bool:
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions or []:
            present = req.key in labels
            if req.operator == SelectorOperator.IN and labels.get(req.key) not in (req.values or []):
                return False
            if req.operator == SelectorOperator.NOT_IN and present and labels[req.key] in (req.values or []):
                return False
            if req.operator == SelectorOperator.EXISTS and not present:
                return False
            if req.operator == SelectorOperator.DOES_NOT_EXIST and present:
                return False
        return True


_URL = r"^https?://[^\s/?#]+[^\s]*$"


class GoodMemConnectionSpec(_Model):
    """A registry identity: the registry's base URL, the API key the operator uses there, and request limits."""

    base_url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=_URL,
        description="Base URL of the GoodMem registry (http or https), e.g. https://goodmem.team-a.internal:8080.",
    )
    api_key_secret_ref: KeySelector = Field(
        description=(
            "The registry API key: a key of a Secret in the connection's own namespace (for a "
            "ClusterGoodMemConnection: in the operator's namespace), labelled goodmem.ai/credentials=true. "
            "A change to it is used by the next request, without a restart."
        )
    )
    ca_bundle_secret_ref: KeySelector | None = Field(
        default=None,
        description=(
            "PEM CA bundle to verify a private registry's TLS certificate (same Secret rules as the key); "
            "default: the system's trust store."
        ),
    )
    request_timeout_seconds: float | None = Field(
        default=None, gt=0, le=300, description="Seconds per registry request (default: the operator's setting)."
    )
    requests_per_second: float | None = Field(
        default=None,
        gt=0,
        le=10000,
        description="Request rate limit towards this registry (default: the operator's setting).",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Registry requests in flight at once through this connection (default: the operator's setting).",
    )


class ClusterGoodMemConnectionSpec(GoodMemConnectionSpec):
    """A registry identity shared by the namespaces it selects; its Secrets live in the operator's namespace."""

    namespace_selector: NamespaceSelector = Field(
        description=(
            "The namespaces whose LLMs may use this connection ({} selects every namespace); an LLM in another "
            "namespace gets Ready=False, ConnectionNotAllowed."
        )
    )


class ConnectionStatus(_Model):
    """Observed state, written by the operator through the status subresource."""

    observed_generation: int | None = Field(default=None, description="Last metadata.generation handled.")
    conditions: list[Condition] | None = Field(default=None, description="Ready: the registry accepted the key.")
    principal: str | None = Field(
        default=None,
        description=(
            "The registry principal the key acts as (the owner of the entries it creates), once the registry has "
            "told it."
        ),
    )
    llm_count: int | None = Field(default=None, description="How many LLMs use this connection.")
    users: list[str] | None = Field(
        default=None, description=f"namespace/name of the LLMs that use it (the first {USERS_SHOWN}, sorted)."
    )
    last_probe_time: str | None = Field(default=None, description="When the registry last answered the key check.")
    key_rotated_time: str | None = Field(default=None, description="When the key Secret's data last changed.")
    kopf: dict[str, Any] | None = Field(
        default=None,
        description=(
            "kopf's bookkeeping: a digest of the last-handled spec, labels and annotations, and handler progress."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
