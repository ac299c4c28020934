"""The operator's own Kubernetes reads (`kube.KubeApi`): kopf's login, a re-login after a 401, the service
account's token re-read from its file, sessions closed when replaced; over an httpx mock transport."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import kopf
import pytest

from goodmem_operator.kube import USER_AGENT, KubeApi, LoginFailed

pytestmark = pytest.mark.unit


class Logins:
    """A login function handing out the tokens it is given, one per call (the last one again when they run out)."""

    def __init__(self, *tokens: str, server: str = "https://api.test:6443") -> None:
        self.tokens = list(tokens)
        self.server = server
        self.calls = 0

    def __call__(self) -> kopf.ConnectionInfo:
        token = self.tokens[min(self.calls, len(self.tokens) - 1)]
        self.calls += 1
        return kopf.ConnectionInfo(server=self.server, scheme="Bearer", token=token)


class ApiServer:
    """Accepts the tokens in `valid`; records what it was sent."""

    def __init__(self, *valid: str) -> None:
        self.valid = set(valid)
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.valid:
            return httpx.Response(401, json={"kind": "Status", "code": 401})
        return httpx.Response(200, json={"path": request.url.path})

    def tokens(self) -> list[str]:
        return [r.headers["Authorization"] for r in self.seen]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def api(login: Logins, server: ApiServer, **kw: object) -> KubeApi:
    kw.setdefault("token_file", Path("/nonexistent/token"))
    return KubeApi(login, transport=httpx.MockTransport(server), **kw)  # type: ignore[arg-type]


async def test_requests_carry_the_logins_identity_to_its_server() -> None:
    login, server = Logins("tok-1", server="https://api.test:6443/prefix"), ApiServer("tok-1")
    kube = api(login, server)
    response = await kube.get(
        "/api/v1/namespaces/a/secrets", params={"labelSelector": "x=y"}, accept="application/json"
    )
    assert response.status_code == 200
    [request] = server.seen
    assert str(request.url) == "https://api.test:6443/prefix/api/v1/namespaces/a/secrets?labelSelector=x%3Dy"
    assert request.headers["Authorization"] == "Bearer tok-1"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    await kube.get("/version")
    assert login.calls == 1, "one login for many requests"
    await kube.aclose()


async def test_a_401_logs_in_again_and_retries_once() -> None:
    login, server = Logins("expired", "fresh"), ApiServer("fresh")
    kube = api(login, server)
    response = await kube.get("/api/v1/x")
    assert response.status_code == 200
    assert server.tokens() == ["Bearer expired", "Bearer fresh"]
    assert login.calls == 2
    await kube.aclose()


async def test_a_second_401_is_the_callers_answer_not_a_loop() -> None:
    login, server = Logins("bad-1", "bad-2", "bad-3"), ApiServer()
    kube = api(login, server)
    response = await kube.get("/api/v1/x")
    assert response.status_code == 401
    assert len(server.seen) == 2 and login.calls == 2
    await kube.aclose()


async def test_concurrent_401s_share_one_login() -> None:
    login = Logins("expired", "fresh", "fresher")
    gate = asyncio.Event()
    server = ApiServer("fresh", "fresher")

    async def slow(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer expired":
            await gate.wait()  # all of them are in flight on the old session before any 401 comes back
        return server(request)

    kube = KubeApi(login, transport=httpx.MockTransport(slow), token_file=Path("/nonexistent/token"))
    tasks = [asyncio.create_task(kube.get(f"/api/v1/x{i}")) for i in range(5)]
    await asyncio.sleep(0.05)
    gate.set()
    responses = await asyncio.gather(*tasks)
    assert [r.status_code for r in responses] == [200] * 5
    assert login.calls == 2, "one re-login for five 401s"
    await kube.aclose()


async def test_a_replaced_session_is_closed_once_its_last_request_is_done() -> None:
    release = asyncio.Event()
    server = ApiServer("fresh")

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slow":
            await release.wait()
            return httpx.Response(200)
        return server(request)

    kube = KubeApi(Logins("expired", "fresh"), transport=httpx.MockTransport(handler), token_file=Path("/none"))
    slow = asyncio.create_task(kube.get("/slow"))
    await asyncio.sleep(0.01)
    first = kube._session
    assert first is not None
    assert (await kube.get("/x")).status_code == 200  # 401 on the first session, re-login, 200 on the second
    second = kube._session
    assert second is not None and second is not first
    assert not first.client.is_closed, "still serving /slow"
    release.set()
    assert (await slow).status_code == 200
    assert first.client.is_closed
    await kube.aclose()
    assert second.client.is_closed


async def test_the_service_account_token_is_re_read_from_its_file(tmp_path: Path) -> None:
    """A bound token rotated by the kubelet in the file is used within TOKEN_REFRESH, without a 401 first."""
    token_file = tmp_path / "token"
    token_file.write_text("sa-1\n")
    clock, server = Clock(), ApiServer("sa-1", "sa-2")
    kube = api(Logins("sa-1"), server, token_file=token_file, token_refresh=60.0, clock=clock)
    await kube.get("/a")
    token_file.write_text("sa-2\n")
    clock.now += 59
    await kube.get("/b")
    clock.now += 2
    await kube.get("/c")
    await kube.get("/d")
    assert server.tokens() == ["Bearer sa-1", "Bearer sa-1", "Bearer sa-2", "Bearer sa-2"]
    await kube.aclose()


async def test_a_kubeconfig_token_is_never_replaced_by_a_service_account_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("sa-token")
    clock, server = Clock(), ApiServer("kubeconfig-token")
    kube = api(Logins("kubeconfig-token"), server, token_file=token_file, clock=clock)
    await kube.get("/a")
    clock.now += 3600
    await kube.get("/b")
    assert server.tokens() == ["Bearer kubeconfig-token"] * 2
    await kube.aclose()


async def test_no_credentials_is_an_error_of_its_own() -> None:
    kube = KubeApi(lambda: None, transport=httpx.MockTransport(ApiServer()))
    with pytest.raises(LoginFailed, match="no Kubernetes credentials"):
        await kube.get("/a")
