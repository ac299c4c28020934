"""Shared constants and REST helpers for the emulator tests."""

from __future__ import annotations

import copy
from typing import Any

import httpx

USER_KEY = "user-key-1"
OTHER_KEY = "user-key-2"
ADMIN_KEY = "admin-key-1"
SECRET = "sk-emulator-test-SECRET-0123456789"

MINIMAL_LLM: dict[str, Any] = {
    "displayName": "GPT-4o mini",
    "providerType": "OPENAI",
    "endpointUrl": "https://api.openai.com/v1",
    "modelIdentifier": "gpt-4o-mini",
}


def llm_body(**overrides: Any) -> dict[str, Any]:
    """A valid create body; ``None`` values delete the key."""
    body = copy.deepcopy(MINIMAL_LLM)
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def api_key_credentials(secret: str = SECRET, **extra: Any) -> dict[str, Any]:
    return {"kind": "CREDENTIAL_KIND_API_KEY", "apiKey": {"inlineSecret": secret, **extra}}


def headers(key: str | None = USER_KEY) -> dict[str, str]:
    return {} if key is None else {"x-api-key": key}


class Api:
    """Thin helpers over httpx for the emulator's REST API."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def create(self, body: dict[str, Any], key: str | None = USER_KEY) -> httpx.Response:
        return await self.http.post("/v1/llms", json=body, headers=headers(key))

    async def created(self, body: dict[str, Any] | None = None, key: str = USER_KEY) -> dict[str, Any]:
        resp = await self.create(body if body is not None else llm_body(), key)
        assert resp.status_code == 201, resp.text
        return resp.json()["llm"]

    async def get(self, llm_id: str, key: str | None = USER_KEY, **params: Any) -> httpx.Response:
        return await self.http.get(f"/v1/llms/{llm_id}", params=params, headers=headers(key))

    async def list(self, params: Any = None, key: str | None = USER_KEY) -> httpx.Response:
        return await self.http.get("/v1/llms", params=params, headers=headers(key))

    async def update(self, llm_id: str, body: Any, key: str | None = USER_KEY) -> httpx.Response:
        return await self.http.put(f"/v1/llms/{llm_id}", json=body, headers=headers(key))

    async def delete(self, llm_id: str, key: str | None = USER_KEY) -> httpx.Response:
        return await self.http.delete(f"/v1/llms/{llm_id}", headers=headers(key))
