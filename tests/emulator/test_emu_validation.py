"""Pure validation, canonicalisation and fingerprint rules of the emulator."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from goodmem_emulator._validation import (
    CAPABILITY_FLAGS,
    DEFAULT_API_PATH,
    INFERRED_CAPABILITIES,
    ValidationError,
    canonicalize_url,
    credentials_fingerprint,
    infer_capabilities,
    parse_get_query,
    parse_list_query,
    redact_secrets,
    validate_create_request,
    validate_credentials,
    validate_update_request,
)

from .helpers import SECRET, api_key_credentials, llm_body

pytestmark = pytest.mark.unit

ALL_CAPS = {flag: True for flag in CAPABILITY_FLAGS}
UUID = "550e8400-e29b-41d4-a716-446655440000"


def field_of(fn: Any, *args: Any) -> str:
    with pytest.raises(ValidationError) as info:
        fn(*args)
    return info.value.field


# ---------------------------------------------------------------- canonical URL


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("HTTPS://API.OpenAI.com/v1/", "https://api.openai.com/v1"),
        ("https://api.openai.com:443/v1", "https://api.openai.com/v1"),
        ("http://localhost:80/v1//", "http://localhost/v1"),
        ("http://localhost:8000/v1", "http://localhost:8000/v1"),
        ("https://host:80/v1", "https://host:80/v1"),
        ("http://host:443", "http://host:443"),
        ("https://host/", "https://host"),
        ("https://host", "https://host"),
        ("http://[::1]:8080/v1/", "http://[::1]:8080/v1"),
        ("http://[::1]:80/", "http://[::1]"),
        ("https://host/V1/Path", "https://host/V1/Path"),  # path case is significant
        ("https://host/v1?x=1", "https://host/v1?x=1"),
    ],
)
def test_canonicalize_url(url: str, canonical: str) -> None:
    assert canonicalize_url(url) == canonical


@pytest.mark.parametrize(
    "url",
    [
        "",
        "api.openai.com/v1",
        "ftp://host/x",
        "https://",
        "https://host:99999/",
        "https://host:x/",
        " https://h",
        "https://h /v1",
    ],
)
def test_canonicalize_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        canonicalize_url(url)


_hosts = st.from_regex(r"[a-zA-Z][a-zA-Z0-9-]{0,10}(\.[a-zA-Z]{2,5}){0,2}", fullmatch=True)
_paths = st.from_regex(r"(/[a-zA-Z0-9_-]{1,6}){0,3}/{0,2}", fullmatch=True)


@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
    host=_hosts,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    path=_paths,
)
def test_canonicalize_url_properties(scheme: str, host: str, port: int | None, path: str) -> None:
    url = f"{scheme}://{host}{'' if port is None else f':{port}'}{path}"
    canonical = canonicalize_url(url)
    assert canonicalize_url(canonical) == canonical  # idempotent
    assert not canonical.endswith("/")
    assert canonical.startswith(scheme.lower() + "://" + host.lower())
    default = 80 if scheme.lower() == "http" else 443
    assert (f":{port}" in canonical) == (port is not None and port != default)
    # Variants that differ only in case/default port/trailing slash collide.
    variant = f"{scheme.upper()}://{host.upper()}:{default if port is None else port}{path}/"
    assert canonicalize_url(variant) == canonical


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_of_no_credentials_is_sha256_of_empty_string() -> None:
    assert credentials_fingerprint(None) == hashlib.sha256(b"").hexdigest()
    assert credentials_fingerprint({}) == hashlib.sha256(b"").hexdigest()


def test_fingerprint_is_sha256_of_canonical_json() -> None:
    creds = {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"prefix": "Bearer ", "inlineSecret": "s"}}
    expected = hashlib.sha256(json.dumps(creds, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert credentials_fingerprint(creds) == expected


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=6))
def test_fingerprint_ignores_key_order(labels: dict[str, str]) -> None:
    a = {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": "s"}, "labels": labels}
    b = {
        "labels": dict(reversed(list(labels.items()))),
        "apiKey": {"inlineSecret": "s"},
        "kind": "CREDENTIAL_KIND_API_KEY",
    }
    assert credentials_fingerprint(a) == credentials_fingerprint(b)


def test_fingerprint_distinguishes_secrets() -> None:
    assert credentials_fingerprint(api_key_credentials("a")) != credentials_fingerprint(api_key_credentials("b"))


# ---------------------------------------------------------------- create


def test_create_applies_defaults_and_keeps_unset_fields_absent() -> None:
    out = validate_create_request(llm_body())
    assert out["apiPath"] == DEFAULT_API_PATH == "/chat/completions"
    assert out["supportedModalities"] == ["TEXT"]
    assert out["labels"] == {}
    assert out["capabilities"] == {}
    for absent in (
        "description",
        "credentials",
        "version",
        "monitoringEndpoint",
        "defaultSamplingParams",
        "maxContextLength",
        "clientConfig",
        "ownerId",
        "llmId",
    ):
        assert absent not in out


def test_create_null_and_empty_mean_default() -> None:
    out = validate_create_request(llm_body(apiPath="", supportedModalities=[], description="x") | {"version": None})
    assert out["apiPath"] == "/chat/completions"
    assert out["supportedModalities"] == ["TEXT"]
    assert "version" not in out


def test_create_normalises_ids_and_dedupes_modalities() -> None:
    out = validate_create_request(
        llm_body(llmId=UUID.upper(), ownerId=UUID.upper(), supportedModalities=["IMAGE", "TEXT", "IMAGE"])
    )
    assert out["llmId"] == out["ownerId"] == UUID
    assert out["supportedModalities"] == ["IMAGE", "TEXT"]


def test_create_full_valid_body_round_trips() -> None:
    body = llm_body(
        description="d",
        apiPath="/v1/chat",
        supportedModalities=["TEXT", "IMAGE"],
        credentials=api_key_credentials(headerName="Authorization", prefix="Bearer ") | {"labels": {"a": "b"}},
        labels={f"k{i}": "v" for i in range(20)},
        version="1",
        monitoringEndpoint="https://mon",
        capabilities=ALL_CAPS,
        defaultSamplingParams={
            "maxTokens": 1,
            "temperature": 2,
            "topP": 0.0,
            "topK": 1,
            "frequencyPenalty": -2.0,
            "presencePenalty": 2.0,
            "stopSequences": ["x" * 100] * 10,
        },
        maxContextLength=2**31 - 1,
        clientConfig={"nested": {"a": [1, None]}},
        ownerId=UUID,
        llmId=UUID,
    )
    out = validate_create_request(body)
    assert {k: v for k, v in out.items()} == body


_BAD_CREATE = [
    (None, "body"),
    ([], "body"),
    ({"displayName": None}, "displayName"),
    ({"displayName": ""}, "displayName"),
    ({"displayName": "   "}, "displayName"),
    ({"displayName": "x" * 256}, "displayName"),
    ({"displayName": 5}, "displayName"),
    ({"providerType": None}, "providerType"),
    ({"providerType": "openai"}, "providerType"),
    ({"providerType": "DASHSCOPE"}, "providerType"),
    ({"endpointUrl": None}, "endpointUrl"),
    ({"endpointUrl": "not a url"}, "endpointUrl"),
    ({"endpointUrl": "ftp://x"}, "endpointUrl"),
    ({"modelIdentifier": None}, "modelIdentifier"),
    ({"modelIdentifier": ""}, "modelIdentifier"),
    ({"apiPath": "chat/completions"}, "apiPath"),
    ({"apiPath": 1}, "apiPath"),
    ({"supportedModalities": ["SMELL"]}, "supportedModalities[0]"),
    ({"supportedModalities": "TEXT"}, "supportedModalities"),
    ({"labels": {f"k{i}": "v" for i in range(21)}}, "labels"),
    ({"labels": {"a": 1}}, "labels.a"),
    ({"labels": []}, "labels"),
    ({"capabilities": {"supportsChat": "true"}}, "capabilities.supportsChat"),
    ({"capabilities": {"supportsTelepathy": True}}, "capabilities.supportsTelepathy"),
    ({"defaultSamplingParams": {"maxTokens": 0}}, "defaultSamplingParams.maxTokens"),
    ({"defaultSamplingParams": {"maxTokens": 1.5}}, "defaultSamplingParams.maxTokens"),
    ({"defaultSamplingParams": {"maxTokens": True}}, "defaultSamplingParams.maxTokens"),
    ({"defaultSamplingParams": {"temperature": 2.01}}, "defaultSamplingParams.temperature"),
    ({"defaultSamplingParams": {"temperature": -0.1}}, "defaultSamplingParams.temperature"),
    ({"defaultSamplingParams": {"temperature": float("nan")}}, "defaultSamplingParams.temperature"),
    ({"defaultSamplingParams": {"topP": 1.01}}, "defaultSamplingParams.topP"),
    ({"defaultSamplingParams": {"topP": -0.01}}, "defaultSamplingParams.topP"),
    ({"defaultSamplingParams": {"topK": 0}}, "defaultSamplingParams.topK"),
    ({"defaultSamplingParams": {"frequencyPenalty": -2.5}}, "defaultSamplingParams.frequencyPenalty"),
    ({"defaultSamplingParams": {"presencePenalty": 2.5}}, "defaultSamplingParams.presencePenalty"),
    ({"defaultSamplingParams": {"stopSequences": ["a"] * 11}}, "defaultSamplingParams.stopSequences"),
    ({"defaultSamplingParams": {"stopSequences": ["ok", "x" * 101]}}, "defaultSamplingParams.stopSequences[1]"),
    ({"defaultSamplingParams": {"seed": 1}}, "defaultSamplingParams.seed"),
    ({"maxContextLength": 2**31}, "maxContextLength"),
    ({"maxContextLength": 0}, "maxContextLength"),
    ({"maxContextLength": "32768"}, "maxContextLength"),
    ({"clientConfig": [1]}, "clientConfig"),
    ({"ownerId": "not-a-uuid"}, "ownerId"),
    ({"llmId": "550e8400e29b41d4a716446655440000"}, "llmId"),
    ({"llmId": "{550e8400-e29b-41d4-a716-446655440000}"}, "llmId"),
    ({"dashscopeApiDialect": "OPENAI_COMPATIBLE"}, "dashscopeApiDialect"),
    ({"createdAt": 1}, "createdAt"),
    ({"credentials": {}}, "credentials"),
    ({"credentials": {"apiKey": {"inlineSecret": "s"}}}, "credentials.kind"),
    ({"credentials": {"kind": "CREDENTIAL_KIND_UNSPECIFIED"}}, "credentials.kind"),
    ({"credentials": {"kind": "CREDENTIAL_KIND_API_KEY"}}, "credentials.apiKey"),
    ({"credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "gcpAdc": {}}}, "credentials.gcpAdc"),
    ({"credentials": {"kind": "CREDENTIAL_KIND_GCP_ADC", "apiKey": {"inlineSecret": "s"}}}, "credentials.apiKey"),
    ({"credentials": {"kind": "CREDENTIAL_KIND_GCP_ADC"}}, "credentials.gcpAdc"),
    ({"credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {}}}, "credentials.apiKey"),
    (
        {
            "credentials": {
                "kind": "CREDENTIAL_KIND_API_KEY",
                "apiKey": {"inlineSecret": "s", "secretRef": {"uri": "vault://x"}},
            }
        },
        "credentials.apiKey",
    ),
    (
        {"credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": ""}}},
        "credentials.apiKey.inlineSecret",
    ),
    (
        {"credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"secretRef": {}}}},
        "credentials.apiKey.secretRef.uri",
    ),
    (
        {"credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": "s", "extra": 1}}},
        "credentials.apiKey.extra",
    ),
    ({"credentials": api_key_credentials() | {"labels": {f"k{i}": "v" for i in range(21)}}}, "credentials.labels"),
    ({"credentials": {"kind": "CREDENTIAL_KIND_GCP_ADC", "gcpAdc": {"scopes": "x"}}}, "credentials.gcpAdc.scopes"),
]


@pytest.mark.parametrize(("patch", "field"), _BAD_CREATE)
def test_create_rejects(patch: Any, field: str) -> None:
    body = llm_body() | patch if isinstance(patch, dict) else patch
    assert field_of(validate_create_request, body) == field


def test_error_message_never_contains_the_value() -> None:
    with pytest.raises(ValidationError) as info:
        validate_create_request(
            llm_body(
                credentials={"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": SECRET, "bogus": SECRET}}
            )
        )
    assert SECRET not in str(info.value)


def test_credentials_variants_normalise() -> None:
    assert validate_credentials(
        {
            "kind": "CREDENTIAL_KIND_API_KEY",
            "apiKey": {"secretRef": {"uri": "vault://a", "hints": {"e": "b64"}}, "inlineSecret": None},
            "gcpAdc": None,
        }
    ) == {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"secretRef": {"uri": "vault://a", "hints": {"e": "b64"}}}}
    assert validate_credentials(
        {"kind": "CREDENTIAL_KIND_GCP_ADC", "gcpAdc": {"scopes": ["s"], "quotaProjectId": "p"}}
    ) == {"kind": "CREDENTIAL_KIND_GCP_ADC", "gcpAdc": {"scopes": ["s"], "quotaProjectId": "p"}}
    assert validate_credentials({"kind": "CREDENTIAL_KIND_GCP_ADC", "gcpAdc": {}}) == {
        "kind": "CREDENTIAL_KIND_GCP_ADC",
        "gcpAdc": {},
    }


# ---------------------------------------------------------------- capabilities


def test_infer_all_capabilities() -> None:
    caps, statuses = infer_capabilities(None)
    assert caps == INFERRED_CAPABILITIES
    assert caps["supportsCompletion"] is False
    assert sum(caps.values()) == 5
    assert len(statuses) == 1 and statuses[0]["code"] == "LLM_CAPABILITY_INFERRED"
    assert set(statuses[0]["details"]) == set(CAPABILITY_FLAGS)


def test_infer_only_missing_capabilities() -> None:
    caps, statuses = infer_capabilities({"supportsChat": False, "supportsCompletion": True})
    assert caps["supportsChat"] is False and caps["supportsCompletion"] is True
    assert caps["supportsStreaming"] is True
    assert set(statuses[0]["details"]) == set(CAPABILITY_FLAGS) - {"supportsChat", "supportsCompletion"}


def test_no_inference_when_all_given() -> None:
    caps, statuses = infer_capabilities({f: False for f in CAPABILITY_FLAGS})
    assert caps == {f: False for f in CAPABILITY_FLAGS}
    assert statuses == []


# ---------------------------------------------------------------- update


def test_update_keeps_only_changing_fields() -> None:
    assert validate_update_request({}) == {}
    assert validate_update_request({"supportedModalities": []}) == {}
    assert validate_update_request({"description": None, "version": ""}) == {"version": ""}
    assert validate_update_request({"replaceLabels": {}}) == {"replaceLabels": {}}
    assert validate_update_request({"apiPath": ""}) == {"apiPath": "/chat/completions"}
    assert validate_update_request({"mergeLabels": {"a": "b"}, "replaceLabels": None}) == {"mergeLabels": {"a": "b"}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"providerType": "OPENAI"}, "providerType"),
        ({"providerType": None}, "providerType"),
        ({"labels": {"a": "b"}}, "labels"),
        ({"ownerId": UUID}, "ownerId"),
        ({"llmId": UUID}, "llmId"),
        ({"replaceLabels": {}, "mergeLabels": {}}, "mergeLabels"),
        ({"displayName": "x" * 256}, "displayName"),
        ({"displayName": ""}, "displayName"),
        ({"modelIdentifier": ""}, "modelIdentifier"),
        ({"capabilities": {"supportsChat": True}}, "capabilities.supportsCompletion"),
        ({"capabilities": ALL_CAPS | {"supportsStreaming": None}}, "capabilities.supportsStreaming"),
        ({"credentials": {}}, "credentials"),
        ({"supportedModalities": ["TEXT", "NOPE"]}, "supportedModalities[1]"),
        ({"replaceLabels": {f"k{i}": "v" for i in range(21)}}, "replaceLabels"),
        ({"mergeLabels": {"a": 1}}, "mergeLabels.a"),
        ({"defaultSamplingParams": {"topK": -1}}, "defaultSamplingParams.topK"),
        ({"maxContextLength": -5}, "maxContextLength"),
        ({"endpointUrl": "nope"}, "endpointUrl"),
        ({"clientConfig": "x"}, "clientConfig"),
    ],
)
def test_update_rejects(body: Any, field: str) -> None:
    assert field_of(validate_update_request, body) == field


# ---------------------------------------------------------------- query


def test_list_query_accepts_both_spellings_and_label_syntaxes() -> None:
    f = parse_list_query(
        [
            ("owner_id", UUID.upper()),
            ("providerType", "VLLM"),
            ("label.env", "prod"),
            ("label[team]", "ai"),
            ("label.a.b", "c"),
        ]
    )
    assert f.owner_id == UUID and f.provider_type == "VLLM"
    assert f.labels == (("env", "prod"), ("team", "ai"), ("a.b", "c"))
    assert parse_list_query([("ownerId", UUID), ("owner_id", UUID)]).owner_id == UUID


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ([("providerType", "openai")], "providerType"),
        ([("provider_type", "NOPE")], "providerType"),
        ([("ownerId", "x")], "ownerId"),
        ([("ownerId", UUID), ("owner_id", "550e8400-e29b-41d4-a716-446655440001")], "ownerId"),
        ([("label.", "x")], "label."),
        ([("label[]", "x")], "label[]"),
        ([("labels", "x")], "labels"),
        ([("includeCredentials", "true")], "includeCredentials"),
        ([("pageToken", "x")], "pageToken"),
    ],
)
def test_list_query_rejects(params: list[tuple[str, str]], field: str) -> None:
    assert field_of(parse_list_query, params) == field


def test_get_query() -> None:
    assert parse_get_query([]) is False
    assert parse_get_query([("includeCredentials", "true")]) is True
    assert parse_get_query([("include_credentials", "True")]) is True
    assert parse_get_query([("includeCredentials", "false")]) is False
    assert field_of(parse_get_query, [("includeCredentials", "yes")]) == "includeCredentials"
    assert field_of(parse_get_query, [("verbose", "1")]) == "verbose"


def test_redact_secrets_is_deep_and_does_not_mutate() -> None:
    body = {"credentials": api_key_credentials(), "list": [{"inlineSecret": "x"}], "other": "keep"}
    out = redact_secrets(body)
    assert SECRET not in json.dumps(out)
    assert out["credentials"]["apiKey"]["inlineSecret"] == "<redacted>"
    assert out["list"][0]["inlineSecret"] == "<redacted>"
    assert out["other"] == "keep"
    assert body["credentials"]["apiKey"]["inlineSecret"] == SECRET
