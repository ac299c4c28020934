"""Async client for the GoodMem LLM registry (`/v1/llms`).

It has exactly the registry's five verbs and hides HTTP: callers get plain
dicts (camelCase, as the registry speaks) or a typed `RegistryError`.  Error
messages are built from the status, the registry's reason and a redacted,
truncated body: any secret the caller names (and the client's own API key) is
cut out before the text can reach a log, an event or a condition, in its
plain, JSON-escaped and base64 forms.

The client is strict about what counts as success: only a 2xx status with a
body of the shape the verb promises (create: `{"llm": {"llmId": ...}}`; get
and update: an LLM object; list: `{"llms": [...]}`; delete: 200 or 204) is
one.  A redirect (never followed) or any other answer is an
`UnexpectedResponse`, which is retryable: a delete that meets one keeps its
finalizer.  Ids are checked to be UUIDs before they go into a URL path.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import ssl
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from goodmem_operator.fairness import FairLimiter

REDACTED = "<redacted>"
_BODY_LIMIT = 300


class RegistryError(Exception):
    """A failed registry call.  `retryable` tells whether trying again can help; what a failure means for
    a resource (its condition reason) is the engine's business (`engine.REASONS`)."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None, registry_reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.registry_reason = registry_reason


class BadRequest(RegistryError):
    retryable = False


class Unauthorized(RegistryError):
    """401: the registry key was refused."""


class Forbidden(RegistryError):
    """403: the key may not do this."""


class NotFound(RegistryError):
    retryable = False


class Conflict(RegistryError):
    """409: the id is in use, or another LLM has the same identity."""

    retryable = False

    def __init__(self, message: str, *, existing_id: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.existing_id = existing_id


class RateLimited(RegistryError):
    """429, with the server's Retry-After (seconds) when it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(RegistryError):
    """5xx, or an answer that is not JSON."""


class Unreachable(RegistryError):
    """Network failure or timeout: the registry did not answer."""


class UnexpectedResponse(RegistryError):
    """An answer that is not a success of the expected shape: a 3xx (redirects are never followed), a 1xx, a
    2xx the verb does not answer with, a body that is not JSON or lacks what the verb promises.

    Retryable: it says nothing about the request being wrong, and a delete that meets one must keep its
    finalizer rather than release it with the entry (and its key) left behind.
    """


class InvalidId(RegistryError):
    """An LLM id that is not a UUID: refused before it goes into a URL path, without any request."""

    retryable = False


def secret_forms(secret: str) -> set[str]:
    """The forms in which `secret` can stand in a text: plain, JSON-escaped (ASCII-only and raw), and
    base64 (standard and URL-safe, with and without padding)."""
    if not secret:
        return set()
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    raw = secret.encode("utf-8")
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        padded = encode(raw).decode("ascii")
        forms.update((padded, padded.rstrip("=")))
    return {f for f in forms if f}


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every form of every secret (see `secret_forms`) replaced by `<redacted>`, longest first."""
    forms: set[str] = set()
    for secret in secrets:
        forms |= secret_forms(secret)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text


def _checked_id(llm_id: Any) -> str:
    """`llm_id` if it is a hyphenated UUID (8-4-4-4-12, any case); else InvalidId, before any request."""
    if isinstance(llm_id, str) and len(llm_id) == 36:
        try:
            if str(uuid.UUID(llm_id)) == llm_id.lower():
                return llm_id
        except ValueError:
            pass
    shown = repr(llm_id)[:60] if isinstance(llm_id, str) else type(llm_id).__name__
    raise InvalidId(f"llmId {shown} is not a UUID; refusing to put it into a registry URL")


def _same_id(a: str, b: str) -> bool:
    try:
        return uuid.UUID(a) == uuid.UUID(b)
    except ValueError:
        return a == b


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


_ERRORS_BY_STATUS: dict[int, type[RegistryError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
}


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error_reason(data: Any) -> str:
    """The registry's own words in an error body (error, code, message, field), if it is a JSON object."""
    if not isinstance(data, dict):
        return ""
    return "; ".join(str(data[k]) for k in ("error", "code", "message", "field") if data.get(k))


def _existing_id(data: Any) -> str | None:
    """The entry a 409 names, if the body names one with a UUID (it goes into a URL path next); else None."""
    if not isinstance(data, dict):
        return None
    for key in ("existingLlmId", "existingId", "llmId"):
        value = data.get(key)
        if isinstance(value, str):
            with contextlib.suppress(InvalidId):
                return _checked_id(value)
            return None
    return None


class CircuitOpen(Unreachable):
    """The registry failed (5xx, timeout, no answer) several times in a row: the request was not sent."""


class Breaker:
    """A circuit breaker: after `threshold` consecutive failures (5xx, timeouts, no answer) requests fail at once
    (`CircuitOpen`), except one probe per backoff step (`base` seconds, doubling to `cap`); the first answer that
    is not such a failure closes it. A registry that is down then costs its callers no timeouts and no slots."""

    def __init__(
        self,
        threshold: int = 5,
        base: float = 1.0,
        cap: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.base = base
        self.cap = cap
        self.clock = clock
        self.failures = 0  # consecutive
        self.opened_at: float | None = None
        self.delay = base
        self.probing = False
        #: told (at most once per `recovery_interval`) when the registry answers again after failures or 429s: the
        #: LLMs that failed meanwhile then retry at once instead of waiting out the backoff they built up
        self.on_recovered: Callable[[], object] | None = None
        self.recovery_interval = 10.0
        self.degraded = False
        self._recovered_at = -float("inf")
        self._probed_at = -float("inf")

    @property
    def open(self) -> bool:
        return self.opened_at is not None

    def allow(self) -> bool:
        """Whether a request may go out now (while open: one probe per backoff step)."""
        if self.opened_at is None:
            return True
        if self.probing or self.clock() < self.opened_at + self.delay:
            return False
        self.probing = True
        return True

    def retry_in(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.delay - self.clock())

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.delay = self.base
        self.probing = False
        if not self.degraded:
            return
        if self.on_recovered is None:
            self.degraded = False
        elif self.clock() - self._recovered_at >= self.recovery_interval:  # else: told at a later answer
            self.degraded = False
            self._recovered_at = self.clock()
            self.on_recovered()

    def probe_due(self) -> bool:
        """Whether a key check should go out by itself now: while open, one per backoff step (`allow`); while
        degraded (failures or 429s not yet followed by an answer), one per half `recovery_interval`, so the first
        answer after the trouble is seen without waiting for a caller's own retry."""
        if self.opened_at is not None:
            return self.allow()
        if self.degraded and self.clock() - self._probed_at >= self.recovery_interval / 2:
            self._probed_at = self.clock()
            return True
        return False

    def throttled(self) -> None:
        """A 429: the registry answers (the circuit stays closed), but the callers will retry late."""
        self.degraded = True

    def failure(self) -> None:
        self.failures += 1
        self.degraded = True
        if self.probing:  # the probe failed: wait twice as long for the next one
            self.delay = min(self.cap, self.delay * 2)
            self.opened_at = self.clock()
            self.probing = False
        elif self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = self.clock()

    def abandon(self) -> None:
        """A probe that ended without an answer either way (cancelled): the next caller may probe."""
        self.probing = False


#: Where the client's key comes from: the key itself, or a function giving the current one (read per request, so a
#: rotated key is used by the next request).
KeySource = str | Callable[[], str]

#: The authenticated call that checks a key and matches no entry: a list filtered by a label nobody sets.
PROBE_LABEL = ("goodmem.ai/probe", "none")


def ca_context(pem: str) -> ssl.SSLContext:
    """An SSL context that trusts these PEM certificates (a private registry's CA); ValueError if none is usable."""
    try:
        return ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM CA bundle ({type(exc).__name__})") from None


@functools.lru_cache(maxsize=64)
def tls_context(pem: str = "") -> ssl.SSLContext:
    """One SSL context per distinct trust: httpx's default (no bundle), or a private CA bundle. Shared by every
    client that trusts the same: each context holds its CA store (about 0.8 MB for the default one), so a context
    per client cost 0.9 MB per connection (bench/ANALYSIS.md #9). ValueError for a bundle that is not PEM."""
    return ca_context(pem) if pem else httpx.create_ssl_context()


class RegistryClient:
    """The registry's five verbs over one reused HTTP connection pool."""

    def __init__(
        self,
        base_url: str,
        api_key: KeySource,
        *,
        timeout: float = 10.0,
        concurrency: int = 16,
        rate: float = 100.0,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: Any = None,
        verify: ssl.SSLContext | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self._key: Callable[[], str] = api_key if callable(api_key) else (lambda: api_key)
        self._keys_seen: list[str] = []  # the current and the previous key, both redacted from any message
        self.base_url = base_url.rstrip("/")
        self._limiter = FairLimiter(concurrency, rate)  # per-namespace queues, served in turn (fairness.py)
        self._observer = observer  # callable(verb, status, seconds) for metrics
        self.breaker = breaker if breaker is not None else Breaker()
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency)),
            transport=transport,
            verify=verify if verify is not None else tls_context(),
            follow_redirects=False,  # a redirect is an UnexpectedResponse, never followed (the key stays here)
        )

    def _current_key(self) -> str:
        key = self._key()
        if not self._keys_seen or self._keys_seen[-1] != key:
            self._keys_seen = [*self._keys_seen[-1:], key]
        return key

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the five verbs -------------------------------------------------------------------------

    async def create_llm(self, body: dict[str, Any]) -> dict[str, Any]:
        path = "/v1/llms"
        status, data = await self._call("create", "POST", path, json_body=body)
        llm = data.get("llm") if isinstance(data, dict) else None
        llm = self._expect_llm("create", "POST", path, status, llm, 'an object {"llm": {"llmId": ...}}')
        wanted = body.get("llmId")
        if isinstance(wanted, str) and not _same_id(llm["llmId"], wanted):
            raise self._unexpected("create", "POST", path, "the created entry's llmId is not the one requested", status)
        return dict(llm)

    async def get_llm(self, llm_id: str) -> dict[str, Any]:
        path = f"/v1/llms/{_checked_id(llm_id)}"
        status, data = await self._call("get", "GET", path)
        return dict(self._expect_llm("get", "GET", path, status, data, "an LLM object", llm_id=llm_id))

    async def list_llms(
        self,
        *,
        provider_type: str | None = None,
        owner_id: str | None = None,
        labels: dict[str, str] | None = None,
        probe: bool = False,
    ) -> list[dict[str, Any]]:
        params: dict[str, str] = {}
        if provider_type:
            params["providerType"] = provider_type
        if owner_id:
            params["ownerId"] = owner_id
        for key, value in (labels or {}).items():
            params[f"label.{key}"] = value
        path = "/v1/llms"
        status, data = await self._call("list", "GET", path, params=params, probe=probe)
        llms = data.get("llms") if isinstance(data, dict) else None
        if not isinstance(llms, list):
            raise self._unexpected("list", "GET", path, 'the body is not an object {"llms": [...]}', status)
        for llm in llms:
            self._expect_llm("list", "GET", path, status, llm, "a list of LLM objects")
        return [dict(llm) for llm in llms]

    async def update_llm(self, llm_id: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/v1/llms/{_checked_id(llm_id)}"
        status, data = await self._call("update", "PUT", path, json_body=body)
        return dict(self._expect_llm("update", "PUT", path, status, data, "an LLM object", llm_id=llm_id))

    async def delete_llm(self, llm_id: str) -> None:
        await self._call("delete", "DELETE", f"/v1/llms/{_checked_id(llm_id)}", statuses=(200, 204))

    async def probe(self) -> None:
        """Check the key with one authenticated call that matches no entry; a RegistryError if it fails. Sent even
        while the circuit is open (it is how a connection's status learns the registry is back)."""
        await self.list_llms(labels=dict([PROBE_LABEL]), probe=True)

    # -- answers of the wrong shape -------------------------------------------------------------

    def _expect_llm(
        self, verb: str, method: str, path: str, status: int, value: Any, shape: str, *, llm_id: str | None = None
    ) -> dict[str, Any]:
        """`value` if it is an LLM object (a JSON object with a string llmId, the one asked for if given)."""
        if not isinstance(value, dict):
            raise self._unexpected(verb, method, path, f"the body is not {shape}", status)
        if not isinstance(value.get("llmId"), str):
            raise self._unexpected(verb, method, path, f"the body is not {shape}: no string llmId", status)
        if llm_id is not None and not _same_id(value["llmId"], llm_id):
            raise self._unexpected(
                verb, method, path, "the body describes another llmId than the one in the path", status
            )
        return value

    @staticmethod
    def _unexpected(verb: str, method: str, path: str, what: str, status: int) -> UnexpectedResponse:
        # Never the body: only what was wrong with it.
        return UnexpectedResponse(f"{method} {path} ({verb}): registry answered {status}, but {what}", status=status)

    # -- transport ------------------------------------------------------------------------------

    async def _call(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        statuses: tuple[int, ...] | None = None,
        probe: bool = False,
    ) -> tuple[int, Any]:
        """One request; the status and parsed JSON body of a 2xx answer, else a RegistryError.

        `statuses` narrows the accepted 2xx statuses and accepts any body (delete: 200 or 204); without it
        the body must be JSON. While the circuit breaker is open, a request fails at once (`CircuitOpen`) unless it
        is the breaker's probe of this backoff step, or `probe` (a connection's key check) is set.
        """
        key = self._current_key()
        secrets = [*self._keys_seen, *_secrets_in(json_body)]
        if not probe and not self.breaker.allow():
            if self._observer is not None:
                self._observer(verb, "circuit-open", 0.0)
            raise CircuitOpen(
                f"{method} {path}: not sent: the registry failed {self.breaker.failures} times in a row "
                f"(next try in {self.breaker.retry_in():.0f}s)"
            )
        started = time.monotonic()
        status_label = "error"
        answered = False
        try:
            async with self._limiter.slot():
                try:
                    response = await self._http.request(
                        method, path, json=json_body, params=params, headers={"x-api-key": key}
                    )
                except httpx.TimeoutException as exc:
                    status_label = "timeout"
                    self.breaker.failure()
                    answered = True
                    raise Unreachable(f"{method} {path}: registry timed out ({type(exc).__name__})") from None
                except httpx.HTTPError as exc:
                    status_label = "network"
                    self.breaker.failure()
                    answered = True
                    raise Unreachable(
                        f"{method} {path}: registry unreachable ({type(exc).__name__}: {redact(str(exc), secrets)})"
                    ) from None
            status_label = str(response.status_code)
            answered = True
            if response.status_code >= 500:
                self.breaker.failure()
            elif response.status_code == 429:
                self.breaker.throttled()
            else:
                self.breaker.success()
            return response.status_code, self._answer(verb, method, path, response, secrets, statuses)
        finally:
            if not answered:
                self.breaker.abandon()
            if self._observer is not None:
                self._observer(verb, status_label, time.monotonic() - started)

    def _answer(
        self,
        verb: str,
        method: str,
        path: str,
        response: httpx.Response,
        secrets: list[str],
        statuses: tuple[int, ...] | None,
    ) -> Any:
        status = response.status_code
        if status >= 400:
            raise self._error(method, path, response, secrets)
        if not 200 <= status < 300:
            what = "only a 2xx status is a success"
            if 300 <= status < 400:
                location = redact(response.headers.get("location", ""), secrets)[:100]
                what = f"a redirect is not followed (Location: {location or 'none'}); only a 2xx status is a success"
            raise self._unexpected(verb, method, path, what, status)
        if statuses is not None:
            if status not in statuses:
                raise self._unexpected(
                    verb, method, path, f"{method} answers {' or '.join(map(str, statuses))}", status
                )
            return None
        if status == 204 or not response.content:
            raise self._unexpected(verb, method, path, "the body is empty", status)
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type").split(";")[0][:60]
            raise self._unexpected(
                verb, method, path, f"the body is not JSON ({len(response.content)} bytes, {kind})", status
            ) from None

    @staticmethod
    def _error(method: str, path: str, response: httpx.Response, secrets: list[str]) -> RegistryError:
        status = response.status_code
        data = _json_or_none(response.text)
        reason = redact(_error_reason(data) or response.text, secrets)
        if len(reason) > _BODY_LIMIT:
            reason = reason[:_BODY_LIMIT] + "..."
        message = f"{method} {path}: registry answered {status}" + (f": {reason}" if reason else "")
        kw: dict[str, Any] = {"status": status, "registry_reason": reason}
        if status == 409:
            return Conflict(message, existing_id=_existing_id(data), **kw)
        if status == 429:
            return RateLimited(message, retry_after=_retry_after(response.headers.get("retry-after")), **kw)
        if status >= 500:
            return ServerError(message, **kw)
        if status == 408:
            return RegistryError(message, **kw)
        # Any other 4xx (413 payload too large, 422, ...) says the request itself is wrong:
        # sending it again cannot help, so it is permanent like a 400.
        return _ERRORS_BY_STATUS.get(status, BadRequest)(message, **kw)
