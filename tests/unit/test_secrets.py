"""Secrets opt in: the label rule, the cache that keeps labelled Secrets only, the Kubernetes reader that never
receives an unlabelled Secret's data, the watch's label selector, and the Secret handler's label transitions."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import aiohttp
import kopf
import pytest

from goodmem_operator.api.types import Credentials
from goodmem_operator.handlers import Memo, Runtime, build_registry, select_credential_secrets
from goodmem_operator.kube import Answer, LoginFailed
from goodmem_operator.reconcile import Outcome
from goodmem_operator.secrets import (
    CREDENTIALS_LABEL,
    METADATA_ONLY,
    NOT_LABELLED,
    UNKNOWN,
    KubeSecretReader,
    SecretCache,
    SecretData,
    SecretKeyNotFound,
    SecretNotFound,
    SecretNotLabelled,
    resolve_credentials,
)

pytestmark = pytest.mark.unit

VALUE = "SENTINEL-unit-3b9c1e"
LABELLED = {CREDENTIALS_LABEL: "true"}
REF = Credentials.model_validate({"apiKey": {"secretKeyRef": {"name": "openai", "key": "api-key"}}})


class Reader:
    def __init__(self, secret: SecretData | None) -> None:
        self.secret = secret
        self.reads = 0

    async def read(self, namespace: str, name: str) -> SecretData | None:
        self.reads += 1
        return self.secret


def secret_body(data: dict[str, str], labels: dict[str, str] | None = None, name: str = "openai") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "team-a", "labels": dict(labels or {})},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


# -- the label rule --------------------------------------------------------------------------------


async def test_a_labelled_secret_gives_its_key() -> None:
    payload = await resolve_credentials(REF, "team-a", Reader(SecretData(LABELLED, {"api-key": VALUE})))
    assert VALUE in json.dumps(payload)


@pytest.mark.parametrize(
    "labels",
    [{}, {CREDENTIALS_LABEL: "false"}, {CREDENTIALS_LABEL: "True"}, {"credentials": "true"}],
    ids=["none", "false", "capitalised", "unprefixed"],
)
async def test_only_the_exact_label_opts_in_and_the_refusal_gives_the_command(labels: dict[str, str]) -> None:
    with pytest.raises(SecretNotLabelled) as caught:
        await resolve_credentials(REF, "team-a", Reader(SecretData(labels, {"api-key": VALUE})))
    assert caught.value.reason == "SecretNotLabelled" and not caught.value.permanent
    assert "kubectl label secret -n team-a openai goodmem.ai/credentials=true" in str(caught.value)
    assert VALUE not in str(caught.value)


async def test_missing_secret_and_missing_key_keep_their_reasons() -> None:
    with pytest.raises(SecretNotFound):
        await resolve_credentials(REF, "team-a", Reader(None))
    with pytest.raises(SecretKeyNotFound):
        await resolve_credentials(REF, "team-a", Reader(SecretData(LABELLED, {"other": VALUE})))


async def test_the_label_is_checked_before_the_key() -> None:
    """An unlabelled Secret says so, not "no key": its keys are none of the operator's business."""
    with pytest.raises(SecretNotLabelled):
        await resolve_credentials(REF, "team-a", Reader(SecretData({}, {})))


# -- the cache -------------------------------------------------------------------------------------


def test_cache_keeps_the_data_of_labelled_referenced_secrets_only() -> None:
    cache = SecretCache()
    cache.observe("team-a", "openai", secret_body({"api-key": VALUE}, LABELLED), deleted=False, referenced=True)
    assert cache.peek("team-a", "openai") == {"api-key": VALUE}
    cache.observe(
        "team-a", "plain", secret_body({"api-key": VALUE}, {"app": "x"}, "plain"), deleted=False, referenced=True
    )
    assert cache.peek("team-a", "plain") is NOT_LABELLED
    assert VALUE not in repr(cache._entries[("team-a", "plain")]), "no value of an unlabelled Secret is kept"
    cache.observe(
        "team-a", "unused", secret_body({"api-key": VALUE}, LABELLED, "unused"), deleted=False, referenced=False
    )
    assert cache.peek("team-a", "unused") is UNKNOWN and len(cache) == 2


def test_cache_compares_data_not_other_labels() -> None:
    cache = SecretCache()
    cache.observe("team-a", "openai", secret_body({"api-key": "v"}, LABELLED), deleted=False, referenced=True)
    before = cache.peek("team-a", "openai")
    cache.observe(
        "team-a",
        "openai",
        secret_body({"api-key": "v"}, {**LABELLED, "touched": "yes"}),
        deleted=False,
        referenced=True,
    )
    assert cache.peek("team-a", "openai") == before


async def test_the_secret_version_and_watch_time_travel_with_the_data_but_are_not_its_value() -> None:
    """status.credentialsSecretVersion and the rotation metric read them; a new version of the same data is no
    change (the cache's comparisons, SecretData equality)."""
    cache = SecretCache()
    body = secret_body({"api-key": "v"}, LABELLED)
    body["metadata"]["resourceVersion"] = "41"
    cache.observe("team-a", "openai", body, deleted=False, referenced=True)
    got = await cache.read("team-a", "openai")
    assert got is not None and got.resource_version == "41" and got.observed_at is not None
    assert got == SecretData(LABELLED, {"api-key": "v"})
    server = FakeApiServer({"openai": body})
    read = await server.reader().read("team-a", "openai")
    assert read is not None and read.resource_version == "41" and read.observed_at is None, "a read is no event"


async def test_cache_reads_through_and_keeps_no_data_of_an_unlabelled_secret() -> None:
    fallback = Reader(SecretData({"app": "x"}, {"api-key": VALUE}))  # a reader that did hand over the data
    cache = SecretCache(fallback=fallback)
    got = await cache.read("team-a", "openai")
    assert got is not None and not got.opted_in and dict(got.data) == {}
    assert cache.peek("team-a", "openai") is NOT_LABELLED
    await cache.read("team-a", "openai")
    assert fallback.reads == 2, "an unlabelled Secret is asked for again: the label selector hides its changes"
    fallback.secret = SecretData(LABELLED, {"api-key": VALUE})
    assert (await cache.read("team-a", "openai")) == SecretData(LABELLED, {"api-key": VALUE})
    await cache.read("team-a", "openai")
    assert fallback.reads == 3, "a labelled Secret is served from the cache (the watch keeps it fresh)"


async def test_a_secret_that_loses_the_label_is_read_again_and_refused() -> None:
    fallback = Reader(SecretData(LABELLED, {"api-key": VALUE}))
    cache = SecretCache(fallback=fallback)
    cache.observe("team-a", "openai", secret_body({"api-key": VALUE}, LABELLED), deleted=False, referenced=True)
    # The API server's DELETED under a label selector, carrying the last labelled content.
    cache.observe("team-a", "openai", secret_body({"api-key": VALUE}, LABELLED), deleted=True, referenced=True)
    fallback.secret = SecretData({}, {})
    with pytest.raises(SecretNotLabelled):
        await resolve_credentials(REF, "team-a", cache)


# -- the Kubernetes reader -------------------------------------------------------------------------


class FakeApiServer:
    """`kube.KubeApi` as the reader uses it, answering the two Secret requests as the API server would (the
    selection applied). The real client over real HTTP: tests/integration/test_kube_reads.py."""

    def __init__(self, secrets: dict[str, dict[str, Any]], *, status: int | None = None) -> None:
        self.secrets = secrets
        self.status = status  # answer every request with this status instead
        self.requests: list[tuple[str, dict[str, str], str | None]] = []

    async def get(self, path: str, *, params: dict[str, str] | None = None, accept: str | None = None) -> Answer:
        self.requests.append((path, dict(params or {}), accept))
        if self.status is not None:
            return answer(self.status, {"kind": "Status", "code": self.status})
        if path == "/api/v1/namespaces/team-a/secrets":
            assert params is not None
            name = params["fieldSelector"].removeprefix("metadata.name=")
            key, value = params["labelSelector"].split("=")
            body = self.secrets.get(name)
            match = body is not None and body["metadata"]["labels"].get(key) == value
            return answer(200, {"kind": "SecretList", "items": [body] if match else []})
        name = path.removeprefix("/api/v1/namespaces/team-a/secrets/")
        if name not in self.secrets:
            return answer(404, {"kind": "Status", "code": 404})
        assert accept == METADATA_ONLY
        return answer(200, {"kind": "PartialObjectMetadata", "metadata": self.secrets[name]["metadata"]})

    def reader(self) -> KubeSecretReader:
        return KubeSecretReader(self)  # duck-typed: the reader only calls get

    def calls(self) -> list[tuple[str, dict[str, str]]]:
        return [("list" if path.endswith("/secrets") else "get", params) for path, params, _ in self.requests]


def answer(status: int, body: Any) -> Answer:
    return Answer(status, json.dumps(body).encode())


async def test_reader_lists_by_name_with_the_label_selector() -> None:
    server = FakeApiServer({"openai": secret_body({"api-key": VALUE}, LABELLED)})
    got = await server.reader().read("team-a", "openai")
    assert got == SecretData(LABELLED, {"api-key": VALUE})
    assert server.calls() == [
        ("list", {"labelSelector": "goodmem.ai/credentials=true", "fieldSelector": "metadata.name=openai"})
    ]


async def test_reader_tells_unlabelled_from_missing_without_receiving_the_data() -> None:
    server = FakeApiServer({"plain": secret_body({"api-key": VALUE}, {"app": "x"}, "plain")})
    reader = server.reader()
    got = await reader.read("team-a", "plain")
    assert got == SecretData({"app": "x"}, {})
    assert [c[0] for c in server.calls()] == ["list", "get"], "a metadata-only GET, after the list found nothing"
    assert server.requests[1][2] == METADATA_ONLY
    assert await reader.read("team-a", "absent") is None


async def test_reader_errors_name_the_secret_and_status_only() -> None:
    with pytest.raises(RuntimeError, match=r"^reading Secret team-a/openai failed: HTTP 403$"):
        await FakeApiServer({}, status=403).reader().read("team-a", "openai")


@pytest.mark.parametrize(
    "error",
    [aiohttp.ClientConnectionError(f"cannot connect {VALUE}"), TimeoutError(VALUE), LoginFailed(VALUE)],
    ids=lambda e: type(e).__name__,
)
async def test_reader_transport_errors_name_the_secret_and_the_error_class_only(error: Exception) -> None:
    class Failing(FakeApiServer):
        async def get(self, path: str, **_: Any) -> Answer:
            raise error

    with pytest.raises(RuntimeError) as caught:
        await Failing({}).reader().read("team-a", "openai")
    assert str(caught.value) == f"reading Secret team-a/openai failed: {type(error).__name__}"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__, "no chained message either"


async def test_reader_refuses_an_answer_that_is_not_json() -> None:
    class Proxy(FakeApiServer):
        async def get(self, path: str, **_: Any) -> Answer:
            return Answer(200, b"<html>login</html>")

    with pytest.raises(RuntimeError, match=r"^reading Secret team-a/openai failed: the answer is not JSON$"):
        await Proxy({}).reader().read("team-a", "openai")


@pytest.mark.parametrize("name", ["..", "a/../../configmaps/x", "x,metadata.namespace=other", "Upper", "-a", ""])
async def test_reader_asks_nothing_for_a_name_no_secret_can_have(name: str) -> None:
    """Not a DNS-1123 name: no Secret exists by it, and it must reach neither a URL path nor a field selector."""
    server = FakeApiServer({})
    assert await server.reader().read("team-a", name) is None
    assert server.requests == []


# -- the watch -------------------------------------------------------------------------------------


async def test_the_secret_watch_asks_the_api_server_for_labelled_secrets_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf's own listing code, with our settings: the selector is in the URL of the Secret listing (the watch
    request is built from the same settings), and not in the LLM listing."""
    from kopf._cogs.clients import fetching
    from kopf._cogs.structs.references import Resource

    urls: list[str] = []

    async def get(*, url: str, **_: Any) -> dict[str, Any]:
        urls.append(url)
        return {"items": [], "metadata": {"resourceVersion": "1"}}

    monkeypatch.setattr(fetching.api, "get", get)
    settings = kopf.OperatorSettings()
    select_credential_secrets(settings)
    secrets = Resource("", "v1", "secrets", kind="Secret", singular="secret", namespaced=True)
    llms = Resource("goodmem.ai", "v1alpha1", "llms", kind="LLM", singular="llm", namespaced=True)
    for resource in (secrets, llms):
        async for _ in fetching.fetch_objs(
            settings=settings, resource=resource, namespace=None, logger=logging.getLogger("test")
        ):
            pass
    from urllib.parse import parse_qs, urlsplit

    selectors = [parse_qs(urlsplit(url).query).get("labelSelector") for url in urls]
    assert selectors == [["goodmem.ai/credentials=true"], None], urls


# -- the Secret handler: gaining and losing the label ------------------------------------------------


class CountingReconciler:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.last_observed: dict[str, float] = {}

    async def reconcile(self, obj: Any, *, trigger: str) -> Outcome:
        self.calls.append(f"{obj.name}:{trigger}")
        return Outcome(status={})


def llm(name: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "goodmem.ai/v1alpha1",
        "kind": "LLM",
        "metadata": {"name": name, "namespace": "team-a", "uid": f"u-{name}"},
        "spec": {"credentials": {"apiKey": {"secretKeyRef": {"name": secret, "key": "api-key"}}}},
    }


async def test_secret_handler_reconciles_users_when_the_label_comes_and_goes() -> None:
    fallback = Reader(SecretData({}, {}))
    rec = CountingReconciler()
    rt = Runtime(reconciler=rec, secret_cache=SecretCache(fallback=fallback), status_writer=None)  # type: ignore[arg-type]
    registry = build_registry()
    [handler] = [h for h in registry._watching.get_all_handlers() if h.id == "secret-changed"]
    rt.index.observe(llm("a", "openai"), deleted=False)

    async def event(kind: str | None, body: dict[str, Any]) -> list[str]:
        before = len(rec.calls)
        await handler.fn(event={"type": kind}, namespace="team-a", name="openai", body=body, memo=Memo(runtime=rt))
        await rt.requeue.idle()  # the handler submits the users to the requeue, which reconciles them
        return rec.calls[before:]

    await rt.secret_cache.read("team-a", "openai")  # the LLM's first reconcile found it unlabelled
    assert rt.secret_cache.peek("team-a", "openai") is NOT_LABELLED
    assert await event("ADDED", secret_body({"api-key": "v1"}, LABELLED)) == ["a:secret"], "labelled: heals at once"
    assert await event("MODIFIED", secret_body({"api-key": "v1"}, {**LABELLED, "x": "y"})) == [], "no data change"
    assert await event("MODIFIED", secret_body({"api-key": "v2"}, LABELLED)) == ["a:secret"], "rotation"
    assert await event("DELETED", secret_body({"api-key": "v2"}, LABELLED)) == ["a:secret"], "label removed"
    assert rt.secret_cache.peek("team-a", "openai") is None, "its data is dropped"
    await rt.secret_cache.read("team-a", "openai")
    assert await event(None, secret_body({"api-key": "v3"}, LABELLED)) == ["a:secret"], (
        "labelled while the watch was away: the re-list shows it"
    )
    assert await event("MODIFIED", secret_body({"api-key": "v3"}, {})) == ["a:secret"], "an unlabelled body refuses too"
    assert rt.secret_cache.peek("team-a", "openai") is NOT_LABELLED
    await rt.requeue.aclose()


async def test_closing_the_cache_closes_its_readers_connections() -> None:
    class ClosingReader(Reader):
        closed = False

        async def aclose(self) -> None:
            self.closed = True

    reader = ClosingReader(None)
    await SecretCache(fallback=reader).aclose()
    assert reader.closed
    await SecretCache(fallback=Reader(None)).aclose()  # a reader without connections: nothing to close
    await SecretCache().aclose()
