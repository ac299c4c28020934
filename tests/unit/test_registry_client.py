"""The registry client without a server: typed errors, redaction, the concurrency limit."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import pytest

from goodmem_operator.fairness import tenant
from goodmem_operator.registry import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidId,
    NotFound,
    RateLimited,
    RegistryClient,
    RegistryError,
    ServerError,
    Unauthorized,
    UnexpectedResponse,
    Unreachable,
    redact,
)
from tests.leakscan import assert_no_leaks

pytestmark = pytest.mark.unit

SENTINEL = 'SENTINEL-unit-"4711'
ID = "0b6f3c1e-8a52-4d7e-9c10-2f4e6a8b0c1d"
LLM = {"llmId": ID, "displayName": "x"}


def client(handler, **kw) -> RegistryClient:
    return RegistryClient("http://registry.test", "operator-key-0123", transport=httpx.MockTransport(handler), **kw)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (429, RateLimited),
        (500, ServerError),
        (503, ServerError),
        (413, BadRequest),
        (422, BadRequest),
        (408, RegistryError),
    ],
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

    body = {
        "displayName": "x",
        "credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": SENTINEL}},
    }
    async with client(echo) as c:
        with pytest.raises(BadRequest) as info:
            await c.create_llm(body)
    text = str(info.value) + info.value.registry_reason
    for secret in (SENTINEL, "operator-key-0123"):
        assert_no_leaks({"error text": text}, secret)
    assert "<redacted>" in text


@pytest.mark.parametrize(("named", "expected"), [(ID, ID), (ID.upper(), ID.upper()), ("abc", None), ("../x", None)])
async def test_409_names_the_existing_entry_only_by_a_uuid(named: str, expected: str | None) -> None:
    async with client(lambda r: httpx.Response(409, json={"error": "ALREADY_EXISTS", "existingLlmId": named})) as c:
        with pytest.raises(Conflict) as info:
            await c.create_llm({})
    assert info.value.existing_id == expected


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


# --- strict answers (issue #13): only a 2xx of the promised shape is a success ---------------------------

VERBS = {
    "create": lambda c: c.create_llm({"llmId": ID, "displayName": "x"}),
    "get": lambda c: c.get_llm(ID),
    "list": lambda c: c.list_llms(),
    "update": lambda c: c.update_llm(ID, {"displayName": "y"}),
    "delete": lambda c: c.delete_llm(ID),
}


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308, 304, 300])
async def test_3xx_is_a_retryable_unexpected_response_and_never_followed(verb: str, status: int) -> None:
    seen: list[httpx.Request] = []

    def redirect(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(status, headers={"location": f"https://elsewhere.test/v1/llms/{ID}"}, json={"llms": []})

    async with client(redirect) as c:
        assert c._http.follow_redirects is False
        with pytest.raises(UnexpectedResponse) as info:
            await VERBS[verb](c)
    assert len(seen) == 1, "the redirect was followed"
    err = info.value
    assert err.retryable and isinstance(err, UnexpectedResponse) and err.status == status
    assert f"answered {status}" in str(err) and f"({verb})" in str(err) and "redirect" in str(err)


async def test_redirect_location_is_redacted() -> None:
    async with client(lambda r: httpx.Response(307, headers={"location": f"/v1/llms?key={SENTINEL}"})) as c:
        with pytest.raises(UnexpectedResponse) as info:
            await c.create_llm({"credentials": {"apiKey": {"inlineSecret": SENTINEL}}})
    assert SENTINEL not in str(info.value) and "<redacted>" in str(info.value)


@pytest.mark.parametrize(
    ("verb", "answer", "what"),
    [
        ("create", httpx.Response(201), "empty"),
        ("create", httpx.Response(204), "empty"),
        ("create", httpx.Response(201, text="created"), "not JSON"),
        ("create", httpx.Response(201, json=LLM), 'not an object {"llm"'),  # the LLM itself, not {"llm": ...}
        ("create", httpx.Response(201, json={"llm": "x"}), "not an object"),
        ("create", httpx.Response(201, json={"llm": {"llmId": 5}}), "no string llmId"),
        (
            "create",
            httpx.Response(201, json={"llm": {**LLM, "llmId": "1b6f3c1e-8a52-4d7e-9c10-2f4e6a8b0c1d"}}),
            "not the one requested",
        ),
        ("get", httpx.Response(200), "empty"),
        ("get", httpx.Response(200, text="<html>login</html>"), "not JSON"),
        ("get", httpx.Response(200, json=[LLM]), "not an LLM object"),
        ("get", httpx.Response(200, json={"displayName": "x"}), "no string llmId"),
        ("get", httpx.Response(200, json={**LLM, "llmId": "1b6f3c1e-8a52-4d7e-9c10-2f4e6a8b0c1d"}), "another llmId"),
        ("update", httpx.Response(200), "empty"),
        ("update", httpx.Response(200, json={}), "no string llmId"),
        ("update", httpx.Response(202, json={"status": "queued"}), "no string llmId"),
        ("list", httpx.Response(200), "empty"),
        ("list", httpx.Response(200, json={}), "not an object"),
        ("list", httpx.Response(200, json=[LLM]), "not an object"),
        ("list", httpx.Response(200, json={"llms": "none"}), "not an object"),
        ("list", httpx.Response(200, json={"llms": [LLM, 1]}), "list of LLM objects"),
        ("list", httpx.Response(200, json={"llms": [{"displayName": "x"}]}), "no string llmId"),
        ("delete", httpx.Response(201), "answers 200 or 204"),
        ("delete", httpx.Response(202), "answers 200 or 204"),
    ],
)
async def test_2xx_without_the_promised_body_is_unexpected(verb: str, answer: httpx.Response, what: str) -> None:
    async with client(lambda r: answer) as c:
        with pytest.raises(UnexpectedResponse) as info:
            await VERBS[verb](c)
    err = info.value
    assert err.retryable and isinstance(err, UnexpectedResponse)
    assert what in str(err) and f"({verb})" in str(err) and "/v1/llms" in str(err)
    assert err.status == answer.status_code and f"answered {answer.status_code}" in str(err)


@pytest.mark.parametrize(
    ("verb", "answer", "result"),
    [
        (
            "create",
            httpx.Response(201, json={"llm": {**LLM, "llmId": ID.upper()}, "statuses": []}),
            {**LLM, "llmId": ID.upper()},
        ),
        ("get", httpx.Response(200, json=LLM), LLM),
        ("update", httpx.Response(200, json=LLM), LLM),
        ("list", httpx.Response(200, json={"llms": [LLM]}), [LLM]),
        ("list", httpx.Response(200, json={"llms": []}), []),
        ("delete", httpx.Response(204), None),
        ("delete", httpx.Response(200, text="deleted"), None),
        ("delete", httpx.Response(200, json={"ok": True}), None),
    ],
)
async def test_answers_of_the_promised_shape_are_successes(verb: str, answer: httpx.Response, result: object) -> None:
    async with client(lambda r: answer) as c:
        assert await VERBS[verb](c) == result


async def test_unexpected_body_is_never_quoted() -> None:
    body = {"credentials": {"apiKey": {"inlineSecret": SENTINEL}}, "llmId": ID}
    async with client(lambda r: httpx.Response(200, text=f"echo {r.content.decode()} {SENTINEL}")) as c:
        with pytest.raises(UnexpectedResponse) as info:
            await c.create_llm(body)
    assert "echo" not in str(info.value) and SENTINEL not in str(info.value)
    assert "not JSON" in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "",
        "../../_emulator/faults",
        f"{ID}/../x",
        f"{ID}?a=b",
        ID.replace("-", ""),
        "{" + ID + "}",
        f" {ID}",
        "0b6f3c1e-8a52-4d7e-9c10-2f4e6a8b0c1g",
    ],
)
@pytest.mark.parametrize("verb", ["get", "update", "delete"])
async def test_invalid_id_is_refused_without_a_request(verb: str, bad: str) -> None:
    seen: list[httpx.Request] = []

    def record(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json=LLM)

    call = {
        "get": lambda c: c.get_llm(bad),
        "update": lambda c: c.update_llm(bad, {}),
        "delete": lambda c: c.delete_llm(bad),
    }
    async with client(record) as c:
        with pytest.raises(InvalidId) as info:
            await call[verb](c)
    assert seen == []
    assert not info.value.retryable and isinstance(info.value, InvalidId)
    assert "not a UUID" in str(info.value)


async def test_uuid_of_any_case_is_accepted() -> None:
    async with client(lambda r: httpx.Response(200, json={**LLM, "llmId": ID})) as c:
        assert (await c.get_llm(ID.upper()))["llmId"] == ID


SECRETS = ["plain-Secret-0123456789", 'quo"te\\back/slash\nline', "ünïcødé-sëcret-äöü", "a+b/c?d>e~f"]


def _forms(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "plain": secret,
        "json": json.dumps(secret)[1:-1],
        "json-utf8": json.dumps(secret, ensure_ascii=False)[1:-1],
        "b64": base64.b64encode(raw).decode(),
        "b64-nopad": base64.b64encode(raw).decode().rstrip("="),
        "b64url": base64.urlsafe_b64encode(raw).decode(),
        "b64url-nopad": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("form", list(_forms("x")))
def test_redact_covers_every_form(secret: str, form: str) -> None:
    shown = _forms(secret)[form]
    text = redact(f"before {shown} after", [secret])
    assert text == "before <redacted> after"


def test_redact_json_escaped_secret_in_an_echoed_body() -> None:
    secret = 'k"ey\\with-quotes'
    echoed = json.dumps({"credentials": {"apiKey": {"inlineSecret": secret}}})
    assert secret not in echoed, "the plain form alone would miss it"
    assert redact(echoed, [secret]) == '{"credentials": {"apiKey": {"inlineSecret": "<redacted>"}}}'


async def test_error_text_redacts_json_escaped_and_base64_forms() -> None:
    secret = 'SENTINEL"unit\\4711'

    def echo(req: httpx.Request) -> httpx.Response:
        b64 = base64.b64encode(secret.encode()).decode()
        return httpx.Response(400, json={"error": "X", "message": f"{req.content.decode()} basic={b64}"})

    async with client(echo) as c:
        with pytest.raises(BadRequest) as info:
            await c.update_llm(ID, {"credentials": {"apiKey": {"inlineSecret": secret}}})
    text = str(info.value)
    assert "inlineSecret" in text, "the echo reached the message"
    for form in _forms(secret).values():
        assert form not in text
