"""The /v1/llms REST contract over real HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from goodmem_emulator import Emulator, credentials_fingerprint, owner_id_for_key

from .helpers import ADMIN_KEY, OTHER_KEY, SECRET, USER_KEY, Api, api_key_credentials, headers, llm_body

pytestmark = pytest.mark.integration

ALL_CAPS = {
    "supportsChat": True,
    "supportsCompletion": True,
    "supportsFunctionCalling": False,
    "supportsSystemMessages": True,
    "supportsStreaming": False,
    "supportsSamplingParameters": True,
}
RESPONSE_KEYS = {
    "llmId",
    "displayName",
    "providerType",
    "endpointUrl",
    "apiPath",
    "modelIdentifier",
    "supportedModalities",
    "labels",
    "capabilities",
    "ownerId",
    "createdAt",
    "updatedAt",
    "createdById",
    "updatedById",
}


def assert_error(resp: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert isinstance(body.get("error"), str) and body["error"]
    if field is not None:
        assert body["field"] == field
    return body


# ---------------------------------------------------------------- transport


async def test_healthz(http: httpx.AsyncClient) -> None:
    resp = await http.get("/healthz")
    assert resp.status_code == 200 and resp.json() == {"status": "ok"}


@pytest.mark.parametrize("key", [None, "", "not-a-key"])
async def test_missing_or_unknown_key_is_401_on_every_route(api: Api, key: str | None) -> None:
    llm_id = str(uuid.uuid4())
    for resp in (
        await api.create(llm_body(), key),
        await api.list(key=key),
        await api.get(llm_id, key),
        await api.update(llm_id, {"description": "x"}, key),
        await api.delete(llm_id, key),
    ):
        assert_error(resp, 401)


async def test_unknown_route_and_method_answer_json(api: Api, http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/v1/nothing", headers=headers()), 404)
    assert_error(await http.patch(f"/v1/llms/{uuid.uuid4()}", headers=headers(), json={}), 405)


# ---------------------------------------------------------------- create


async def test_create_minimal_applies_defaults_and_reports_inference(api: Api, emu: Emulator) -> None:
    resp = await api.create(llm_body())
    assert resp.status_code == 201
    body = resp.json()
    llm = body["llm"]
    assert resp.headers["Location"] == f"/v1/llms/{llm['llmId']}"
    assert set(llm) == RESPONSE_KEYS
    uuid.UUID(llm["llmId"])
    assert llm["apiPath"] == "/chat/completions"
    assert llm["supportedModalities"] == ["TEXT"]
    assert llm["labels"] == {}
    assert llm["ownerId"] == llm["createdById"] == llm["updatedById"] == owner_id_for_key(USER_KEY)
    assert llm["createdAt"] == llm["updatedAt"] and llm["createdAt"] > 1_600_000_000_000  # ms
    assert llm["capabilities"] == {
        "supportsChat": True,
        "supportsCompletion": False,
        "supportsFunctionCalling": True,
        "supportsSystemMessages": True,
        "supportsStreaming": True,
        "supportsSamplingParameters": True,
    }
    assert [s["code"] for s in body["statuses"]] == ["LLM_CAPABILITY_INFERRED"]
    assert all(isinstance(s["message"], str) for s in body["statuses"])


async def test_create_full_echoes_everything_but_credentials(api: Api) -> None:
    body = llm_body(
        description="desc",
        apiPath="/v1/chat",
        supportedModalities=["TEXT", "IMAGE"],
        credentials=api_key_credentials(headerName="Authorization", prefix="Bearer "),
        labels={"env": "prod"},
        version="1.2",
        monitoringEndpoint="https://mon.example/x",
        capabilities=ALL_CAPS,
        defaultSamplingParams={
            "maxTokens": 10,
            "temperature": 0.5,
            "topP": 0.9,
            "topK": 5,
            "frequencyPenalty": -1.5,
            "presencePenalty": 1.5,
            "stopSequences": ["END"],
        },
        maxContextLength=32768,
        clientConfig={"timeout": 5, "nested": {"a": [1, 2]}},
    )
    resp = await api.create(body)
    assert resp.status_code == 201
    out = resp.json()
    assert out["statuses"] == []  # nothing was inferred
    llm = out["llm"]
    assert "credentials" not in llm
    for key, value in body.items():
        if key != "credentials":
            assert llm[key] == value, key
    assert SECRET not in resp.text


async def test_create_keeps_endpoint_url_verbatim(api: Api) -> None:
    llm = await api.created(llm_body(endpointUrl="HTTPS://API.OpenAI.com:443/v1/"))
    assert llm["endpointUrl"] == "HTTPS://API.OpenAI.com:443/v1/"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"displayName": None}, "displayName"),
        ({"displayName": "x" * 256}, "displayName"),
        ({"providerType": None}, "providerType"),
        ({"providerType": "ANTHROPIC"}, "providerType"),
        ({"endpointUrl": None}, "endpointUrl"),
        ({"modelIdentifier": None}, "modelIdentifier"),
        ({"labels": {f"k{i}": "v" for i in range(21)}}, "labels"),
        ({"credentials": api_key_credentials() | {"labels": {f"k{i}": "v" for i in range(21)}}}, "credentials.labels"),
        ({"defaultSamplingParams": {"maxTokens": 0}}, "defaultSamplingParams.maxTokens"),
        ({"defaultSamplingParams": {"temperature": 2.5}}, "defaultSamplingParams.temperature"),
        ({"defaultSamplingParams": {"topP": 1.5}}, "defaultSamplingParams.topP"),
        ({"defaultSamplingParams": {"topK": 0}}, "defaultSamplingParams.topK"),
        ({"defaultSamplingParams": {"frequencyPenalty": -3}}, "defaultSamplingParams.frequencyPenalty"),
        ({"defaultSamplingParams": {"presencePenalty": 3}}, "defaultSamplingParams.presencePenalty"),
        ({"defaultSamplingParams": {"stopSequences": ["s"] * 11}}, "defaultSamplingParams.stopSequences"),
        ({"defaultSamplingParams": {"stopSequences": ["s" * 101]}}, "defaultSamplingParams.stopSequences[0]"),
        ({"maxContextLength": 2**31}, "maxContextLength"),
        ({"llmId": "123"}, "llmId"),
        ({"ownerId": "me"}, "ownerId"),
        ({"credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {}}}, "credentials.apiKey"),
        (
            {
                "credentials": {
                    "kind": "CREDENTIAL_KIND_API_KEY",
                    "apiKey": {"inlineSecret": SECRET, "secretRef": {"uri": "vault://x"}},
                }
            },
            "credentials.apiKey",
        ),
        (
            {"credentials": {"kind": "CREDENTIAL_KIND_GCP_ADC", "apiKey": {"inlineSecret": SECRET}}},
            "credentials.apiKey",
        ),
        ({"credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "gcpAdc": {"scopes": []}}}, "credentials.gcpAdc"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
async def test_create_validation_is_400_naming_the_field(
    api: Api, emu: Emulator, patch: dict[str, Any], field: str
) -> None:
    resp = await api.create(llm_body() | patch)
    body = assert_error(resp, 400, field)
    assert body["error"] == "INVALID_ARGUMENT"
    assert SECRET not in resp.text  # errors never echo request data
    assert emu.records() == []


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1]", b'{"displayName": NaN}', b"\xff\xfe"])
async def test_create_with_unparseable_body_is_400(http: httpx.AsyncClient, raw: bytes) -> None:
    resp = await http.post("/v1/llms", content=raw, headers=headers() | {"content-type": "application/json"})
    assert_error(resp, 400, "body")


async def test_create_owner_id_requires_admin(api: Api, emu: Emulator) -> None:
    other = owner_id_for_key(OTHER_KEY)
    assert_error(await api.create(llm_body(ownerId=other)), 403)
    assert_error(await api.create(llm_body(ownerId=owner_id_for_key(USER_KEY))), 403)
    llm = await api.created(llm_body(ownerId=other), key=ADMIN_KEY)
    assert llm["ownerId"] == other and llm["createdById"] == owner_id_for_key(ADMIN_KEY)
    # ...and the owner can now see and manage it.
    assert (await api.get(llm["llmId"], OTHER_KEY)).status_code == 200


async def test_client_llm_id_is_used_and_second_create_is_409(api: Api, emu: Emulator) -> None:
    llm_id = str(uuid.uuid4())
    llm = await api.created(llm_body(llmId=llm_id.upper()))
    assert llm["llmId"] == llm_id
    resp = await api.create(llm_body(llmId=llm_id, modelIdentifier="something-else"))
    body = assert_error(resp, 409)
    assert body["error"] == "ALREADY_EXISTS"
    assert body["existingLlmId"] == llm_id
    assert isinstance(body["message"], str)
    # Another owner's create with the same id also conflicts.
    assert (await api.create(llm_body(llmId=llm_id), OTHER_KEY)).json()["existingLlmId"] == llm_id
    assert len(emu.records()) == 1


async def test_opaque_conflict_bodies_name_nothing() -> None:
    emu = Emulator(api_keys=[USER_KEY], admin_keys=[ADMIN_KEY], conflict_body="opaque")
    async with emu, httpx.AsyncClient(base_url=emu.base_url, timeout=10) as http:
        api = Api(http)
        llm_id = str(uuid.uuid4())
        first = await api.created(llm_body(llmId=llm_id))
        other = await api.created(llm_body(modelIdentifier="other"))
        answers = [
            await api.create(llm_body(llmId=llm_id, modelIdentifier="x")),  # id in use
            await api.create(llm_body()),  # duplicate identity
            await api.update(other["llmId"], {"modelIdentifier": first["modelIdentifier"]}),  # update into a duplicate
        ]
        for resp in answers:
            assert resp.status_code == 409
            assert resp.json() == {"error": "ALREADY_EXISTS", "message": "already exists"}
            assert first["llmId"] not in resp.text and "LLM_ID_IN_USE" not in resp.text
        assert len(emu.records()) == 2


def test_conflict_body_must_be_named_or_opaque() -> None:
    with pytest.raises(ValueError, match="conflict_body"):
        Emulator(api_keys=[USER_KEY], conflict_body="silent")


@pytest.mark.parametrize(
    "variant",
    [
        {"endpointUrl": "https://API.OPENAI.COM/v1"},
        {"endpointUrl": "https://api.openai.com:443/v1/"},
        {"endpointUrl": "HTTPS://api.openai.com/v1//"},
        {"displayName": "another name", "labels": {"a": "b"}, "description": "x"},
        {"apiPath": "/chat/completions"},
        {"apiPath": ""},
        {"capabilities": ALL_CAPS, "maxContextLength": 5},
    ],
)
async def test_duplicate_identity_is_409_naming_the_existing(api: Api, emu: Emulator, variant: dict[str, Any]) -> None:
    first = await api.created(llm_body(credentials=api_key_credentials()))
    resp = await api.create(llm_body(credentials=api_key_credentials()) | variant)
    body = assert_error(resp, 409)
    assert body["error"] == "ALREADY_EXISTS" and body["existingLlmId"] == first["llmId"]
    assert len(emu.records()) == 1


@pytest.mark.parametrize(
    "variant",
    [
        {"endpointUrl": "http://api.openai.com/v1"},
        {"endpointUrl": "https://api.openai.com:8443/v1"},
        {"endpointUrl": "https://api.openai.com/V1"},
        {"apiPath": "/responses"},
        {"modelIdentifier": "gpt-4o"},
        {"providerType": "OPEN_ROUTER"},
        {"credentials": api_key_credentials("different")},
        {"credentials": api_key_credentials(prefix="Bearer ")},
        {"credentials": {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"secretRef": {"uri": "vault://x"}}}},
        {"credentials": None},
    ],
)
async def test_any_identity_difference_is_a_new_llm(api: Api, variant: dict[str, Any]) -> None:
    first = await api.created(llm_body(credentials=api_key_credentials()))
    second = await api.created(llm_body(credentials=api_key_credentials()) | variant)
    assert second["llmId"] != first["llmId"]


async def test_duplicates_are_per_owner(api: Api) -> None:
    a = await api.created(llm_body())
    b = await api.created(llm_body(), key=OTHER_KEY)
    assert a["ownerId"] != b["ownerId"]
    # An admin creating for the user hits the user's duplicate.
    resp = await api.create(llm_body(ownerId=a["ownerId"]), ADMIN_KEY)
    assert assert_error(resp, 409)["existingLlmId"] == a["llmId"]


# ---------------------------------------------------------------- get


async def test_get_own_other_and_admin(api: Api) -> None:
    llm = await api.created(llm_body(credentials=api_key_credentials()))
    resp = await api.get(llm["llmId"])
    assert resp.status_code == 200 and resp.json() == llm
    assert "credentials" not in resp.json()
    assert_error(await api.get(llm["llmId"], OTHER_KEY), 403)
    assert (await api.get(llm["llmId"], ADMIN_KEY)).json() == llm
    assert_error(await api.get(str(uuid.uuid4())), 404)
    assert_error(await api.get("not-a-uuid"), 400, "id")


@pytest.mark.parametrize("param", ["includeCredentials", "include_credentials"])
async def test_include_credentials_needs_admin(api: Api, param: str) -> None:
    creds = api_key_credentials(headerName="X-Key")
    llm = await api.created(llm_body(credentials=creds))
    assert_error(await api.get(llm["llmId"], USER_KEY, **{param: "true"}), 403)
    resp = await api.get(llm["llmId"], ADMIN_KEY, **{param: "true"})
    assert resp.status_code == 200
    assert resp.json()["credentials"] == creds
    resp = await api.get(llm["llmId"], ADMIN_KEY, **{param: "false"})
    assert "credentials" not in resp.json()
    assert_error(await api.get(llm["llmId"], ADMIN_KEY, **{param: "maybe"}), 400, "includeCredentials")


async def test_include_credentials_without_stored_credentials_omits_them(api: Api) -> None:
    llm = await api.created()
    resp = await api.get(llm["llmId"], ADMIN_KEY, includeCredentials="true")
    assert resp.status_code == 200 and "credentials" not in resp.json()


async def test_get_rejects_unknown_query_parameter(api: Api) -> None:
    llm = await api.created()
    assert_error(await api.get(llm["llmId"], verbose="1"), 400, "verbose")


# ---------------------------------------------------------------- list


async def test_list_filters_and_visibility(api: Api, http: httpx.AsyncClient) -> None:
    a = await api.created(llm_body(labels={"env": "prod", "team": "ai"}))
    b = await api.created(llm_body(modelIdentifier="m-b", providerType="VLLM", labels={"env": "prod"}))
    c = await api.created(llm_body(modelIdentifier="m-c", labels={"env": "dev", "team": "ai"}))
    o = await api.created(llm_body(labels={"env": "prod"}), key=OTHER_KEY)

    async def ids(params: Any = None, key: str = USER_KEY) -> list[str]:
        resp = await api.list(params, key)
        assert resp.status_code == 200, resp.text
        assert set(resp.json()) == {"llms"}
        return [x["llmId"] for x in resp.json()["llms"]]

    assert await ids() == [a["llmId"], b["llmId"], c["llmId"]]
    assert await ids(key=OTHER_KEY) == [o["llmId"]]
    assert sorted(await ids(key=ADMIN_KEY)) == sorted(x["llmId"] for x in (a, b, c, o))
    assert await ids({"label.env": "prod"}) == [a["llmId"], b["llmId"]]
    assert await ids({"label[env]": "prod"}) == [a["llmId"], b["llmId"]]
    assert await ids([("label.env", "prod"), ("label[team]", "ai")]) == [a["llmId"]]
    assert await ids([("label.env", "prod"), ("label.env", "dev")]) == []
    assert await ids({"label.missing": ""}) == []
    assert await ids({"providerType": "VLLM"}) == [b["llmId"]]
    assert await ids({"provider_type": "OPENAI"}) == [a["llmId"], c["llmId"]]
    # ownerId: admin filters by it; for a non-admin another owner's id is ignored.
    assert await ids({"ownerId": o["ownerId"]}, ADMIN_KEY) == [o["llmId"]]
    assert await ids({"owner_id": a["ownerId"]}, ADMIN_KEY) == [a["llmId"], b["llmId"], c["llmId"]]
    assert await ids({"ownerId": o["ownerId"]}) == [a["llmId"], b["llmId"], c["llmId"]]
    listed = (await api.list()).json()["llms"]
    assert listed[0] == a and all("credentials" not in x for x in listed)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"providerType": "openai"}, "providerType"),
        ({"provider_type": "NOPE"}, "providerType"),
        ({"ownerId": "nope"}, "ownerId"),
        ({"label.": "x"}, "label."),
        ({"includeCredentials": "true"}, "includeCredentials"),
        ({"color": "red"}, "color"),
    ],
)
async def test_list_invalid_filters_are_400(api: Api, params: dict[str, str], field: str) -> None:
    assert_error(await api.list(params), 400, field)


# ---------------------------------------------------------------- update


async def test_update_changes_only_present_fields(api: Api) -> None:
    llm = await api.created(
        llm_body(
            description="d",
            labels={"a": "1", "b": "2"},
            clientConfig={"x": 1, "y": 2},
            supportedModalities=["TEXT", "IMAGE"],
            capabilities=ALL_CAPS,
            version="1",
            defaultSamplingParams={"maxTokens": 5, "temperature": 1.0},
        )
    )
    resp = await api.update(llm["llmId"], {"displayName": "renamed"})
    assert resp.status_code == 200
    out = resp.json()
    assert out["displayName"] == "renamed"
    assert {k: v for k, v in out.items() if k not in ("displayName", "updatedAt")} == {
        k: v for k, v in llm.items() if k not in ("displayName", "updatedAt")
    }
    assert out["updatedAt"] > llm["updatedAt"]
    assert (await api.get(llm["llmId"])).json() == out


async def test_update_replace_semantics(api: Api) -> None:
    llm = await api.created(
        llm_body(
            labels={"a": "1", "b": "2"},
            clientConfig={"x": 1, "y": 2},
            supportedModalities=["TEXT", "IMAGE"],
            defaultSamplingParams={"maxTokens": 5, "temperature": 1.0},
        )
    )
    caps = {k: not v for k, v in ALL_CAPS.items()}
    out = (
        await api.update(
            llm["llmId"],
            {
                "mergeLabels": {"b": "3", "c": "4"},
                "clientConfig": {"z": 9},
                "supportedModalities": [],
                "capabilities": caps,
                "defaultSamplingParams": {"topK": 3},
                "description": "new",
                "endpointUrl": "http://vllm:8000/v1",
                "apiPath": "/v1/chat",
                "modelIdentifier": "llama",
                "version": "2",
                "monitoringEndpoint": "https://m",
                "maxContextLength": 4096,
            },
        )
    ).json()
    assert out["labels"] == {"a": "1", "b": "3", "c": "4"}
    assert out["clientConfig"] == {"z": 9}
    assert out["supportedModalities"] == ["TEXT", "IMAGE"]
    assert out["capabilities"] == caps
    assert out["defaultSamplingParams"] == {"topK": 3}
    assert (out["description"], out["endpointUrl"], out["apiPath"], out["modelIdentifier"]) == (
        "new",
        "http://vllm:8000/v1",
        "/v1/chat",
        "llama",
    )
    assert (out["version"], out["monitoringEndpoint"], out["maxContextLength"]) == ("2", "https://m", 4096)
    assert out["providerType"] == "OPENAI"
    out = (await api.update(llm["llmId"], {"replaceLabels": {"only": "x"}, "supportedModalities": ["VIDEO"]})).json()
    assert out["labels"] == {"only": "x"} and out["supportedModalities"] == ["VIDEO"]
    out = (await api.update(llm["llmId"], {"replaceLabels": {}})).json()
    assert out["labels"] == {}


async def test_update_credentials_replace_and_omission_keeps(api: Api, emu: Emulator) -> None:
    llm = await api.created(llm_body(credentials=api_key_credentials()))
    await api.update(llm["llmId"], {"description": "x"})
    assert emu.records()[0]["credentialsFingerprint"] == credentials_fingerprint(api_key_credentials())
    rotated = {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"secretRef": {"uri": "vault://llm/key"}}}
    resp = await api.update(llm["llmId"], {"credentials": rotated})
    assert resp.status_code == 200 and "credentials" not in resp.json()
    assert (await api.get(llm["llmId"], ADMIN_KEY, includeCredentials="true")).json()["credentials"] == rotated
    assert emu.records()[0]["credentialsFingerprint"] == credentials_fingerprint(rotated)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"providerType": "VLLM"}, "providerType"),
        ({"providerType": "OPENAI"}, "providerType"),
        ({"replaceLabels": {"a": "b"}, "mergeLabels": {"c": "d"}}, "mergeLabels"),
        ({"displayName": "x" * 256}, "displayName"),
        ({"modelIdentifier": ""}, "modelIdentifier"),
        ({"capabilities": {"supportsChat": True}}, "capabilities.supportsCompletion"),
        ({"labels": {"a": "b"}}, "labels"),
        ({"ownerId": "550e8400-e29b-41d4-a716-446655440000"}, "ownerId"),
        ({"bogus": True}, "bogus"),
        ({"credentials": {}}, "credentials"),
        ({"defaultSamplingParams": {"temperature": 3}}, "defaultSamplingParams.temperature"),
        ({"mergeLabels": {f"k{i}": "v" for i in range(21)}}, "mergeLabels"),
        ([], "body"),
    ],
)
async def test_update_validation_is_400_and_changes_nothing(api: Api, body: Any, field: str) -> None:
    llm = await api.created()
    assert_error(await api.update(llm["llmId"], body), 400, field)
    assert (await api.get(llm["llmId"])).json() == llm


async def test_update_status_codes(api: Api) -> None:
    llm = await api.created()
    assert_error(await api.update("nope", {"description": "x"}), 400, "id")
    assert_error(await api.update(str(uuid.uuid4()), {"description": "x"}), 404)
    assert_error(await api.update(llm["llmId"], {"description": "x"}, OTHER_KEY), 403)
    resp = await api.update(llm["llmId"], {"description": "by admin"}, ADMIN_KEY)
    assert resp.status_code == 200
    assert resp.json()["updatedById"] == owner_id_for_key(ADMIN_KEY)
    assert resp.json()["ownerId"] == owner_id_for_key(USER_KEY)


async def test_empty_update_is_a_no_op(api: Api) -> None:
    llm = await api.created()
    resp = await api.update(llm["llmId"], {})
    assert resp.status_code == 200 and resp.json() == llm


async def test_update_into_duplicate_identity_is_409(api: Api) -> None:
    first = await api.created(llm_body(modelIdentifier="m1"))
    second = await api.created(llm_body(modelIdentifier="m2"))
    body = assert_error(await api.update(second["llmId"], {"modelIdentifier": "m1"}), 409)
    assert body["error"] == "ALREADY_EXISTS" and body["existingLlmId"] == first["llmId"]
    assert (await api.get(second["llmId"])).json()["modelIdentifier"] == "m2"


# ---------------------------------------------------------------- delete


async def test_delete(api: Api, emu: Emulator) -> None:
    llm = await api.created(llm_body(credentials=api_key_credentials()))
    assert_error(await api.delete("bad-id"), 400, "id")
    assert_error(await api.delete(llm["llmId"], OTHER_KEY), 403)
    resp = await api.delete(llm["llmId"])
    assert resp.status_code == 204 and resp.content == b""
    assert_error(await api.delete(llm["llmId"]), 404)
    assert_error(await api.get(llm["llmId"]), 404)
    assert emu.records() == []
    # The identity is free again.
    assert (await api.create(llm_body(credentials=api_key_credentials()))).status_code == 201


async def test_admin_deletes_any(api: Api) -> None:
    llm = await api.created()
    assert (await api.delete(llm["llmId"], ADMIN_KEY)).status_code == 204
    assert (await api.list()).json() == {"llms": []}
