"""Async client for the GoodMem LLM registry (`/v1/llms`).

It has exactly the registry's five verbs and hides HTTP: callers get plain
dicts (camelCase, as the registry speaks) or a typed `RegistryError`.  Error
messages are built from the status, the registry's reason and a redacted,
truncated body: any secret the caller names (and the client's own API key) is
cut out before the text can reach a log, an event or a condition.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

import httpx

from goodmem_operator.fairness import FairLimiter

REDACTED = "<redacted>"
_BODY_LIMIT = 300


class RegistryError(Exception):
    """A failed registry call.  `retryable` tells whether trying again can help."""

    retryable = True
    reason = "RegistryError"

    def __init__(self, message: str, *, status: int | None = None, registry_reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.registry_reason = registry_reason


class BadRequest(RegistryError):
    retryable = False
    reason = "InvalidSpec"


class Unauthorized(RegistryError):
    reason = "Unauthorized"


class Forbidden(RegistryError):
    reason = "Forbidden"


class NotFound(RegistryError):
    retryable = False
    reason = "NotFound"


class Conflict(RegistryError):
    """409: the id is in use, or another LLM has the same identity."""

    retryable = False
    reason = "AlreadyExists"

    def __init__(self, message: str, *, existing_id: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.existing_id = existing_id


class RateLimited(RegistryError):
    reason = "RateLimited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(RegistryError):
    reason = "RegistryUnavailable"


class Unreachable(RegistryError):
    """Network failure or timeout: the registry did not answer."""

    reason = "RegistryUnavailable"


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _secrets_in(body: Any) -> list[str]:
    """Every inline secret of a request body (credentials.apiKey.inlineSecret, wherever it stands)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "inlineSecret" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(body)
    return found


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class RateLimiter:
    """At most `concurrency` requests in flight and `rate` requests per second (token bucket)."""

    def __init__(self, concurrency: int, rate: float, burst: int | None = None) -> None:
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._rate = max(0.001, rate)
        self._capacity = float(burst if burst is not None else max(1, int(rate)))
        self._tokens = self._capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def _take(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)

    async def __aenter__(self) -> None:
        await self._sem.acquire()
        try:
            await self._take()
        except BaseException:
            self._sem.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._sem.release()


class RegistryClient:
    """The registry's five verbs over one reused HTTP connection pool."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        concurrency: int = 16,
        rate: float = 100.0,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: Any = None,
    ) -> None:
        self._api_key = api_key
        self._limiter = FairLimiter(concurrency, rate)  # per-namespace queues, served in turn (fairness.py)
        self._observer = observer  # callable(verb, status, seconds) for metrics
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"x-api-key": api_key, "accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency)),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the five verbs -------------------------------------------------------------------------

    async def create_llm(self, body: dict[str, Any]) -> dict[str, Any]:
        data = await self._call("create", "POST", "/v1/llms", json_body=body)
        return dict(data.get("llm") or {})

    async def get_llm(self, llm_id: str) -> dict[str, Any]:
        return dict(await self._call("get", "GET", f"/v1/llms/{llm_id}"))

    async def list_llms(
        self, *, provider_type: str | None = None, owner_id: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        params: dict[str, str] = {}
        if provider_type:
            params["providerType"] = provider_type
        if owner_id:
            params["ownerId"] = owner_id
        for key, value in (labels or {}).items():
            params[f"label.{key}"] = value
        data = await self._call("list", "GET", "/v1/llms", params=params)
        return list(data.get("llms") or [])

    async def update_llm(self, llm_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call("update", "PUT", f"/v1/llms/{llm_id}", json_body=body))

    async def delete_llm(self, llm_id: str) -> None:
        await self._call("delete", "DELETE", f"/v1/llms/{llm_id}")

    # -- transport ------------------------------------------------------------------------------

    async def _call(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        secrets = [self._api_key, *_secrets_in(json_body)]
        started = time.monotonic()
        status_label = "error"
        try:
            async with self._limiter.slot():
                try:
                    response = await self._http.request(method, path, json=json_body, params=params)
                except httpx.TimeoutException as exc:
                    status_label = "timeout"
                    raise Unreachable(f"{method} {path}: registry timed out ({type(exc).__name__})") from None
                except httpx.HTTPError as exc:
                    status_label = "network"
                    raise Unreachable(
                        f"{method} {path}: registry unreachable ({type(exc).__name__}: {redact(str(exc), secrets)})"
                    ) from None
            status_label = str(response.status_code)
            if response.status_code >= 400:
                raise self._error(method, path, response, secrets)
            if response.status_code == 204 or not response.content:
                return {}
            try:
                return response.json()
            except ValueError:
                raise ServerError(f"{method} {path}: registry answered {response.status_code} with a body that is not JSON",
                                  status=response.status_code) from None
        finally:
            if self._observer is not None:
                self._observer(verb, status_label, time.monotonic() - started)

    @staticmethod
    def _error(method: str, path: str, response: httpx.Response, secrets: list[str]) -> RegistryError:
        status = response.status_code
        text = response.text
        reason = ""
        existing_id = None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            parts = [str(data[k]) for k in ("error", "code", "message", "field") if data.get(k)]
            reason = "; ".join(parts)
            for key in ("existingLlmId", "existingId", "llmId"):
                if isinstance(data.get(key), str):
                    existing_id = data[key]
                    break
        if not reason:
            reason = text
        reason = redact(reason, secrets)
        if len(reason) > _BODY_LIMIT:
            reason = reason[:_BODY_LIMIT] + "..."
        message = f"{method} {path}: registry answered {status}" + (f": {reason}" if reason else "")
        kw: dict[str, Any] = {"status": status, "registry_reason": reason}
        if status == 400:
            return BadRequest(message, **kw)
        if status == 401:
            return Unauthorized(message, **kw)
        if status == 403:
            return Forbidden(message, **kw)
        if status == 404:
            return NotFound(message, **kw)
        if status == 409:
            return Conflict(message, existing_id=existing_id, **kw)
        if status == 429:
            return RateLimited(message, retry_after=_retry_after(response.headers.get("retry-after")), **kw)
        if status >= 500:
            return ServerError(message, **kw)
        if status != 408:
            # Any other 4xx (413 payload too large, 422, ...) says the request itself is wrong:
            # sending it again cannot help, so it is permanent like a 400.
            return BadRequest(message, **kw)
        return RegistryError(message, **kw)
