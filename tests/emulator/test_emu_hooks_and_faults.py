"""Test hooks (/_emulator/...) and fault injection over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from goodmem_emulator import Emulator, credentials_fingerprint
from goodmem_emulator._faults import parse_fault_config
from goodmem_emulator._validation import ValidationError

from .helpers import ADMIN_KEY, SECRET, USER_KEY, Api, api_key_credentials, headers, llm_body

pytestmark = pytest.mark.integration

ADMIN = headers(ADMIN_KEY)


# ---------------------------------------------------------------- hooks: auth


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_emulator/stats"),
        ("POST", "/_emulator/stats/reset"),
        ("GET", "/_emulator/llms"),
        ("GET", "/_emulator/faults"),
        ("PUT", "/_emulator/faults"),
        ("DELETE", "/_emulator/faults"),
    ],
)
async def test_hooks_require_the_admin_key(http: httpx.AsyncClient, emu: Emulator, method: str, path: str) -> None:
    body = {"outage": True} if method == "PUT" else None
    assert (await http.request(method, path, json=body)).status_code == 401
    assert (await http.request(method, path, json=body, headers=headers("bogus"))).status_code == 401
    assert (await http.request(method, path, json=body, headers=headers(USER_KEY))).status_code == 403
    assert emu.get_faults()["outage"] is False  # the refused PUT changed nothing
    assert (await http.request(method, path, json=body, headers=ADMIN)).status_code == 200


# ---------------------------------------------------------------- stats


async def test_stats_count_v1_requests_by_route_and_status(api: Api, http: httpx.AsyncClient, emu: Emulator) -> None:
    llm = await api.created(llm_body(credentials=api_key_credentials()))
    await api.create(llm_body(credentials=api_key_credentials()))  # 409
    await api.list()
    await api.get(llm["llmId"])
    await api.get(str(uuid.uuid4()))  # 404
    await api.update(llm["llmId"], {"credentials": api_key_credentials("rotated-" + SECRET)})
    await api.delete(llm["llmId"])
    await api.list(key=None)  # 401
    await http.get("/healthz")  # not counted
    await http.get("/_emulator/llms", headers=ADMIN)  # not counted

    resp = await http.get("/_emulator/stats", headers=ADMIN)
    stats = resp.json()
    assert stats == emu.stats()
    assert stats["requests"] == {
        "POST /v1/llms": 2,
        "GET /v1/llms": 2,
        "GET /v1/llms/{id}": 2,
        "PUT /v1/llms/{id}": 1,
        "DELETE /v1/llms/{id}": 1,
    }
    assert stats["byStatus"] == {
        "POST /v1/llms 201": 1,
        "POST /v1/llms 409": 1,
        "GET /v1/llms 200": 1,
        "GET /v1/llms 401": 1,
        "GET /v1/llms/{id} 200": 1,
        "GET /v1/llms/{id} 404": 1,
        "PUT /v1/llms/{id} 200": 1,
        "DELETE /v1/llms/{id} 204": 1,
    }
    log = stats["log"]
    assert [(e["method"], e["route"], e["status"]) for e in log] == [
        ("POST", "/v1/llms", 201),
        ("POST", "/v1/llms", 409),
        ("GET", "/v1/llms", 200),
        ("GET", "/v1/llms/{id}", 200),
        ("GET", "/v1/llms/{id}", 404),
        ("PUT", "/v1/llms/{id}", 200),
        ("DELETE", "/v1/llms/{id}", 204),
        ("GET", "/v1/llms", 401),
    ]
    assert log[3]["path"] == f"/v1/llms/{llm['llmId']}"
    assert log[0]["body"]["credentials"]["apiKey"]["inlineSecret"] == "<redacted>"
    assert log[0]["body"]["displayName"] == llm["displayName"]
    assert log[5]["body"]["credentials"]["apiKey"]["inlineSecret"] == "<redacted>"
    assert log[2]["body"] is None
    assert all(isinstance(e["ts"], int) and e["ts"] > 1_600_000_000_000 for e in log)
    assert SECRET not in resp.text


async def test_stats_log_keeps_the_query_and_unparseable_bodies_are_not_logged(
    api: Api, http: httpx.AsyncClient, emu: Emulator
) -> None:
    await api.list({"label.env": "prod"})
    await http.post("/v1/llms", content=b"inlineSecret=" + SECRET.encode(), headers=headers())
    log = emu.stats()["log"]
    assert log[0]["path"] == "/v1/llms?label.env=prod"
    assert log[1]["status"] == 400 and log[1]["body"] == "<unparseable>"
    assert SECRET not in json.dumps(emu.stats())


async def test_stats_reset(api: Api, http: httpx.AsyncClient, emu: Emulator) -> None:
    await api.list()
    resp = await http.post("/_emulator/stats/reset", headers=ADMIN)
    assert resp.status_code == 200
    assert emu.stats() == {
        "requests": {
            "POST /v1/llms": 0,
            "GET /v1/llms": 0,
            "GET /v1/llms/{id}": 0,
            "PUT /v1/llms/{id}": 0,
            "DELETE /v1/llms/{id}": 0,
        },
        "byStatus": {},
        "inFlight": {
            "POST /v1/llms": 0,
            "GET /v1/llms": 0,
            "GET /v1/llms/{id}": 0,
            "PUT /v1/llms/{id}": 0,
            "DELETE /v1/llms/{id}": 0,
        },
        "log": [],
    }
    await api.list()
    emu.reset_stats()
    assert emu.stats()["requests"]["GET /v1/llms"] == 0


async def test_stats_log_is_bounded(api: Api, emu: Emulator) -> None:
    emu.stats_store._log_limit = 3
    emu.reset_stats()
    for _ in range(5):
        await api.list()
    stats = emu.stats()
    assert len(stats["log"]) == 3 and stats["requests"]["GET /v1/llms"] == 5


# ---------------------------------------------------------------- records


async def test_emulator_llms_shows_full_records_without_the_secret(
    api: Api, http: httpx.AsyncClient, emu: Emulator
) -> None:
    creds = api_key_credentials(prefix="Bearer ")
    llm = await api.created(llm_body(credentials=creds, endpointUrl="https://API.openai.com/v1/"))
    resp = await http.get("/_emulator/llms", headers=ADMIN)
    assert resp.status_code == 200
    assert SECRET not in resp.text
    (rec,) = resp.json()["llms"]
    assert rec == emu.records()[0]
    assert {k: v for k, v in rec.items() if k in llm} == llm
    assert rec["ownerId"] == emu.owner_id(USER_KEY)
    assert rec["credentialsFingerprint"] == credentials_fingerprint(creds)
    assert rec["credentials"] == {
        "kind": "CREDENTIAL_KIND_API_KEY",
        "apiKey": {"inlineSecret": "<redacted>", "prefix": "Bearer "},
    }
    assert rec["canonicalEndpointUrl"] == "https://api.openai.com/v1"


# ---------------------------------------------------------------- faults


def test_fault_config_parsing() -> None:
    cfg = parse_fault_config({"latencyMs": 5, "error_rate": 0.5, "rateLimit": {"retryAfter": 1.2}, "seed": 3})
    assert (cfg.latency_ms, cfg.error_rate, cfg.error_status, cfg.retry_after_header) == (5, 0.5, 503, "2")
    for bad in (
        {"latencyMs": -1},
        {"errorRate": 1.5},
        {"errorStatus": 200},
        {"errorMethods": []},
        {"errorMethods": ["PATCH"]},
        {"errorMethods": "PUT"},
        {"errorStatus": 299},
        {"errorStatus": 600},
        {"rateLimit": {"x": 1}},
        {"rateLimit": {"retryAfter": -1}},
        {"outage": "yes"},
        {"echoRequest": 1},
        {"dropResponseAfterCommit": True},
        {"bogus": 1},
    ):
        with pytest.raises(ValidationError):
            parse_fault_config(bad)


async def test_faults_put_get_delete(http: httpx.AsyncClient, emu: Emulator) -> None:
    resp = await http.put("/_emulator/faults", headers=ADMIN, json={"latencyMs": 1, "errorStatus": 500})
    assert resp.status_code == 200
    current = (await http.get("/_emulator/faults", headers=ADMIN)).json()
    assert current == resp.json() == emu.get_faults()
    assert current == {
        "latencyMs": 1,
        "errorRate": 0.0,
        "errorStatus": 500,
        "rateLimit": None,
        "outage": False,
        "echoRequest": False,
        "dropResponseAfterCommit": 0,
        "seed": None,
        "errorMethods": None,
    }
    # PUT replaces the whole configuration.
    await http.put("/_emulator/faults", headers=ADMIN, json={"outage": True})
    assert emu.get_faults()["latencyMs"] == 0 and emu.get_faults()["outage"] is True
    bad = await http.put("/_emulator/faults", headers=ADMIN, json={"errorRate": 2})
    assert bad.status_code == 400 and bad.json()["field"] == "errorRate"
    assert emu.get_faults()["outage"] is True
    assert (await http.delete("/_emulator/faults", headers=ADMIN)).json()["outage"] is False


async def test_outage_hits_only_v1_and_commits_nothing(api: Api, http: httpx.AsyncClient, emu: Emulator) -> None:
    emu.set_faults(outage=True)
    resp = await api.create(llm_body())
    assert resp.status_code == 503
    assert (await api.list()).status_code == 503
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/_emulator/stats", headers=ADMIN)).status_code == 200
    assert emu.records() == []
    assert emu.stats()["byStatus"]["POST /v1/llms 503"] == 1
    emu.clear_faults()
    assert (await api.create(llm_body())).status_code == 201


async def test_faults_apply_before_authentication(api: Api, emu: Emulator) -> None:
    emu.set_faults(outage=True)
    assert (await api.list(key=None)).status_code == 503
    emu.clear_faults()
    assert (await api.list(key=None)).status_code == 401


async def test_rate_limit_returns_429_with_retry_after(api: Api, emu: Emulator) -> None:
    emu.set_faults(rateLimit={"retryAfter": 7})
    for resp in (await api.create(llm_body()), await api.list(), await api.get(str(uuid.uuid4()))):
        assert resp.status_code == 429
        assert resp.headers["Retry-After"] == "7"
    assert emu.records() == []
    emu.set_faults(rate_limit=None)
    assert (await api.list()).status_code == 200


async def test_error_rate_and_status(api: Api, emu: Emulator) -> None:
    emu.set_faults(errorRate=1.0, errorStatus=502)
    assert (await api.list()).status_code == 502
    assert (await api.create(llm_body())).status_code == 502
    assert emu.records() == []
    emu.set_faults(errorRate=1.0)
    assert (await api.list()).status_code == 503  # default errorStatus
    emu.set_faults(errorRate=1.0, errorStatus=400, errorMethods=["put", "POST"])
    assert emu.get_faults()["errorMethods"] == ["POST", "PUT"]
    assert (await api.list()).status_code == 200  # GET is spared
    assert (await api.create(llm_body())).status_code == 400
    emu.set_faults(errorRate=1.0, errorStatus=301)
    redirect = await api.create(llm_body())
    assert redirect.status_code == 301 and redirect.headers["Location"] == "/v1/llms"
    assert emu.records() == []
    emu.set_faults(errorRate=0.5, seed=42)
    statuses = [(await api.list()).status_code for _ in range(40)]
    assert set(statuses) == {200, 503}
    emu.set_faults(errorRate=0.5, seed=42)
    assert [(await api.list()).status_code for _ in range(40)] == statuses  # seeded: reproducible


async def test_latency(api: Api, emu: Emulator) -> None:
    emu.set_faults(latencyMs=300)
    start = time.monotonic()
    assert (await api.list()).status_code == 200
    assert time.monotonic() - start >= 0.29


async def test_in_flight_counts_requests_received_and_not_yet_answered(
    api: Api, http: httpx.AsyncClient, emu: Emulator
) -> None:
    """The gauge a SIGKILL test reads (tests/e2e/test_lifecycle.py): a POST held by latency is in flight from
    the moment it arrives until it is answered, also across a stats reset and after its client went away."""
    assert set(emu.stats()["inFlight"].values()) == {0}
    emu.set_faults(latencyMs=600)
    creates = [
        asyncio.ensure_future(api.create(llm_body(endpointUrl=f"https://held-{i}.example.test/v1"))) for i in range(2)
    ]
    listing = asyncio.ensure_future(api.list())
    await _until(lambda: emu.stats()["inFlight"]["POST /v1/llms"] == 2 and emu.stats()["inFlight"]["GET /v1/llms"] == 1)
    assert emu.records() == [], "held: nothing committed yet"
    emu.reset_stats()
    assert emu.stats()["inFlight"]["POST /v1/llms"] == 2, "a reset does not forget requests in flight"
    assert [r.status_code for r in await asyncio.gather(*creates, listing)] == [201, 201, 200]
    assert set(emu.stats()["inFlight"].values()) == {0}
    assert (await http.get("/_emulator/stats", headers=ADMIN)).json()["inFlight"]["POST /v1/llms"] == 0

    # A client that goes away mid-request (a killed operator): the request stays in flight until processed.
    async with httpx.AsyncClient(base_url=emu.base_url, timeout=10) as gone:
        body = llm_body(endpointUrl="https://orphan.example.test/v1")
        orphan = asyncio.ensure_future(gone.post("/v1/llms", json=body, headers=headers()))
        await _until(lambda: emu.stats()["inFlight"]["POST /v1/llms"] == 1)
        orphan.cancel()
    assert emu.stats()["inFlight"]["POST /v1/llms"] == 1
    await _until(lambda: emu.stats()["inFlight"]["POST /v1/llms"] == 0)
    assert len(emu.records()) == 3, "processed although nobody read the answer"


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_echo_request_reflects_the_raw_body_in_error_responses(api: Api, emu: Emulator) -> None:
    bad = llm_body(credentials=api_key_credentials(), providerType="NOPE")
    resp = await api.create(bad)
    assert resp.status_code == 400 and SECRET not in resp.text
    emu.set_faults(echoRequest=True)
    resp = await api.create(bad)
    assert resp.status_code == 400
    assert SECRET in resp.text
    assert json.loads(resp.json()["requestBody"]) == bad
    # The raw body also stands in the message, the text a client reads: a client that does not redact leaks it.
    message = resp.json()["message"]
    assert message.startswith("providerType: ") and message.endswith(
        f"request body as received: {resp.request.content.decode()}"
    )
    assert SECRET in message
    ok = await api.create(llm_body(credentials=api_key_credentials()))
    assert ok.status_code == 201 and SECRET not in ok.text  # successes never echo
    emu.set_faults(echoRequest=True, outage=True)
    resp = await api.update(str(uuid.uuid4()), {"credentials": api_key_credentials()})
    assert resp.status_code == 503 and SECRET in resp.json()["message"]
    assert SECRET not in json.dumps(emu.stats())


async def test_drop_response_after_commit(api: Api, emu: Emulator) -> None:
    emu.set_faults(dropResponseAfterCommit=1)
    llm_id = str(uuid.uuid4())
    with pytest.raises(httpx.RemoteProtocolError):
        await api.create(llm_body(llmId=llm_id))
    assert emu.get_faults()["dropResponseAfterCommit"] == 0
    assert [r["llmId"] for r in emu.records()] == [llm_id]  # committed
    # The idempotent retry after the lost response: ALREADY_EXISTS naming it.
    retry = await api.create(llm_body(llmId=llm_id))
    assert retry.status_code == 409 and retry.json()["existingLlmId"] == llm_id

    emu.set_faults(dropResponseAfterCommit=2)
    assert (await api.get(llm_id)).status_code == 200  # reads are never dropped
    with pytest.raises(httpx.RemoteProtocolError):
        await api.update(llm_id, {"description": "committed"})
    assert emu.records()[0]["description"] == "committed"
    with pytest.raises(httpx.RemoteProtocolError):
        await api.delete(llm_id)
    assert emu.records() == []
    assert (await api.create(llm_body(llmId=llm_id))).status_code == 201  # counter exhausted
    by_status = emu.stats()["byStatus"]
    assert by_status["POST /v1/llms dropped"] == 1
    assert by_status["POST /v1/llms 409"] == 1
    assert by_status["PUT /v1/llms/{id} dropped"] == 1
    assert by_status["DELETE /v1/llms/{id} dropped"] == 1
