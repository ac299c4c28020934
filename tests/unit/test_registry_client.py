"""The registry client without a server: typed errors, redaction, the concurrency limit."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from goodmem_operator.fairness import tenant
from goodmem_operator.registry import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    RegistryClient,
    RegistryError,
    ServerError,
    Unauthorized,
    Unreachable,
)

pytestmark = pytest.mark.unit

SENTINEL = "SENTINEL-unit-4711"


def client(handler, **kw) -> RegistryClient:
    return RegistryClient("http://registry.test", "operator-key-0123", transport=httpx.MockTransport(handler), **kw)


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequest), (401, Unauthorized), (403, Forbidden), (404, NotFound), (409, Conflict), (429, RateLimited),
     (500, ServerError), (503, ServerError), (413, BadRequest), (422, BadRequest), (408, RegistryError)],
)
async def test_status_maps_to_typed_error(status: int, error: type) -> None:
    async with client(lambda req: httpx.Response(status, json={"error": "X"}, headers={"retry-after": "3"})) as c:
        with pytest.raises(error) as info:
            await c.get_llm("00000000-0000-4000-8000-000000000000")
    assert info.value.status == status
    # 408 and 5xx are worth retrying; any other 4xx but 401/403/429 is permanent (a 413 stays a 413).
    assert info.value.retryable == (status in (401, 403, 408, 429) or status >= 500)
    if status == 429:
        assert info.value.retry_after == 3.0


async def test_network_failure_is_unreachable() -> None:
    def boom(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with client(boom) as c:
        with pytest.raises(Unreachable):
            await c.list_llms()


async def test_error_text_never_echoes_secrets() -> None:
    def echo(req: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text=f"bad request: {req.content.decode()} key={req.headers['x-api-key']}")

    body = {"displayName": "x", "credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": SENTINEL}}}
    async with client(echo) as c:
        with pytest.raises(BadRequest) as info:
            await c.create_llm(body)
    text = str(info.value) + info.value.registry_reason
    assert SENTINEL not in text and "operator-key-0123" not in text
    assert "<redacted>" in text


async def test_409_names_the_existing_entry() -> None:
    async with client(lambda r: httpx.Response(409, json={"error": "ALREADY_EXISTS", "existingLlmId": "abc"})) as c:
        with pytest.raises(Conflict) as info:
            await c.create_llm({})
    assert info.value.existing_id == "abc"


async def test_concurrency_is_capped() -> None:
    in_flight = 0
    peak = 0

    async def slow(req: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json={"llms": []})

    async with client(slow, concurrency=3, rate=10_000) as c:
        async def in_namespace(i: int) -> None:
            with tenant(f"ns-{i}"):  # one namespace each: the per-namespace cap (test_fairness.py) is not what binds
                await c.list_llms()

        await asyncio.gather(*(in_namespace(i) for i in range(20)))
    assert peak == 3


async def test_list_sends_label_filters() -> None:
    seen: list[httpx.URL] = []

    def record(req: httpx.Request) -> httpx.Response:
        seen.append(req.url)
        return httpx.Response(200, content=json.dumps({"llms": [{"llmId": "a"}]}))

    async with client(record) as c:
        assert await c.list_llms(provider_type="VLLM", labels={"team": "a"}) == [{"llmId": "a"}]
    assert seen[0].params["providerType"] == "VLLM" and seen[0].params["label.team"] == "a"
    assert seen[0].path == "/v1/llms"
