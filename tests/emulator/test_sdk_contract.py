"""The official ``goodmem`` SDK (0.1.43) against the emulator.

Every SDK call validates the emulator's answer with the SDK's own pydantic
models, so these tests pin the emulator's wire format to the real client's
expectations.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from goodmem import AsyncGoodmem, Goodmem
from goodmem.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
)
from goodmem.models.create_llm_response import CreateLLMResponse
from goodmem.models.endpoint_authentication import EndpointAuthentication
from goodmem.models.list_llms_response import ListLLMsResponse
from goodmem.models.llm_capabilities import LLMCapabilities
from goodmem.models.llm_response import LLMResponse
from goodmem.models.llm_sampling_params import LLMSamplingParams
from goodmem.types import LLMUpdateRequest

from goodmem_emulator import Emulator, credentials_fingerprint
from goodmem_emulator.testing import run_in_thread

from .helpers import ADMIN_KEY, OTHER_KEY, SECRET, USER_KEY, api_key_credentials, headers, llm_body

pytestmark = pytest.mark.integration

CAPS = LLMCapabilities(
    supports_chat=True,
    supports_completion=False,
    supports_function_calling=True,
    supports_system_messages=True,
    supports_streaming=False,
    supports_sampling_parameters=True,
)


@pytest.fixture
def threaded() -> Iterator[tuple[Emulator, str]]:
    emu = Emulator(api_keys=[USER_KEY, OTHER_KEY], admin_keys=[ADMIN_KEY])
    with run_in_thread(emu) as base_url:
        yield emu, base_url


@pytest.fixture
def sdk(threaded: tuple[Emulator, str]) -> Iterator[Goodmem]:
    with Goodmem(base_url=threaded[1], api_key=USER_KEY) as client:
        yield client


@pytest.fixture
def admin_sdk(threaded: tuple[Emulator, str]) -> Iterator[Goodmem]:
    with Goodmem(base_url=threaded[1], api_key=ADMIN_KEY) as client:
        yield client


def create_full(sdk: Goodmem, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = dict(
        display_name="Local vLLM",
        provider_type="VLLM",
        endpoint_url="http://vllm.default.svc:8000/v1",
        model_identifier="emulator-test-model",
        description="served by vLLM",
        api_path="/chat/completions",
        supported_modalities=["TEXT", "IMAGE"],
        credentials=EndpointAuthentication.model_validate(
            api_key_credentials(headerName="Authorization", prefix="Bearer ")
        ),
        labels={"env": "prod", "team": "ml"},
        version="1.0",
        monitoring_endpoint="http://vllm.default.svc:8000/metrics",
        capabilities=CAPS,
        default_sampling_params=LLMSamplingParams(
            max_tokens=256,
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            frequency_penalty=0.1,
            presence_penalty=-0.1,
            stop_sequences=["END"],
        ),
        max_context_length=8192,
        client_config={"timeoutSeconds": 30},
    )
    kwargs.update(overrides)
    return sdk.llms.create(**kwargs)


def test_sdk_full_lifecycle(sdk: Goodmem, admin_sdk: Goodmem, threaded: tuple[Emulator, str]) -> None:
    emu, _ = threaded
    llm_id = str(uuid.uuid4())
    created = create_full(sdk, llm_id=llm_id)
    assert isinstance(created, CreateLLMResponse)
    llm = created.llm
    assert llm.llm_id == llm_id
    assert created.statuses == []  # every capability was given
    assert llm.provider_type.value == "VLLM"
    assert [m.value for m in llm.supported_modalities] == ["TEXT", "IMAGE"]
    assert llm.capabilities == CAPS
    assert llm.default_sampling_params.top_k == 40
    assert llm.max_context_length == 8192 and llm.client_config == {"timeoutSeconds": 30}
    assert llm.credentials is None
    assert llm.owner_id == emu.owner_id(USER_KEY) == llm.created_by_id

    got = sdk.llms.get(id=llm_id)
    assert isinstance(got, LLMResponse) and got == llm

    with_creds = admin_sdk.llms.get(id=llm_id, include_credentials=True)
    assert with_creds.credentials is not None
    assert with_creds.credentials.api_key.inline_secret == SECRET
    assert with_creds.credentials.api_key.prefix == "Bearer "

    updated = sdk.llms.update(
        id=llm_id,
        request=LLMUpdateRequest(
            display_name="Local vLLM (renamed)",
            merge_labels={"tier": "gold"},
            supported_modalities=[],
            credentials=EndpointAuthentication.model_validate(
                {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"secretRef": {"uri": "k8s://ns/secret#key"}}}
            ),
        ),
    )
    assert isinstance(updated, LLMResponse)
    assert updated.display_name == "Local vLLM (renamed)"
    assert updated.labels == {"env": "prod", "team": "ml", "tier": "gold"}
    assert [m.value for m in updated.supported_modalities] == ["TEXT", "IMAGE"]
    assert updated.updated_at > llm.updated_at
    ref = admin_sdk.llms.get(id=llm_id, include_credentials=True).credentials
    assert ref.api_key.secret_ref.uri == "k8s://ns/secret#key" and ref.api_key.inline_secret is None

    replaced = sdk.llms.update(id=llm_id, request={"replace_labels": {"only": "one"}})
    assert replaced.labels == {"only": "one"}

    sdk.llms.delete(id=llm_id)
    with pytest.raises(NotFoundError):
        sdk.llms.get(id=llm_id)
    assert emu.records() == []


def test_sdk_list_with_label_filters(sdk: Goodmem, admin_sdk: Goodmem, threaded: tuple[Emulator, str]) -> None:
    emu, _ = threaded
    a = sdk.llms.create(
        display_name="a",
        provider_type="OPENAI",
        endpoint_url="https://api.openai.com/v1",
        model_identifier="emulator-a",
        api_key=SECRET,
        labels={"env": "prod", "team": "ai"},
    ).llm
    b = sdk.llms.create(
        display_name="b",
        provider_type="OLLAMA",
        endpoint_url="http://ollama:11434/v1",
        model_identifier="emulator-b",
        labels={"env": "prod"},
    ).llm
    sdk.llms.create(
        display_name="c",
        provider_type="OLLAMA",
        endpoint_url="http://ollama:11434/v1",
        model_identifier="emulator-c",
        labels={"env": "dev"},
    )
    with Goodmem(base_url=threaded[1], api_key=OTHER_KEY) as other:
        o = other.llms.create(
            display_name="o",
            provider_type="OLLAMA",
            endpoint_url="http://ollama:11434/v1",
            model_identifier="emulator-b",
            labels={"env": "prod"},
        ).llm
        assert [x.llm_id for x in other.llms.list()] == [o.llm_id]

    assert [x.llm_id for x in sdk.llms.list(label={"env": "prod"})] == [a.llm_id, b.llm_id]
    assert [x.llm_id for x in sdk.llms.list(label={"env": "prod", "team": "ai"})] == [a.llm_id]
    assert [x.llm_id for x in sdk.llms.list(provider_type="OLLAMA", label={"env": "prod"})] == [b.llm_id]
    assert len(sdk.llms.list()) == 3
    assert {x.llm_id for x in admin_sdk.llms.list(label={"env": "prod"})} == {a.llm_id, b.llm_id, o.llm_id}
    assert [x.llm_id for x in admin_sdk.llms.list(owner_id=o.owner_id)] == [o.llm_id]
    assert all(x.credentials is None for x in admin_sdk.llms.list())
    # The SDK sends snake_case and bracketed labels.
    paths = [e["path"] for e in emu.stats()["log"] if e["route"] == "/v1/llms" and e["method"] == "GET"]
    assert any("provider_type=OLLAMA" in p and "label%5Benv%5D=prod" in p for p in paths)
    # The SDK's api_key shorthand reached the registry as inline API-key credentials.
    rec = next(r for r in emu.records() if r["llmId"] == a.llm_id)
    assert rec["credentialsFingerprint"] == credentials_fingerprint(
        {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": SECRET}}
    )


def test_sdk_capability_inference_statuses_validate(sdk: Goodmem) -> None:
    created = sdk.llms.create(
        display_name="x",
        provider_type="LLAMA_CPP",
        endpoint_url="http://llama:8080/v1",
        model_identifier="emulator-inferred",
    )
    assert created.statuses and created.statuses[0].code == "LLM_CAPABILITY_INFERRED"
    assert created.llm.capabilities.supports_completion is False
    assert created.llm.capabilities.supports_chat is True


def test_sdk_error_mapping(sdk: Goodmem, admin_sdk: Goodmem, threaded: tuple[Emulator, str]) -> None:
    emu, base_url = threaded
    llm = create_full(sdk).llm
    with pytest.raises(ConflictError) as conflict:
        create_full(sdk, display_name="same identity")
    assert f'"existingLlmId": "{llm.llm_id}"' in conflict.value.body
    with pytest.raises(ConflictError):
        create_full(sdk, llm_id=llm.llm_id, model_identifier="other")
    with pytest.raises(BadRequestError):
        sdk.llms.get(id="not-a-uuid")
    with pytest.raises(BadRequestError):
        sdk.llms.update(id=llm.llm_id, request={"replace_labels": {f"k{i}": "v" for i in range(21)}})
    with pytest.raises(PermissionDeniedError):
        sdk.llms.get(id=llm.llm_id, include_credentials=True)
    with pytest.raises(PermissionDeniedError):
        create_full(sdk, owner_id=emu.owner_id(OTHER_KEY), model_identifier="x")
    with Goodmem(base_url=base_url, api_key=OTHER_KEY) as other, pytest.raises(PermissionDeniedError):
        other.llms.delete(id=llm.llm_id)
    with Goodmem(base_url=base_url, api_key="wrong") as bad, pytest.raises(AuthenticationError):
        bad.llms.list()
    with pytest.raises(NotFoundError):
        sdk.llms.delete(id=str(uuid.uuid4()))
    emu.set_faults(rateLimit={"retryAfter": 1})
    with pytest.raises(RateLimitError):
        sdk.llms.list()
    emu.set_faults(outage=True)
    with pytest.raises(InternalServerError):
        sdk.llms.list()
    emu.clear_faults()
    assert sdk.llms.get(id=llm.llm_id).llm_id == llm.llm_id


def test_sdk_validates_every_credentials_shape(admin_sdk: Goodmem) -> None:
    shapes = [
        api_key_credentials(),
        {
            "kind": "CREDENTIAL_KIND_API_KEY",
            "apiKey": {"secretRef": {"uri": "vault://x", "hints": {"encoding": "base64"}}, "headerName": "X-Api-Key"},
            "labels": {"owner": "ops"},
        },
        {
            "kind": "CREDENTIAL_KIND_GCP_ADC",
            "gcpAdc": {"scopes": ["https://www.googleapis.com/auth/cloud-platform"], "quotaProjectId": "proj"},
        },
        {"kind": "CREDENTIAL_KIND_GCP_ADC", "gcpAdc": {}},
    ]
    for i, shape in enumerate(shapes):
        llm = admin_sdk.llms.create(
            display_name=f"c{i}",
            provider_type="CUSTOM_OPENAI_COMPATIBLE",
            endpoint_url="https://llm.example/v1",
            model_identifier=f"emulator-{i}",
            credentials=EndpointAuthentication.model_validate(shape),
        ).llm
        got = admin_sdk.llms.get(id=llm.llm_id, include_credentials=True)
        assert got.credentials == EndpointAuthentication.model_validate(shape)


def test_raw_responses_validate_against_sdk_models(threaded: tuple[Emulator, str]) -> None:
    _, base_url = threaded
    with httpx.Client(base_url=base_url, headers=headers(ADMIN_KEY)) as http:
        resp = http.post("/v1/llms", json=llm_body(credentials=api_key_credentials()))
        CreateLLMResponse.model_validate(resp.json())
        llm_id = resp.json()["llm"]["llmId"]
        LLMResponse.model_validate(http.get(f"/v1/llms/{llm_id}").json())
        LLMResponse.model_validate(http.get(f"/v1/llms/{llm_id}", params={"includeCredentials": "true"}).json())
        LLMResponse.model_validate(http.put(f"/v1/llms/{llm_id}", json={"description": "x"}).json())
        ListLLMsResponse.model_validate(http.get("/v1/llms").json())


async def test_async_sdk_against_in_process_emulator(emu: Emulator) -> None:
    async with AsyncGoodmem(base_url=emu.base_url, api_key=USER_KEY) as client:
        created = await client.llms.create(
            display_name="async",
            provider_type="VLLM",
            endpoint_url="http://vllm:8000/v1",
            model_identifier="emulator-async",
            labels={"k": "v"},
        )
        llm_id = created.llm.llm_id
        assert (await client.llms.get(id=llm_id)).display_name == "async"
        assert [x.llm_id for x in await client.llms.list(label={"k": "v"})] == [llm_id]
        assert (await client.llms.update(id=llm_id, request={"description": "d"})).description == "d"
        await client.llms.delete(id=llm_id)
        assert await client.llms.list() == []


def test_run_in_thread_cleans_up() -> None:
    before = {t.ident for t in threading.enumerate()}
    emu = Emulator(api_keys=[USER_KEY])
    with run_in_thread(emu) as base_url:
        port = urlsplit(base_url).port
        assert httpx.get(f"{base_url}/healthz").status_code == 200
        assert emu.base_url == base_url
    assert emu.base_url is None
    assert {t.ident for t in threading.enumerate()} <= before
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_run_in_thread_builds_an_emulator_from_keys() -> None:
    with run_in_thread(api_keys=["k"], admin_keys=["root"]) as base_url:
        resp = httpx.get(f"{base_url}/_emulator/faults", headers={"x-api-key": "root"})
        assert resp.status_code == 200


@pytest.mark.parametrize("conflict_body", ["named", "opaque"])
def test_run_in_thread_passes_the_conflict_body(conflict_body: str) -> None:
    with (
        run_in_thread(api_keys=["k"], conflict_body=conflict_body) as base_url,
        httpx.Client(base_url=base_url, headers={"x-api-key": "k"}, timeout=10) as http,
    ):
        assert http.post("/v1/llms", json=llm_body()).status_code == 201
        conflict = http.post("/v1/llms", json=llm_body())
    assert conflict.status_code == 409 and ("existingLlmId" in conflict.json()) is (conflict_body == "named")


def test_run_in_thread_reports_startup_failure() -> None:
    with run_in_thread(api_keys=["k"]) as base_url:
        port = urlsplit(base_url).port
        with pytest.raises(OSError), run_in_thread(api_keys=["k"], port=port):
            pass  # pragma: no cover
