"""Spec -> registry request mapping, diffing and fingerprints."""

from __future__ import annotations

from typing import Any

import pytest

from goodmem_operator.api.mapping import (
    canonical_url,
    credentials_fingerprint,
    desired_request,
    diff,
    ownership_labels,
    registry_credentials,
)
from goodmem_operator.api.types import LLMSpec

from .update_rules import apply_update

pytestmark = pytest.mark.unit

MARKS = ownership_labels("c1", "ns", "x", "uid-1")


def spec(**over: Any) -> LLMSpec:
    base: dict[str, Any] = {
        "displayName": "X",
        "providerType": "OPENAI",
        "endpointUrl": "https://api.example.test/v1",
        "modelIdentifier": "gpt-x",
    }
    base.update(over)
    return LLMSpec.model_validate(base)


def registry_view(body: dict[str, Any]) -> dict[str, Any]:
    """What a registry would return for a create body (defaults filled, no credentials)."""
    out = {k: v for k, v in body.items() if k != "credentials"}
    out.setdefault("apiPath", "/chat/completions")
    out.setdefault("supportedModalities", ["TEXT"])
    out.setdefault("capabilities", {"supportsChat": True})
    return out


def test_create_body_is_camel_case_with_id_marks_and_no_operator_fields() -> None:
    body = desired_request(
        spec(
            labels={"team": "a"},
            deletionPolicy="Orphan",
            connectionRef={"kind": "GoodMemConnection", "name": "default"},
        ),
        llm_id="id-1",
        marks=MARKS,
        credentials=None,
    )
    assert body["displayName"] == "X" and body["providerType"] == "OPENAI" and body["llmId"] == "id-1"
    assert body["labels"] == {"team": "a", **MARKS}
    assert "deletionPolicy" not in body and "credentials" not in body and "connectionRef" not in body
    assert "apiPath" not in body  # unset fields are left to the registry's defaults


def test_diff_of_identical_is_empty() -> None:
    body = desired_request(
        spec(labels={"a": "b"}, capabilities={"supportsChat": True}), llm_id="i", marks=MARKS, credentials=None
    )
    assert diff(body, registry_view(body)) == {}


def test_diff_carries_only_changed_fields_and_never_provider_type() -> None:
    old = desired_request(spec(), llm_id="i", marks=MARKS, credentials=None)
    new = desired_request(spec(displayName="Y", providerType="VLLM"), llm_id="i", marks=MARKS, credentials=None)
    update = diff(new, registry_view(old))
    assert update == {"displayName": "Y"}


def test_labels_are_replaced_whole() -> None:
    old = desired_request(spec(labels={"a": "1", "b": "2"}), llm_id="i", marks=MARKS, credentials=None)
    new = desired_request(spec(labels={"a": "1"}), llm_id="i", marks=MARKS, credentials=None)
    assert diff(new, registry_view(old)) == {"replaceLabels": {"a": "1", **MARKS}}


def test_capabilities_sent_whole() -> None:
    old = desired_request(spec(capabilities={"supportsChat": True}), llm_id="i", marks=MARKS, credentials=None)
    new = desired_request(
        spec(capabilities={"supportsChat": True, "supportsStreaming": True}), llm_id="i", marks=MARKS, credentials=None
    )
    update = diff(new, registry_view(old))
    assert set(update) == {"capabilities"} and len(update["capabilities"]) == 6
    assert update["capabilities"]["supportsStreaming"] is True


def test_registry_inferred_values_are_not_drift() -> None:
    body = desired_request(spec(), llm_id="i", marks=MARKS, credentials=None)
    view = registry_view(body) | {"maxContextLength": 8192, "supportedModalities": ["TEXT", "IMAGE"]}
    assert diff(body, view) == {}


def test_endpoint_compared_canonically() -> None:
    body = desired_request(
        spec(endpointUrl="HTTPS://API.Example.test:443/v1/"), llm_id="i", marks=MARKS, credentials=None
    )
    view = registry_view(body) | {"endpointUrl": "https://api.example.test/v1"}
    assert diff(body, view) == {}
    assert canonical_url("http://h:80/a/") == "http://h/a"
    assert canonical_url("http://h:8080/a") == "http://h:8080/a"


def test_apply_update_yields_desired() -> None:
    old = desired_request(spec(labels={"a": "1"}, description="d"), llm_id="i", marks=MARKS, credentials=None)
    new = desired_request(
        spec(labels={"z": "9"}, description="e", clientConfig={"k": [1]}, defaultSamplingParams={"temperature": 1.5}),
        llm_id="i",
        marks=MARKS,
        credentials=None,
    )
    after = apply_update(registry_view(old), diff(new, registry_view(old)))
    assert diff(new, after) == {}


def test_credentials_mapping_for_each_kind() -> None:
    s = spec(
        credentials={
            "apiKey": {"secretKeyRef": {"name": "s", "key": "k"}, "headerName": "Authorization", "prefix": "Bearer "}
        }
    )
    assert registry_credentials(s.credentials, "VALUE") == {
        "kind": "CREDENTIAL_KIND_API_KEY",
        "apiKey": {"inlineSecret": "VALUE", "headerName": "Authorization", "prefix": "Bearer "},
    }
    s = spec(credentials={"apiKey": {"secretRef": {"uri": "vault://a/b"}}})
    assert registry_credentials(s.credentials, None) == {
        "kind": "CREDENTIAL_KIND_API_KEY",
        "apiKey": {"secretRef": {"uri": "vault://a/b"}},
    }
    s = spec(credentials={"gcpAdc": {"scopes": ["s1"], "quotaProjectId": "p"}})
    assert registry_credentials(s.credentials, None) == {
        "kind": "CREDENTIAL_KIND_GCP_ADC",
        "gcpAdc": {"scopes": ["s1"], "quotaProjectId": "p"},
    }
    assert registry_credentials(None, None) is None


def test_fingerprint_is_keyed_and_changes_with_the_secret() -> None:
    creds = {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": "SENTINEL-123"}}
    a = credentials_fingerprint(creds, b"key-a")
    assert a == credentials_fingerprint(creds, b"key-a")
    assert a != credentials_fingerprint(creds, b"key-b"), "must be keyed, not a plain hash"
    assert a != credentials_fingerprint(
        {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": "other"}}, b"key-a"
    )
    assert "SENTINEL" not in a
    import hashlib

    assert hashlib.sha256(b"SENTINEL-123").hexdigest()[:32] not in a


def test_spec_refuses_inline_keys_and_unknown_fields() -> None:
    with pytest.raises(Exception):  # noqa: B017 - deliberately broad: any refusal passes, whatever the model raises
        spec(credentials={"apiKey": {"inlineSecret": "x"}})
    with pytest.raises(Exception):  # noqa: B017 - deliberately broad: any refusal passes, whatever the model raises
        spec(bogus=1)
