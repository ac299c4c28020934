"""The operator's own Kubernetes reads over real HTTP (a fake API server on the loopback): `kube.KubeApi` with
kopf's ConnectionInfo (token, CA and client certificate), a re-login after a 401, the service account token
re-read from its file, sessions closed when replaced, and `secrets.KubeSecretReader` on top of it."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
from aiohttp import web

from goodmem_devcluster.pki import CertificateAuthority
from goodmem_operator.kube import USER_AGENT, KubeApi, LoginFailed
from goodmem_operator.main import StatusNotWritten, status_writer
from goodmem_operator.secrets import CREDENTIALS_SELECTOR, METADATA_ONLY, KubeSecretReader, SecretData

pytestmark = pytest.mark.integration

NOWHERE = Path("/nonexistent/token")
JSON = "application/json"
VALUE = "SENTINEL-kube-reads-7c2e91"


class ApiServer:
    """Accepts the bearer tokens in `valid` (or, over TLS, any client certificate the CA signed); records what it
    was sent; serves the two Secret requests the reader makes, selection applied, and anything else as {}."""

    def __init__(self, *valid: str) -> None:
        self.valid = set(valid)
        self.seen: list[web.Request] = []
        self.patches: list[tuple[str, str, Any]] = []  # (path, content type, body) of each authorized PATCH
        self.secrets: dict[str, dict[str, Any]] = {}
        self.hold: asyncio.Event | None = None  # requests with this token wait for it
        self.hold_token = ""
        self.url = ""

    def authorized(self, request: web.Request) -> bool:
        if request.transport is not None and request.transport.get_extra_info("peercert"):
            return True
        return request.headers.get("Authorization", "").removeprefix("Bearer ") in self.valid

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request)
        if self.hold is not None and request.headers.get("Authorization") == f"Bearer {self.hold_token}":
            await self.hold.wait()
        if not self.authorized(request):
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        if request.method == "PATCH":
            self.patches.append((request.path, request.content_type, await request.json()))
            return web.json_response({"kind": "LLM"})
        prefix = "/api/v1/namespaces/team-a/secrets"
        if request.path == prefix:
            name = request.query["fieldSelector"].removeprefix("metadata.name=")
            key, value = request.query["labelSelector"].split("=")
            body = self.secrets.get(name)
            match = body is not None and body["metadata"]["labels"].get(key) == value
            return web.json_response({"kind": "SecretList", "items": [body] if match else []})
        if request.path.startswith(prefix + "/"):
            name = request.path.removeprefix(prefix + "/")
            if name not in self.secrets or request.headers.get("Accept") != METADATA_ONLY:
                return web.json_response({"kind": "Status", "code": 404}, status=404)
            return web.json_response({"kind": "PartialObjectMetadata", "metadata": self.secrets[name]["metadata"]})
        return web.json_response({})

    def tokens(self) -> list[str]:
        return [r.headers.get("Authorization", "") for r in self.seen]


async def _serve(server: ApiServer, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[web.AppRunner]:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    app.router.add_route("PATCH", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    yield runner
    await runner.cleanup()


@pytest.fixture
async def api_server() -> AsyncIterator[ApiServer]:
    server = ApiServer()
    async for _ in _serve(server):
        yield server


class Logins:
    """A login function handing out the tokens it is given, one per call (the last one again when they run out)."""

    def __init__(self, server: ApiServer, *tokens: str, prefix: str = "") -> None:
        self.server, self.tokens, self.prefix = server, list(tokens), prefix
        self.calls = 0

    def __call__(self) -> kopf.ConnectionInfo:
        token = self.tokens[min(self.calls, len(self.tokens) - 1)]
        self.calls += 1
        return kopf.ConnectionInfo(server=self.server.url + self.prefix, scheme="Bearer", token=token)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the identity -----------------------------------------------------------------------------------


async def test_requests_carry_the_logins_identity_to_its_server(api_server: ApiServer) -> None:
    api_server.valid = {"tok-1"}
    login = Logins(api_server, "tok-1", prefix="/prefix/")
    kube = KubeApi(login, token_file=NOWHERE)
    answer = await kube.get("/api/v1/namespaces/a/secrets", params={"labelSelector": "x=y"}, accept="application/json")
    assert answer.status == 200
    [request] = api_server.seen
    assert request.path_qs == "/prefix/api/v1/namespaces/a/secrets?labelSelector=x%3Dy"
    assert request.headers["Authorization"] == "Bearer tok-1"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == USER_AGENT
    await kube.get("/version")
    assert login.calls == 1, "one login for many requests"
    await kube.aclose()


async def test_tls_with_the_kubeconfigs_ca_and_client_certificate(tmp_path: Path) -> None:
    """The server verifies the client certificate and the client verifies the server against the CA: both from
    the ConnectionInfo's data fields, as a kubeconfig with embedded certificates gives them."""
    ca = CertificateAuthority("kube-reads-test-ca")
    serving = ca.issue_serving(dns=["localhost"], ips=["127.0.0.1"])
    client = ca.issue_client("goodmem-operator")
    serving.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.crt"))
    server_tls.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server_tls.verify_mode = ssl.CERT_REQUIRED
    server = ApiServer()
    async for _ in _serve(server, server_tls):

        def login() -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(
                server=server.url,
                ca_data=base64.b64encode(ca.cert_pem),
                certificate_data=base64.b64encode(client.cert_pem),
                private_key_data=base64.b64encode(client.key_pem),
            )

        kube = KubeApi(login, token_file=NOWHERE)
        assert (await kube.get("/api/v1/x")).status == 200
        peer = server.seen[0].transport.get_extra_info("peercert")  # type: ignore[union-attr]
        assert ("commonName", "goodmem-operator") in [field for rdn in peer["subject"] for field in rdn]
        await kube.aclose()

        def untrusted() -> kopf.ConnectionInfo:  # the same server, but a CA that did not sign it
            return kopf.ConnectionInfo(server=server.url, ca_data=base64.b64encode(CertificateAuthority().cert_pem))

        distrustful = KubeApi(untrusted, token_file=NOWHERE)
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            await distrustful.get("/api/v1/x")
        await distrustful.aclose()


# -- re-login ---------------------------------------------------------------------------------------


async def test_a_401_logs_in_again_and_retries_once(api_server: ApiServer) -> None:
    api_server.valid = {"fresh"}
    login = Logins(api_server, "expired", "fresh")
    kube = KubeApi(login, token_file=NOWHERE)
    assert (await kube.get("/api/v1/x")).status == 200
    assert api_server.tokens() == ["Bearer expired", "Bearer fresh"]
    assert login.calls == 2
    await kube.aclose()


async def test_a_status_merge_patch_is_sent_again_after_a_401(api_server: ApiServer) -> None:
    """The status writer of the side paths (main.build_runtime): a merge patch, its body resent after a re-login."""
    api_server.valid = {"fresh"}
    login = Logins(api_server, "expired", "fresh")
    kube = KubeApi(login, token_file=NOWHERE)
    path = "/apis/goodmem.ai/v1alpha1/namespaces/a/llms/x/status"
    body = {"status": {"llmId": "0f5e", "conditions": [{"type": "Ready", "status": "True"}]}}
    assert (await kube.merge_patch(path, body)).status == 200
    assert api_server.tokens() == ["Bearer expired", "Bearer fresh"]
    assert api_server.patches == [(path, "application/merge-patch+json", body)]
    await kube.aclose()


async def test_the_status_writer_patches_status_and_raises_on_a_refusal(api_server: ApiServer) -> None:
    api_server.valid = {"tok"}
    kube = KubeApi(Logins(api_server, "tok"), token_file=NOWHERE)
    write = status_writer(kube)
    await write("team-a", "gpt", {"llmId": "0f5e"})
    assert api_server.patches == [
        (
            "/apis/goodmem.ai/v1alpha1/namespaces/team-a/llms/gpt/status",
            "application/merge-patch+json",
            {"status": {"llmId": "0f5e"}},
        )
    ]
    api_server.valid = set()  # every request now 401, after the re-login too
    with pytest.raises(StatusNotWritten, match=r"^team-a/gpt: HTTP 401$"):
        await write("team-a", "gpt", {"llmId": "0f5e"})
    await kube.aclose()


async def test_a_second_401_is_the_callers_answer_not_a_loop(api_server: ApiServer) -> None:
    login = Logins(api_server, "bad-1", "bad-2", "bad-3")
    kube = KubeApi(login, token_file=NOWHERE)
    assert (await kube.get("/api/v1/x")).status == 401
    assert len(api_server.seen) == 2 and login.calls == 2
    await kube.aclose()


async def test_concurrent_401s_share_one_login(api_server: ApiServer) -> None:
    api_server.valid = {"fresh", "fresher"}
    api_server.hold, api_server.hold_token = asyncio.Event(), "expired"
    login = Logins(api_server, "expired", "fresh", "fresher")
    kube = KubeApi(login, token_file=NOWHERE)
    tasks = [asyncio.create_task(kube.get(f"/api/v1/x{i}")) for i in range(5)]
    while len(api_server.seen) < 5:  # all five in flight on the first session before any 401 comes back
        await asyncio.sleep(0.01)
    api_server.hold.set()
    answers = await asyncio.gather(*tasks)
    assert [a.status for a in answers] == [200] * 5
    assert login.calls == 2, "one re-login for five 401s"
    await kube.aclose()


async def test_a_replaced_session_is_closed_once_its_last_request_is_done(api_server: ApiServer) -> None:
    api_server.valid = {"fresh", "slow"}
    api_server.hold, api_server.hold_token = asyncio.Event(), "slow"
    kube = KubeApi(Logins(api_server, "slow", "fresh"), token_file=NOWHERE)
    slow = asyncio.create_task(kube.get("/slow"))  # in flight on the first session, held by the server
    while not api_server.seen:
        await asyncio.sleep(0.01)
    first = kube._session
    assert first is not None
    api_server.valid = {"fresh"}  # the first token expires: the next request meets a 401 and logs in again
    api_server.hold_token = "none"
    assert (await kube.get("/x")).status == 200
    second = kube._session
    assert second is not None and second is not first
    assert not first.http.closed, "still serving /slow"
    api_server.valid = {"fresh", "slow"}
    api_server.hold.set()
    assert (await slow).status == 200
    assert first.http.closed
    await kube.aclose()
    assert second.http.closed


# -- the service account's token file -----------------------------------------------------------------


async def test_the_service_account_token_is_re_read_from_its_file(api_server: ApiServer, tmp_path: Path) -> None:
    """A bound token rotated by the kubelet in the file is used within TOKEN_REFRESH, without a 401 first."""
    token_file = tmp_path / "token"
    token_file.write_text("sa-1\n")
    api_server.valid = {"sa-1", "sa-2"}
    clock = Clock()
    login = Logins(api_server, "sa-1")
    kube = KubeApi(login, token_file=token_file, token_refresh=60.0, clock=clock)
    await kube.get("/a")
    token_file.write_text("sa-2\n")
    clock.now += 59
    await kube.get("/b")
    clock.now += 2
    await kube.get("/c")
    await kube.get("/d")
    assert api_server.tokens() == ["Bearer sa-1", "Bearer sa-1", "Bearer sa-2", "Bearer sa-2"]
    assert login.calls == 1, "a re-read of the file, not a login"
    await kube.aclose()


async def test_a_kubeconfig_token_is_never_replaced_by_a_service_account_file(
    api_server: ApiServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("sa-token")
    api_server.valid = {"kubeconfig-token"}
    clock = Clock()
    kube = KubeApi(Logins(api_server, "kubeconfig-token"), token_file=token_file, clock=clock)
    await kube.get("/a")
    clock.now += 3600
    await kube.get("/b")
    assert api_server.tokens() == ["Bearer kubeconfig-token"] * 2
    await kube.aclose()


async def test_no_credentials_is_an_error_of_its_own() -> None:
    with pytest.raises(LoginFailed, match="no Kubernetes credentials"):
        await KubeApi(lambda: None, token_file=NOWHERE).get("/a")


# -- the Secret reader over HTTP ------------------------------------------------------------------------


def _secret(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "team-a", "labels": labels},
        "data": {"api-key": base64.b64encode(VALUE.encode()).decode()},
    }


@pytest.fixture
def reader(api_server: ApiServer) -> Callable[[], KubeSecretReader]:
    api_server.valid = {"t"}
    api_server.secrets = {
        "labelled": _secret("labelled", {"goodmem.ai/credentials": "true"}),
        "plain": _secret("plain", {"app": "x"}),
    }
    return lambda: KubeSecretReader(KubeApi(Logins(api_server, "t"), token_file=NOWHERE))


async def test_the_reader_over_http(api_server: ApiServer, reader: Callable[[], KubeSecretReader]) -> None:
    r = reader()
    assert await r.read("team-a", "labelled") == SecretData({"goodmem.ai/credentials": "true"}, {"api-key": VALUE})
    assert await r.read("team-a", "plain") == SecretData({"app": "x"}, {}), "told from missing, without its data"
    assert await r.read("team-a", "absent") is None
    secrets = "/api/v1/namespaces/team-a/secrets"

    def listing(name: str) -> tuple[str, str, dict[str, str], str]:
        return ("GET", secrets, {"labelSelector": CREDENTIALS_SELECTOR, "fieldSelector": f"metadata.name={name}"}, JSON)

    assert [(q.method, q.path, dict(q.query), q.headers.get("Accept")) for q in api_server.seen] == [
        listing("labelled"),
        listing("plain"),
        ("GET", f"{secrets}/plain", {}, METADATA_ONLY),
        listing("absent"),
        ("GET", f"{secrets}/absent", {}, METADATA_ONLY),
    ]
    await r.aclose()


async def test_the_reader_when_the_api_server_is_gone(reader: Callable[[], KubeSecretReader]) -> None:
    r = reader()
    assert await r.read("team-a", "labelled") is not None
    await r.aclose()

    def gone() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server="http://127.0.0.1:9", token="t")  # discard port: nothing listens

    lost = KubeSecretReader(KubeApi(gone, token_file=NOWHERE))
    with pytest.raises(RuntimeError) as caught:
        await lost.read("team-a", "labelled")
    await lost.aclose()
    assert str(caught.value) == "reading Secret team-a/labelled failed: ClientConnectorError"
