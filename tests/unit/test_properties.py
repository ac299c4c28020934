"""Property-based tests (hypothesis): the spec -> request mapping against the contract, diff laws,
and agreement between the operator's mapping and the emulator's reading of the contract."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from goodmem.models.llm_creation_request import LLMCreationRequest
from goodmem.models.llm_update_request import LLMUpdateRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from goodmem_emulator import LLMStore, Principal
from goodmem_emulator._validation import canonicalize_url, validate_create_request, validate_update_request
from goodmem_operator.api.mapping import (
    desired_request,
    diff,
    ownership_labels,
    registry_credentials,
)
from goodmem_operator.api.types import LLMSpec

from .update_rules import apply_update

pytestmark = pytest.mark.unit

PROVIDERS = ["OPENAI", "LITELLM_PROXY", "OPEN_ROUTER", "VLLM", "OLLAMA", "LLAMA_CPP", "CUSTOM_OPENAI_COMPATIBLE"]
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
label_key = st.from_regex(r"[a-z][a-z0-9\-]{0,15}", fullmatch=True)
urls = st.builds(
    lambda h, p, path: f"https://{h}.test:{p}/{path}",
    st.from_regex(r"[a-z]{1,10}", fullmatch=True),
    st.integers(1, 65535),
    st.from_regex(r"[a-z0-9/]{0,12}", fullmatch=True),
)
halves = st.floats(0, 2, allow_nan=False).map(lambda x: round(x, 3))

sampling = st.fixed_dictionaries(
    {},
    optional={
        "maxTokens": st.integers(1, 2**31 - 1),
        "temperature": halves,
        "topP": st.floats(0, 1, allow_nan=False).map(lambda x: round(x, 3)),
        "topK": st.integers(1, 1000),
        "frequencyPenalty": st.floats(-2, 2, allow_nan=False).map(lambda x: round(x, 3)),
        "presencePenalty": st.floats(-2, 2, allow_nan=False).map(lambda x: round(x, 3)),
        "stopSequences": st.lists(st.text(min_size=1, max_size=100), max_size=10),
    },
)
capabilities = st.fixed_dictionaries(
    {},
    optional={
        f: st.booleans()
        for f in (
            "supportsChat",
            "supportsCompletion",
            "supportsFunctionCalling",
            "supportsSystemMessages",
            "supportsStreaming",
            "supportsSamplingParameters",
        )
    },
)
credentials = st.one_of(
    st.none(),
    st.builds(
        lambda h, p: {"apiKey": {"secretKeyRef": {"name": "s", "key": "k"}, "headerName": h, "prefix": p}},
        st.sampled_from(["Authorization", "x-api-key"]),
        st.sampled_from(["Bearer ", ""]),
    ),
    st.builds(
        lambda uri: {"apiKey": {"secretRef": {"uri": uri}}}, st.from_regex(r"vault://[a-z/]{1,20}", fullmatch=True)
    ),
    st.builds(
        lambda scopes, q: {"gcpAdc": {"scopes": scopes, "quotaProjectId": q}},
        st.lists(st.from_regex(r"https://[a-z./]{1,20}", fullmatch=True), max_size=3),
        text,
    ),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)

specs = st.fixed_dictionaries(
    {
        "displayName": st.text(min_size=1, max_size=255).filter(lambda s: s.strip() != ""),
        "providerType": st.sampled_from(PROVIDERS),
        "endpointUrl": urls,
        "modelIdentifier": text.filter(lambda s: s.strip() != ""),
    },
    optional={
        "description": st.text(max_size=100),
        "apiPath": st.from_regex(r"/[a-z/]{1,20}", fullmatch=True),
        "supportedModalities": st.lists(
            st.sampled_from(["TEXT", "IMAGE", "AUDIO", "VIDEO"]), min_size=1, max_size=4, unique=True
        ),
        "labels": st.dictionaries(label_key, st.text(max_size=30), max_size=18),
        "version": st.text(max_size=20),
        "monitoringEndpoint": urls,
        "capabilities": capabilities,
        "defaultSamplingParams": sampling,
        "maxContextLength": st.integers(1, 2**31 - 1),
        "clientConfig": st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=5),
        "credentials": credentials,
    },
).map(lambda d: {k: v for k, v in d.items() if v is not None})

MARKS = ownership_labels("c", "ns", "n", "3f1a2b3c-0000-4000-8000-000000000001")
PRINCIPAL = Principal(str(uuid.uuid4()))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def request_for(raw: dict[str, Any]) -> dict[str, Any]:
    spec = LLMSpec.model_validate(raw)
    creds = registry_credentials(spec.credentials, "sk-property-secret")
    return desired_request(spec, llm_id=str(uuid.uuid4()), marks=MARKS, credentials=creds)


def _capabilities_complete(raw: dict[str, Any]) -> dict[str, Any]:
    return LLMSpec.model_validate(raw).model_dump(by_alias=True, exclude_none=True)


@SETTINGS
@given(specs)
def test_create_request_matches_the_contract(raw: dict[str, Any]) -> None:
    body = request_for(raw)
    LLMCreationRequest.model_validate(body)  # the official SDK's model of the request
    validate_create_request(body)  # the emulator's reading of the contract agrees
    assert "deletionPolicy" not in body and "providerType" in body
    assert len(body["labels"]) <= 20


@SETTINGS
@given(specs)
def test_diff_of_a_spec_with_itself_is_empty(raw: dict[str, Any]) -> None:
    body = request_for(raw)
    store = LLMStore()
    created, _ = store.create(PRINCIPAL, validate_create_request(body))
    assert diff(body, created) == {}, "what the registry stores for a spec is not drift from that spec"


@SETTINGS
@given(specs, specs)
def test_applying_diff_a_b_to_a_yields_b(a_raw: dict[str, Any], b_raw: dict[str, Any]) -> None:
    b_raw = {**b_raw, "providerType": a_raw["providerType"]}  # immutable: never part of an update
    a, b = request_for(a_raw), request_for(b_raw)
    store = LLMStore()
    created, _ = store.create(PRINCIPAL, validate_create_request(a))
    update = diff(b, created)
    if update:
        LLMUpdateRequest.model_validate(update)  # the SDK accepts the update body
        after = store.update(PRINCIPAL, created["llmId"], validate_update_request(update))
    else:
        after = created
    assert diff(b, after) == {}, "the emulator and the operator agree on the update rules"
    assert diff(b, apply_update(created, update)) == {}, "the operator's own model of the update rules agrees"
    # Independent of diff(): every field b sets is now what the registry stores when b is created fresh.
    fresh, _ = LLMStore().create(PRINCIPAL, validate_create_request(b))
    for key in b:
        if key in ("llmId", "credentials"):
            continue
        want, have = fresh.get(key), after.get(key)
        if key == "supportedModalities":
            want, have = sorted(want), sorted(have)
        if key == "endpointUrl":  # the same endpoint in another spelling is not drift (the registry's canonical form)
            want, have = canonicalize_url(want), canonicalize_url(have)
        if key == "defaultSamplingParams":  # an empty parameter set and no parameters are the same thing
            want, have = ({k: v for k, v in (x or {}).items() if v not in (None, [])} for x in (want, have))
        assert have == want, f"{key}: {have!r} != {want!r}"
