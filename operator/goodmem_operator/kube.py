"""The operator's own Kubernetes requests, as the identity kopf logs in with, on the event loop (no thread), over
aiohttp.

The operator's own reads (the referenced Secrets, `secrets.KubeSecretReader`) need two GETs, and the reconciles
that run outside kopf's change handlers (Secret fan-out, drift checks, retries) write status with one merge patch
of `/status` (`main.status_writer`); kopf does everything else. This client takes its credentials from a login
function (main passes `kopf.login_via_client`, the one kopf logs in with: in-cluster service account, else the
kubeconfig), and builds its session the way kopf builds its own (`ConnectionInfo.as_ssl_context()` for the CA and
client certificate, `as_http_headers()` for the token or basic auth, the proxy and trust_env): same identity, same
server, same transport (aiohttp, which kopf depends on and imports anyway). Like kopf it logs in again after a
401 and retries once. A token read from the service account's token file is re-read from that file at most
every TOKEN_REFRESH seconds, as client-go does: the kubelet rotates a bound token in that file before it
expires. Why this and not kubernetes_asyncio or httpx: docs/ARCHITECTURE.md (measured).
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
#: Seconds between re-reads of the service account's token file (client-go's cadence).
TOKEN_REFRESH = 60.0
USER_AGENT = "goodmem-operator"
#: Connections to the API server at most (the `kubernetes` client in the default thread pool allowed 6 reads at
#: once; 8, 32 and 100 measured alike for 50 concurrent reads).
CONNECTIONS = 16


class Connection(Protocol):
    """What a login gives: `kopf.ConnectionInfo` has this shape."""

    @property
    def server(self) -> str: ...
    @property
    def token(self) -> str | None: ...
    @property
    def proxy_url(self) -> str | None: ...
    @property
    def trust_env(self) -> bool: ...
    def as_http_headers(self) -> dict[str, str]: ...
    def as_ssl_context(self) -> ssl.SSLContext: ...


class LoginFailed(Exception):
    """The login function gave no credentials."""


@dataclass(frozen=True)
class Answer:
    """The API server's answer: its status and body."""

    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


MERGE_PATCH = "application/merge-patch+json"
JSON = "application/json"


@dataclass(frozen=True)
class _Call:
    """One request, as sent again after a re-login."""

    method: str
    path: str
    params: Mapping[str, str] | None
    accept: str | None
    data: bytes | None  # a body: a merge patch, or an object to create or replace
    content_type: str = MERGE_PATCH


@dataclass
class _Session:
    """One login's HTTP session. A session replaced by a later login is closed once its last request is done."""

    http: aiohttp.ClientSession
    server: str
    headers: dict[str, str]
    token_from_file: bool
    token_read_at: float
    in_flight: int = 0
    retired: bool = False


class KubeApi:
    """Requests to the Kubernetes API (GETs, merge patches of status, the Lease's create and replace) as the identity
    `login` returns."""

    def __init__(
        self,
        login: Callable[[], Connection | None],
        *,
        timeout: float = 60.0,
        token_file: Path = SERVICE_ACCOUNT_TOKEN,
        token_refresh: float = TOKEN_REFRESH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._login = login
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._token_file = token_file
        self._token_refresh = token_refresh
        self._clock = clock
        self._session: _Session | None = None

    async def get(self, path: str, *, params: Mapping[str, str] | None = None, accept: str | None = None) -> Answer:
        """GET `path` (from the server's root, e.g. /api/v1/...). After a 401 it logs in again and retries once;
        any other status is the caller's to judge. Transport errors raise aiohttp.ClientError or TimeoutError."""
        return await self._request(_Call("GET", path, params, accept, None))

    async def merge_patch(self, path: str, body: Mapping[str, Any]) -> Answer:
        """A JSON merge patch of `path` (e.g. an object's /status), with `get`'s re-login and error rules."""
        return await self._request(_Call("PATCH", path, None, None, json.dumps(body).encode()))

    async def post(self, path: str, body: Mapping[str, Any]) -> Answer:
        """Create an object in the collection `path` (the leader election's Lease), with `get`'s rules."""
        return await self._request(_Call("POST", path, None, None, json.dumps(body).encode(), JSON))

    async def put(self, path: str, body: Mapping[str, Any]) -> Answer:
        """Replace the object at `path` (its metadata.resourceVersion makes it conditional), with `get`'s rules."""
        return await self._request(_Call("PUT", path, None, None, json.dumps(body).encode(), JSON))

    async def _request(self, call: _Call) -> Answer:
        session = self._current()
        answer = await self._send(session, call)
        if answer.status != 401:
            return answer
        if session is self._session:  # not yet replaced by a concurrent request's re-login
            await self._relogin()
        return await self._send(self._current(), call)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._retire(self._session)
            self._session = None

    # -- sessions ------------------------------------------------------------------------------------

    def _current(self) -> _Session:
        if self._session is None:
            self._session = self._open()
        session = self._session
        if session.token_from_file and self._clock() - session.token_read_at >= self._token_refresh:
            token = self._read_token_file()
            session.token_read_at = self._clock()
            if token:
                session.headers["Authorization"] = f"Bearer {token}"
        return session

    def _open(self) -> _Session:
        """Log in: one call of the login function (it reads the kubeconfig or the service account's files)."""
        conn = self._login()
        if conn is None:
            raise LoginFailed("no Kubernetes credentials: neither in-cluster nor a kubeconfig")
        http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS, ssl=conn.as_ssl_context()),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            proxy=conn.proxy_url,
            trust_env=conn.trust_env,
            timeout=self._timeout,
        )
        token_from_file = conn.token is not None and self._read_token_file() == conn.token
        return _Session(http, conn.server.rstrip("/"), conn.as_http_headers(), token_from_file, self._clock())

    async def _relogin(self) -> None:
        old, self._session = self._session, self._open()
        if old is not None:
            await self._retire(old)

    async def _retire(self, session: _Session) -> None:
        session.retired = True
        if session.in_flight == 0:
            await session.http.close()

    async def _send(self, session: _Session, call: _Call) -> Answer:
        headers = dict(session.headers)
        if call.accept is not None:
            headers["Accept"] = call.accept
        if call.data is not None:
            headers["Content-Type"] = call.content_type
        session.in_flight += 1
        try:
            async with session.http.request(
                call.method,
                session.server + call.path,
                params=call.params,
                data=call.data,
                headers=headers,
                allow_redirects=False,
            ) as response:
                return Answer(response.status, await response.read())
        finally:
            session.in_flight -= 1
            if session.retired and session.in_flight == 0:
                await session.http.close()

    def _read_token_file(self) -> str | None:
        """The service account's token, or None when there is none (outside a cluster)."""
        try:
            return self._token_file.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None
