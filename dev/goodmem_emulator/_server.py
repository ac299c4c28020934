"""The aiohttp layer: routing, authentication, faults, stats and test hooks."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from ._faults import Faults
from ._keys import KeyRing
from ._stats import Stats
from ._store import (
    AlreadyExists,
    LLMStore,
    PermissionDenied,
    Principal,
    StoreError,
    now_ms,
)
from ._validation import (
    ValidationError,
    parse_get_query,
    parse_list_query,
    parse_uuid,
    redact_secrets,
    validate_create_request,
    validate_update_request,
)

log = logging.getLogger("goodmem_emulator")
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'
_MUTATING = frozenset({"POST", "PUT", "DELETE"})
CONFLICT_BODIES = ("named", "opaque")


class ApiError(Exception):
    """An error answer; rendered as ``{"error": code, "message": ..., **extra}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}


def _as_api_error(exc: BaseException, *, conflict_body: str = "named") -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ValidationError):
        return ApiError(400, "INVALID_ARGUMENT", f"{exc.field}: {exc.message}", extra={"field": exc.field})
    if isinstance(exc, AlreadyExists) and conflict_body == "opaque":
        # What the docs promise: a 409 ALREADY_EXISTS, naming neither the entry nor which rule it broke.
        return ApiError(409, exc.code, "already exists")
    if isinstance(exc, AlreadyExists):
        return ApiError(
            409,
            exc.code,
            exc.message,
            extra={"existingLlmId": exc.existing_llm_id, "reason": exc.reason},
        )
    if isinstance(exc, StoreError):
        return ApiError(exc.status, exc.code, exc.message)
    if isinstance(exc, web.HTTPException):
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE"}.get(exc.status, "HTTP_ERROR")
        return ApiError(exc.status, code, exc.reason)
    return ApiError(500, "INTERNAL", "internal emulator error")


def _error_response(err: ApiError, *, echo_body: bytes | None = None) -> web.Response:
    payload: dict[str, Any] = {"error": err.code, "message": err.message, **err.extra}
    if echo_body is not None:
        # Deliberately unsafe: the "echoRequest" fault reflects the raw request, unredacted, in the message
        # itself (the text a client reads and may log) as well as in "requestBody".
        echoed = echo_body.decode("utf-8", errors="replace")
        payload["message"] = f"{err.message}; request body as received: {echoed}"
        payload["requestBody"] = echoed
    return web.json_response(payload, status=err.status, headers=err.headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid JSON constant {name}")


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        raise ValidationError("body", "must be valid JSON") from None


def _log_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return redact_secrets(json.loads(raw.decode("utf-8")))
    except (UnicodeDecodeError, ValueError):
        return "<unparseable>"


def _parse_id(request: web.Request) -> str:
    return parse_uuid(request.match_info["id"], "id")


class EmulatorApp:
    """Builds the aiohttp application around a store, faults and stats."""

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = (),
        admin_keys: Iterable[str] = (),
        store: LLMStore | None = None,
        faults: Faults | None = None,
        stats: Stats | None = None,
        conflict_body: str = "named",
        keys: KeyRing | None = None,
    ) -> None:
        """`keys` (which key acts as which principal) replaces `api_keys`/`admin_keys` when given."""
        if conflict_body not in CONFLICT_BODIES:
            raise ValueError(f"conflict_body must be one of {', '.join(CONFLICT_BODIES)}, not {conflict_body!r}")
        self.conflict_body = conflict_body
        self.keys = keys if keys is not None else KeyRing(api_keys, admin_keys)
        self.store = store if store is not None else LLMStore()
        self.faults = faults if faults is not None else Faults()
        self.stats = stats if stats is not None else Stats()

    # -- app -------------------------------------------------------------

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/healthz", self._healthz, allow_head=False)
        r.add_post("/v1/llms", self._create)
        r.add_get("/v1/llms", self._list, allow_head=False)
        r.add_get("/v1/llms/{id}", self._get, allow_head=False)
        r.add_put("/v1/llms/{id}", self._update)
        r.add_delete("/v1/llms/{id}", self._delete)
        r.add_get("/_emulator/stats", self._hook_stats, allow_head=False)
        r.add_post("/_emulator/stats/reset", self._hook_stats_reset)
        r.add_get("/_emulator/llms", self._hook_llms, allow_head=False)
        r.add_get("/_emulator/faults", self._hook_faults_get, allow_head=False)
        r.add_put("/_emulator/faults", self._hook_faults_put)
        r.add_delete("/_emulator/faults", self._hook_faults_delete)
        r.add_get("/_emulator/keys", self._hook_keys_get, allow_head=False)
        r.add_post("/_emulator/keys", self._hook_keys_add)
        r.add_delete("/_emulator/keys", self._hook_keys_revoke)
        return app

    # -- middleware ------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if path == "/v1" or path.startswith("/v1/"):
            return await self._v1(request, handler)
        try:
            return await handler(request)
        except Exception as exc:
            if not isinstance(exc, (ApiError, ValidationError, StoreError, web.HTTPException)):
                log.exception("unexpected error in %s %s", request.method, path)
            return _error_response(_as_api_error(exc))

    async def _v1(self, request: web.Request, handler: Any) -> web.StreamResponse:
        method = request.method
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        self.stats.started(method, route)  # the inFlight gauge: received, not yet answered
        try:
            return await self._v1_answer(request, handler, method, route)
        finally:
            self.stats.finished(method, route)

    # C901 excepted: one except clause per error the contract renders (400, 401, 403, 404, 409, 429, 5xx faults).
    async def _v1_answer(  # noqa: C901
        self, request: web.Request, handler: Any, method: str, route: str
    ) -> web.StreamResponse:
        try:
            raw = await request.read()
        except web.HTTPException as exc:  # e.g. 413
            raw = b""
            resp: web.StreamResponse = _error_response(_as_api_error(exc))
            self._record(request, route, resp.status, raw)
            return resp
        faults = self.faults.snapshot()
        echo = raw if faults.echo_request else None
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        handled = False
        try:
            if faults.rate_limit is not None:
                raise ApiError(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "rate limited (injected fault)",
                    headers={"Retry-After": faults.retry_after_header or "1"},
                )
            if faults.outage:
                raise ApiError(503, "UNAVAILABLE", "registry unavailable (injected outage)")
            if self.faults.roll_error(method):
                if faults.error_status < 400:  # a misconfigured gateway's redirect, to where the request went
                    raise ApiError(
                        faults.error_status,
                        "INJECTED_FAULT",
                        "injected redirect",
                        headers={"Location": request.path_qs},
                    )
                raise ApiError(faults.error_status, "INJECTED_FAULT", "injected error")
            handled = True
            resp = await handler(request)
        except Exception as exc:
            if not isinstance(exc, (ApiError, ValidationError, StoreError, web.HTTPException)):
                log.exception("unexpected error in %s %s", method, request.path)
            resp = _error_response(_as_api_error(exc, conflict_body=self.conflict_body), echo_body=echo)
        status: int | str = resp.status
        if handled and method in _MUTATING and self.faults.take_drop():
            # The request has been processed (committed); lose the answer.
            if request.transport is not None:
                request.transport.abort()
            status = "dropped"
        self._record(request, route, status, raw)
        return resp

    def _record(self, request: web.Request, route: str, status: int | str, raw: bytes) -> None:
        self.stats.record(
            method=request.method,
            route=route,
            path=request.path_qs,
            status=status,
            body=_log_body(raw),
            ts=now_ms(),
        )

    # -- auth ------------------------------------------------------------

    def _principal(self, request: web.Request) -> Principal:
        key = request.headers.get("x-api-key")
        if not key:
            raise ApiError(401, "UNAUTHENTICATED", "missing x-api-key header")
        principal = self.keys.principal(key)
        if principal is None:
            raise ApiError(401, "UNAUTHENTICATED", "unknown API key")
        return principal

    def _admin(self, request: web.Request) -> Principal:
        principal = self._principal(request)
        if not principal.is_admin:
            raise PermissionDenied("this endpoint requires an admin key")
        return principal

    # -- /v1 handlers ----------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _create(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        body = validate_create_request(_parse_json(await request.read()))
        llm, statuses = self.store.create(principal, body)
        return web.json_response(
            {"llm": llm, "statuses": statuses},
            status=201,
            headers={"Location": f"/v1/llms/{llm['llmId']}"},
        )

    async def _list(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        filters = parse_list_query(request.query.items())
        return web.json_response({"llms": self.store.list(principal, filters)})

    async def _get(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        llm_id = _parse_id(request)
        include = parse_get_query(request.query.items())
        return web.json_response(self.store.get(principal, llm_id, include_credentials=include))

    async def _update(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        llm_id = _parse_id(request)
        update = validate_update_request(_parse_json(await request.read()))
        return web.json_response(self.store.update(principal, llm_id, update))

    async def _delete(self, request: web.Request) -> web.Response:
        principal = self._principal(request)
        llm_id = _parse_id(request)
        self.store.delete(principal, llm_id)
        return web.Response(status=204)

    # -- /_emulator hooks --------------------------------------------------

    async def _hook_stats(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response(self.stats.snapshot())

    async def _hook_stats_reset(self, request: web.Request) -> web.Response:
        self._admin(request)
        self.stats.reset()
        return web.json_response(self.stats.snapshot())

    async def _hook_llms(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response({"llms": self.store.records()})

    async def _hook_faults_get(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response(self.faults.get())

    async def _hook_faults_put(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response(self.faults.set(_parse_json(await request.read())))

    async def _hook_faults_delete(self, request: web.Request) -> web.Response:
        self._admin(request)
        self.faults.clear()
        return web.json_response(self.faults.get())

    # Keys travel in the body only, never in the path or query: the access log prints the request line.

    async def _hook_keys_get(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response({"principals": self.keys.principals()})

    async def _hook_keys_add(self, request: web.Request) -> web.Response:
        self._admin(request)
        body = _key_body(await request.read(), allowed=("key", "sameAs", "admin"))
        admin = body.get("admin")
        if admin is not None and not isinstance(admin, bool):
            raise ValidationError("admin", "must be a boolean")
        principal = self.keys.add(body.get("key"), same_as=body.get("sameAs"), admin=admin)
        return web.json_response(self._principal_json(principal))

    async def _hook_keys_revoke(self, request: web.Request) -> web.Response:
        self._admin(request)
        body = _key_body(await request.read(), allowed=("key",))
        principal = self.keys.revoke(body.get("key"))
        return web.json_response(self._principal_json(principal))

    def _principal_json(self, principal: Principal) -> dict[str, Any]:
        return {"ownerId": principal.id, "admin": principal.is_admin, "keys": self.keys.key_count(principal)}


def _key_body(raw: bytes, *, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The JSON object of a /_emulator/keys request; unknown fields are a 400 naming the field (never a value)."""
    body = _parse_json(raw)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    if any(name not in allowed for name in body):  # not named: a misplaced key could be the name
        raise ValidationError("body", f"unknown field (allowed: {', '.join(allowed)})")
    if "key" not in body:
        raise ValidationError("key", "is required")
    return body
