"""From an `LLMSpec` to registry requests, and from a registry entry back to a diff.

`desired_request` builds the create body; `diff` compares it with what the
registry holds and returns the smallest update body that converges (labels
through `replaceLabels`, capabilities and clientConfig as wholes, never
`providerType`).  Fields the spec leaves unset are not managed: the registry's
defaults and inferences are kept and reported as observed values.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from goodmem_operator.api.types import (
    RESERVED_LABEL_PREFIX,
    ApiKeyCredentials,
    Credentials,
    GcpAdcCredentials,
    LLMSpec,
)

OWNER_UID_LABEL = f"{RESERVED_LABEL_PREFIX}owner-uid"
OWNER_LABEL = f"{RESERVED_LABEL_PREFIX}owner"

# Spec fields compared as plain values (camelCase, as the registry names them).
_SCALARS = (
    "displayName",
    "description",
    "endpointUrl",
    "apiPath",
    "modelIdentifier",
    "version",
    "monitoringEndpoint",
    "maxContextLength",
)
CAPABILITY_FLAGS = (
    "supportsChat",
    "supportsCompletion",
    "supportsFunctionCalling",
    "supportsSystemMessages",
    "supportsStreaming",
    "supportsSamplingParameters",
)


def canonical_url(url: str) -> str:
    """Lower-case scheme and host, drop a default port and a trailing slash (the registry's duplicate rule)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port if parts.port is not None else None
    if (scheme, port) in (("http", 80), ("https", 443)):
        port = None
    netloc = host if port is None else f"{host}:{port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, parts.fragment))


def ownership_labels(cluster: str, namespace: str, name: str, uid: str) -> dict[str, str]:
    return {OWNER_UID_LABEL: uid, OWNER_LABEL: f"{cluster}/{namespace}/{name}"}


def _api_key(spec: ApiKeyCredentials, api_key_value: str | None) -> dict[str, Any]:
    api_key: dict[str, Any] = {}
    if spec.secret_key_ref is not None:
        if api_key_value is None:
            raise ValueError("secretKeyRef needs the Secret's value")
        api_key["inlineSecret"] = api_key_value
    elif spec.secret_ref is not None:
        api_key["secretRef"] = {"uri": spec.secret_ref.uri}
    if spec.header_name is not None:
        api_key["headerName"] = spec.header_name
    if spec.prefix is not None:
        api_key["prefix"] = spec.prefix
    return api_key


def _gcp_adc(gcp: GcpAdcCredentials | None) -> dict[str, Any]:
    adc: dict[str, Any] = {}
    if gcp is not None and gcp.scopes is not None:
        adc["scopes"] = list(gcp.scopes)
    if gcp is not None and gcp.quota_project_id is not None:
        adc["quotaProjectId"] = gcp.quota_project_id
    return adc


def registry_credentials(spec: Credentials | None, api_key_value: str | None) -> dict[str, Any] | None:
    """The registry's `credentials` object.  `api_key_value` is the Secret's key for secretKeyRef."""
    if spec is None:
        return None
    out: dict[str, Any]
    if spec.api_key is not None:
        out = {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": _api_key(spec.api_key, api_key_value)}
    else:
        out = {"kind": "CREDENTIAL_KIND_GCP_ADC", "gcpAdc": _gcp_adc(spec.gcp_adc)}
    if spec.labels is not None:
        out["labels"] = dict(spec.labels)
    return out


def credentials_fingerprint(credentials: dict[str, Any] | None, key: bytes) -> str:
    """A keyed (HMAC-SHA256) fingerprint: changes with the credentials, reveals nothing about them."""
    if credentials is None:
        return "none"
    canonical = json.dumps(credentials, sort_keys=True, separators=(",", ":")).encode()
    return "hmac-sha256:" + hmac.new(key, canonical, hashlib.sha256).hexdigest()[:32]


def desired_request(
    spec: LLMSpec, *, llm_id: str, marks: dict[str, str], credentials: dict[str, Any] | None
) -> dict[str, Any]:
    """The create body for `spec` (camelCase), with our id, ownership marks and resolved credentials."""
    body = spec.model_dump(
        by_alias=True,
        exclude_none=True,
        exclude={"credentials", "deletion_policy", "adoption_policy", "management_policy", "llm_id", "connection_ref"},
    )
    body["llmId"] = llm_id
    body["labels"] = {**(spec.labels or {}), **marks}
    if credentials is not None:
        body["credentials"] = credentials
    return body


def _norm_sampling(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if v is not None and v != []}


def _diff_scalars(desired: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any]:
    update: dict[str, Any] = {}
    for field in _SCALARS:
        if field not in desired:
            continue
        want, have = desired[field], observed.get(field)
        same_endpoint = field == "endpointUrl" and isinstance(have, str) and canonical_url(want) == canonical_url(have)
        if want != have and not same_endpoint:
            update[field] = want
    return update


def _diff_structured(desired: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any]:
    """Modalities as a set, labels as a whole map, the six capability flags, sampling params, clientConfig."""
    update: dict[str, Any] = {}
    modalities = desired.get("supportedModalities")
    if modalities is not None and sorted(set(modalities)) != sorted(set(observed.get("supportedModalities") or [])):
        update["supportedModalities"] = list(modalities)
    if desired.get("labels", {}) != (observed.get("labels") or {}):
        update["replaceLabels"] = dict(desired.get("labels", {}))
    caps, have_caps = desired.get("capabilities"), observed.get("capabilities") or {}
    if caps is not None and any(bool(caps.get(f)) != bool(have_caps.get(f)) for f in CAPABILITY_FLAGS):
        update["capabilities"] = {f: bool(caps.get(f)) for f in CAPABILITY_FLAGS}
    sampling = desired.get("defaultSamplingParams")
    if sampling is not None and _norm_sampling(sampling) != _norm_sampling(observed.get("defaultSamplingParams")):
        update["defaultSamplingParams"] = sampling
    if "clientConfig" in desired and desired["clientConfig"] != observed.get("clientConfig"):
        update["clientConfig"] = desired["clientConfig"]
    return update


def diff(desired: dict[str, Any], observed: dict[str, Any]) -> dict[str, Any]:
    """The update body that turns `observed` into `desired`; empty when they agree.

    Credentials are not compared here (the registry does not return them):
    the caller adds them when their fingerprint changed.
    """
    return {**_diff_scalars(desired, observed), **_diff_structured(desired, observed)}


def drifted_fields(update: dict[str, Any]) -> list[str]:
    """Spec field names an update body touches (replaceLabels reported as labels)."""
    return sorted("labels" if k == "replaceLabels" else k for k in update)


def observed_values(observed: dict[str, Any], *, mirror: bool = False, owner_visible: bool = True) -> dict[str, Any]:
    """status.observed: registry-side values for fields the spec may leave unset.
    With `mirror` (ObserveOnly) the entry's identity and labels too, never the operator's own marks
    (ownership, grants); `owner_visible` False leaves out the owner principal (another tenant's entry)."""
    caps = observed.get("capabilities")
    identity: dict[str, Any] = {}
    if mirror:
        identity = {k: observed.get(k) for k in ("displayName", "providerType", "endpointUrl", "modelIdentifier")}
        labels = observed.get("labels")
        if isinstance(labels, dict):
            identity["labels"] = {k: v for k, v in labels.items() if not k.startswith(RESERVED_LABEL_PREFIX)}
    return {
        k: v
        for k, v in {
            **identity,
            "apiPath": observed.get("apiPath"),
            "supportedModalities": observed.get("supportedModalities"),
            "capabilities": {f: bool(caps.get(f)) for f in CAPABILITY_FLAGS} if isinstance(caps, dict) else None,
            "maxContextLength": observed.get("maxContextLength"),
            "ownerId": observed.get("ownerId") if owner_visible else None,
        }.items()
        if v is not None
    }
