"""Key rotation over HTTP: /_emulator/keys adds a key as an existing principal (or a new one) and revokes keys,
while /v1 keeps entries with the principal; no key value in an answer, the access log or the stats."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from goodmem_devcluster.stack import EmulatorProcess
from goodmem_emulator import Emulator, owner_id_for_key

from .helpers import ADMIN_KEY, OTHER_KEY, USER_KEY, Api, headers, llm_body

pytestmark = pytest.mark.integration

ADMIN = headers(ADMIN_KEY)
NEW_KEY = "rotated-user-key-SENTINEL-4e1b"


async def add(http: httpx.AsyncClient, body: object, key: str = ADMIN_KEY) -> httpx.Response:
    return await http.post("/_emulator/keys", json=body, headers=headers(key))


async def revoke(http: httpx.AsyncClient, body: object, key: str = ADMIN_KEY) -> httpx.Response:
    return await http.request("DELETE", "/_emulator/keys", json=body, headers=headers(key))


@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", None), ("POST", {"key": NEW_KEY, "sameAs": USER_KEY}), ("DELETE", {"key": OTHER_KEY})],
)
async def test_key_hooks_require_the_admin_key(
    http: httpx.AsyncClient, emu: Emulator, method: str, body: object
) -> None:
    before = emu.principals()
    assert (await http.request(method, "/_emulator/keys", json=body)).status_code == 401
    assert (await http.request(method, "/_emulator/keys", json=body, headers=headers("bogus"))).status_code == 401
    assert (await http.request(method, "/_emulator/keys", json=body, headers=headers(USER_KEY))).status_code == 403
    assert emu.principals() == before, "a refused call changed nothing"
    assert (await http.request(method, "/_emulator/keys", json=body, headers=ADMIN)).status_code == 200


async def test_a_rotated_key_acts_as_the_same_principal_and_the_old_one_stops(
    api: Api, http: httpx.AsyncClient, emu: Emulator
) -> None:
    owner = owner_id_for_key(USER_KEY)
    llm = await api.created(llm_body())

    resp = await add(http, {"key": NEW_KEY, "sameAs": USER_KEY})
    assert resp.status_code == 200
    assert resp.json() == {"ownerId": owner, "admin": False, "keys": 2}
    assert emu.owner_id(NEW_KEY) == owner

    # Both keys work, as the same principal: the entry is the new key's to read, list and change.
    for key in (USER_KEY, NEW_KEY):
        assert (await api.get(llm["llmId"], key=key)).status_code == 200
        assert [e["llmId"] for e in (await api.list(key=key)).json()["llms"]] == [llm["llmId"]]
    updated = await api.update(llm["llmId"], {"displayName": "renamed by the new key"}, key=NEW_KEY)
    assert updated.status_code == 200
    assert updated.json()["ownerId"] == owner and updated.json()["updatedById"] == owner
    second = await api.created(llm_body(modelIdentifier="made-by-new-key"), key=NEW_KEY)
    assert second["ownerId"] == second["createdById"] == owner

    resp = await revoke(http, {"key": USER_KEY})
    assert resp.status_code == 200
    assert resp.json() == {"ownerId": owner, "admin": False, "keys": 1}
    old = await api.get(llm["llmId"], key=USER_KEY)
    assert old.status_code == 401 and old.json()["error"] == "UNAUTHENTICATED"
    assert (await api.list(key=USER_KEY)).status_code == 401
    # The principal and its entries stay, reachable with the new key.
    assert {e["llmId"] for e in (await api.list(key=NEW_KEY)).json()["llms"]} == {llm["llmId"], second["llmId"]}
    assert (await api.delete(second["llmId"], key=NEW_KEY)).status_code == 204
    assert [r["ownerId"] for r in emu.records()] == [owner]


async def test_a_key_added_alone_is_another_principal(api: Api, http: httpx.AsyncClient) -> None:
    llm = await api.created(llm_body())
    resp = await add(http, {"key": NEW_KEY})
    assert resp.json() == {"ownerId": owner_id_for_key(NEW_KEY), "admin": False, "keys": 1}
    assert (await api.list(key=NEW_KEY)).json()["llms"] == []
    assert (await api.get(llm["llmId"], key=NEW_KEY)).status_code == 403
    assert (await api.get(llm["llmId"], key=NEW_KEY, includeCredentials="true")).status_code == 403

    resp = await add(http, {"key": "second-admin-key", "admin": True})
    assert resp.json()["admin"] is True
    assert (await http.get("/_emulator/keys", headers=headers("second-admin-key"))).status_code == 200


async def test_the_facade_rotates_like_the_hooks(api: Api, http: httpx.AsyncClient, emu: Emulator) -> None:
    llm = await api.created(llm_body())
    assert emu.add_key(NEW_KEY, same_as=USER_KEY) == owner_id_for_key(USER_KEY)
    emu.revoke_key(USER_KEY)
    assert (await api.get(llm["llmId"], key=USER_KEY)).status_code == 401
    assert (await api.get(llm["llmId"], key=NEW_KEY)).status_code == 200
    listed = (await http.get("/_emulator/keys", headers=ADMIN)).json()["principals"]
    assert listed == emu.principals()
    assert {p["ownerId"]: p["keys"] for p in listed} == {
        owner_id_for_key(USER_KEY): 1,
        owner_id_for_key(OTHER_KEY): 1,
        owner_id_for_key(ADMIN_KEY): 1,
    }


@pytest.mark.parametrize(
    ("call", "body", "status", "code"),
    [
        ("add", {"key": NEW_KEY, "sameAs": "unknown-SENTINEL-key"}, 400, "INVALID_ARGUMENT"),
        ("add", {"key": OTHER_KEY, "sameAs": USER_KEY}, 409, "ALREADY_EXISTS"),
        ("add", {"key": NEW_KEY, "sameAs": USER_KEY, "admin": True}, 400, "INVALID_ARGUMENT"),
        ("add", {"key": NEW_KEY, "admin": "yes"}, 400, "INVALID_ARGUMENT"),
        ("add", {"sameAs": USER_KEY}, 400, "INVALID_ARGUMENT"),
        ("add", {"key": NEW_KEY, NEW_KEY: "a key as a field name"}, 400, "INVALID_ARGUMENT"),
        ("add", [NEW_KEY], 400, "INVALID_ARGUMENT"),
        ("add", {"key": "bad key\n" + NEW_KEY}, 400, "INVALID_ARGUMENT"),
        ("revoke", {"key": "unknown-SENTINEL-key"}, 404, "NOT_FOUND"),
        ("revoke", {"key": ADMIN_KEY}, 409, "FAILED_PRECONDITION"),
        ("revoke", {"key": USER_KEY, "sameAs": OTHER_KEY}, 400, "INVALID_ARGUMENT"),
    ],
)
async def test_refusals_change_nothing_and_name_no_key(
    http: httpx.AsyncClient, emu: Emulator, call: str, body: object, status: int, code: str
) -> None:
    before = emu.principals()
    resp = await (add if call == "add" else revoke)(http, body)
    assert resp.status_code == status
    assert resp.json()["error"] == code
    assert emu.principals() == before
    for key in (NEW_KEY, USER_KEY, OTHER_KEY, ADMIN_KEY, "unknown-SENTINEL-key", "SENTINEL"):
        assert key not in resp.text


async def test_a_malformed_body_is_refused(http: httpx.AsyncClient) -> None:
    resp = await http.post("/_emulator/keys", content=b"key=" + NEW_KEY.encode(), headers=ADMIN)
    assert resp.status_code == 400 and NEW_KEY not in resp.text


@pytest.fixture
async def logged_emu() -> AsyncIterator[Emulator]:
    emulator = Emulator(api_keys=[USER_KEY], admin_keys=[ADMIN_KEY], access_log=True)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


async def test_keys_stay_out_of_the_access_log_and_the_stats(
    logged_emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=logged_emu.base_url or "", timeout=10) as http:
        assert (await add(http, {"key": NEW_KEY, "sameAs": USER_KEY})).status_code == 200
        assert (await add(http, {"key": NEW_KEY, "sameAs": "unknown-SENTINEL-key"})).status_code == 400
        assert (await http.post("/v1/llms", json=llm_body(), headers=headers(NEW_KEY))).status_code == 201
        assert (await revoke(http, {"key": NEW_KEY})).status_code == 200
        assert (await revoke(http, {"key": NEW_KEY})).status_code == 404
        assert (await http.get("/v1/llms", headers=headers(NEW_KEY))).status_code == 401
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("/_emulator/keys" in line for line in access), "the access log was captured"
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(logged_emu.stats())
    assert "SENTINEL" not in text


# ------------------------------------------------------------- the emulator as a process (e2e's EmulatorProcess)


def test_emulator_process_rotates_keys_over_http_and_logs_none(tmp_path: Path) -> None:
    emu = EmulatorProcess(tmp_path / "emulator.log", api_key="proc-user-key", admin_key="proc-admin-key").start()
    try:
        owner = emu.owner_id("proc-user-key")
        assert emu.add_key(NEW_KEY, same_as="proc-user-key") == owner
        with httpx.Client(base_url=emu.base_url, timeout=10) as http:
            made = http.post("/v1/llms", json=llm_body(), headers=headers(NEW_KEY))
            assert made.status_code == 201 and made.json()["llm"]["ownerId"] == owner
            emu.revoke_key("proc-user-key")
            assert http.get("/v1/llms", headers=headers("proc-user-key")).status_code == 401
            assert http.get("/v1/llms", headers=headers(NEW_KEY)).status_code == 200
        assert emu.add_key("proc-team-b-key") == emu.owner_id("proc-team-b-key") != owner
        assert {p["ownerId"]: p["keys"] for p in emu.principals()} == {
            owner: 1,
            emu.owner_id("proc-team-b-key"): 1,
            emu.owner_id("proc-admin-key"): 1,
        }
        with pytest.raises(Exception) as exc:  # urllib's HTTPError: the 404 of an unknown key
            emu.revoke_key("unknown-SENTINEL-key")
        assert "404" in str(exc.value) and "SENTINEL" not in str(exc.value)
    finally:
        emu.stop()
    assert emu.proc is not None and emu.proc.returncode is not None
    log = emu.log_path.read_text()
    assert '"POST /_emulator/keys HTTP/1.1" 200' in log and '"DELETE /_emulator/keys HTTP/1.1" 200' in log
    assert "SENTINEL" not in log and "proc-user-key" not in log


async def test_a_key_revoked_while_its_request_waits_out_latency_is_refused(api: Api, emu: Emulator) -> None:
    """The key is checked when the handler runs, after injected latency: a rotation lands between the two."""
    emu.add_key(NEW_KEY, same_as=USER_KEY)
    emu.set_faults(latency_ms=400)
    pending = asyncio.ensure_future(api.list(key=NEW_KEY))
    await asyncio.sleep(0.15)
    assert emu.stats()["inFlight"]["GET /v1/llms"] == 1, "the request arrived before the revocation"
    emu.revoke_key(NEW_KEY)
    resp = await pending
    assert resp.status_code == 401
    assert (await api.list(key=USER_KEY)).status_code == 200, "the principal's other key still works"
