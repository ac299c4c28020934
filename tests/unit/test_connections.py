"""Connections without a registry: which connection an LLM uses, selectors, the key file, the glue's decisions."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest

from goodmem_operator import connection_handlers as glue
from goodmem_operator.api.connections import NamespaceSelector
from goodmem_operator.api.types import CLUSTER_CONNECTION_KIND, CONNECTION_KIND
from goodmem_operator.conditions import Reason
from goodmem_operator.connections import (
    OPERATOR,
    Breaker,
    Connections,
    ConnKey,
    KeyFile,
    Limits,
    Unavailable,
    binding,
    parse_label,
)
from goodmem_operator.handlers import Runtime
from goodmem_operator.registry import RegistryClient
from goodmem_operator.secrets import CREDENTIALS_LABEL, SecretCache, SecretData

pytestmark = pytest.mark.unit

NS_DEFAULT = ConnKey(CONNECTION_KIND, "team-a", "default")
CLUSTER_DEFAULT = ConnKey(CLUSTER_CONNECTION_KIND, "", "default")


def nothing(key: ConnKey, namespace: str) -> bool:
    return False


@pytest.mark.parametrize(
    ("spec", "status", "usable", "expected"),
    [
        # An explicit ref wins over everything, whatever exists.
        (
            {"connectionRef": {"kind": CONNECTION_KIND, "name": "x"}},
            {},
            nothing,
            ConnKey(CONNECTION_KIND, "team-a", "x"),
        ),
        (
            {"connectionRef": {"kind": CLUSTER_CONNECTION_KIND, "name": "shared"}},
            {"connection": "Operator"},
            nothing,
            ConnKey(CLUSTER_CONNECTION_KIND, "", "shared"),
        ),
        # The recorded choice stays, even when a default appears later.
        ({}, {"connection": "Operator", "llmId": "x"}, lambda k, ns: True, OPERATOR),
        ({}, {"connection": "ClusterGoodMemConnection/default"}, nothing, CLUSTER_DEFAULT),
        # An entry made before connections existed stays with the operator's own.
        ({}, {"llmId": "11111111-1111-1111-1111-111111111111"}, lambda k, ns: True, OPERATOR),
        # Unbound: the namespace's default, else the cluster's, else the operator's.
        ({}, {}, lambda k, ns: True, NS_DEFAULT),
        ({}, {}, lambda k, ns: k == CLUSTER_DEFAULT, CLUSTER_DEFAULT),
        ({}, {}, nothing, OPERATOR),
    ],
)
def test_binding_order(spec: dict[str, Any], status: dict[str, Any], usable: Any, expected: ConnKey) -> None:
    assert binding("team-a", spec, status, usable) == expected


def test_labels_round_trip() -> None:
    for key in (OPERATOR, NS_DEFAULT, CLUSTER_DEFAULT):
        assert parse_label(key.label, "team-a") == key
    assert parse_label("Nonsense/x", "team-a") is None and parse_label("GoodMemConnection", "team-a") is None


@pytest.mark.parametrize(
    ("selector", "labels", "selected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "a", "x": "y"}, True),
        ({"matchLabels": {"team": "a"}}, {"team": "b"}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold", "silver"]}]},
            {"tier": "gold"},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["gold"]}]}, {}, False),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}, {}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gold"]}]}, {"tier": "gold"}, False),
        ({"matchExpressions": [{"key": "pci", "operator": "Exists"}]}, {"pci": ""}, True),
        ({"matchExpressions": [{"key": "pci", "operator": "DoesNotExist"}]}, {"pci": "1"}, False),
    ],
)
def test_namespace_selector(selector: dict[str, Any], labels: dict[str, str], selected: bool) -> None:
    assert NamespaceSelector.model_validate(selector).matches(labels) is selected


def test_key_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    path.write_text("first\n")
    key = KeyFile("first", path)
    assert key() == "first" and not key.changed()
    path.write_text("second\n")
    os.utime(path, ns=(1, 2))  # a new mtime even on a coarse clock
    assert key.changed() and key() == "second"
    assert not key.changed()
    path.write_text("")  # an empty or missing file keeps the last key
    os.utime(path, ns=(3, 4))
    assert not key.changed() and key() == "second"
    path.unlink()
    assert not key.changed() and key() == "second"


async def test_the_client_sends_the_current_key_with_each_request(tmp_path: Path) -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["x-api-key"])
        return httpx.Response(200, json={"llms": []})

    path = tmp_path / "api-key"
    path.write_text("old-key")
    key = KeyFile("old-key", path)
    client = RegistryClient("http://registry.test", key, transport=httpx.MockTransport(answer))
    await client.probe()
    path.write_text("new-key")
    os.utime(path, ns=(5, 6))
    key.changed()
    await client.probe()
    await client.aclose()
    assert seen == ["old-key", "new-key"]


class Secrets:
    def __init__(self, data: dict[tuple[str, str], dict[str, str]]) -> None:
        self.data = data

    async def read(self, namespace: str, name: str) -> SecretData | None:
        found = self.data.get((namespace, name))
        return None if found is None else SecretData({CREDENTIALS_LABEL: "true"}, dict(found))


class FakeClient:
    """Stands for a registry client: answers the key check as told."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.base_url = "http://registry.test"
        self.closed = False
        self.breaker = Breaker()

    async def probe(self) -> None:
        if not self.ok:
            from goodmem_operator.registry import Unauthorized

            raise Unauthorized("401")

    async def aclose(self) -> None:
        self.closed = True


def connections(secrets: Secrets, client: FakeClient | None = None) -> Connections:
    made = client or FakeClient()
    return Connections(
        FakeClient(),  # type: ignore[arg-type]
        secrets,
        operator_namespace="ops",
        defaults=Limits(5.0, 10.0, 4),
        client_factory=lambda *args: made,  # type: ignore[arg-type,return-value]
    )


def body(name: str, namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": "u", "generation": 2},
        "spec": {"baseUrl": "http://registry.test", "apiKeySecretRef": {"name": "k", "key": "api-key"}, **spec},
    }


async def test_route_refuses_precisely() -> None:
    conns = connections(Secrets({("team-a", "k"): {"api-key": "A"}, ("ops", "k"): {"api-key": "S"}}))
    ref = {"connectionRef": {"kind": CONNECTION_KIND, "name": "x"}}
    with pytest.raises(Unavailable) as missing:
        conns.route("team-a", ref, {})
    assert missing.value.reason == Reason.CONNECTION_NOT_FOUND
    await conns.apply(ConnKey(CONNECTION_KIND, "team-a", "x"), body("x"))
    assert conns.route("team-a", ref, {}).label == "GoodMemConnection/x"
    # Another namespace cannot name it: a ref is looked up in the LLM's own namespace.
    with pytest.raises(Unavailable):
        conns.route("team-b", ref, {})
    cluster = ConnKey(CLUSTER_CONNECTION_KIND, "", "shared")
    await conns.apply(cluster, body("shared", namespace="", namespaceSelector={"matchLabels": {"team": "a"}}))
    conns.namespace_labels.update({"team-a": {"team": "a"}, "team-b": {}})
    cref = {"connectionRef": {"kind": CLUSTER_CONNECTION_KIND, "name": "shared"}}
    assert conns.route("team-a", cref, {}).key == cluster
    with pytest.raises(Unavailable) as refused:
        conns.route("team-b", cref, {})
    assert refused.value.reason == Reason.CONNECTION_NOT_ALLOWED


async def test_operator_limited_to_named_namespaces_serves_no_cluster_connection() -> None:
    conns = connections(Secrets({("ops", "k"): {"api-key": "S"}}))
    conns.cluster_scoped = False
    with pytest.raises(Unavailable) as refused:
        conns.route("team-a", {"connectionRef": {"kind": CLUSTER_CONNECTION_KIND, "name": "s"}}, {})
    assert "--namespace" in refused.value.message


async def test_a_secret_problem_or_a_refused_key_makes_it_not_ready_and_deletion_still_releases() -> None:
    secrets = Secrets({})
    client = FakeClient(ok=False)
    conns = connections(secrets, client)
    key = ConnKey(CONNECTION_KIND, "team-a", "default")
    applied = await conns.apply(key, body("default"))
    assert not applied.connection.ready and applied.connection.problem[0] == "SecretNotFound"  # type: ignore[index]
    secrets.data[("team-a", "k")] = {"api-key": "A"}
    [again] = await conns.secret_changed("team-a", "k")
    assert not again.connection.ready and again.connection.probe.reason == Reason.UNAUTHORIZED
    with pytest.raises(Unavailable) as waiting:
        conns.route("team-a", {}, {"connection": "GoodMemConnection/default"})
    assert waiting.value.reason == Reason.CONNECTION_NOT_READY
    client.ok = True
    secrets.data[("team-a", "k")] = {"api-key": "B"}
    [rotated] = await conns.secret_changed("team-a", "k")
    assert rotated.rotated and rotated.became_ready
    # The key Secret goes (a namespace being deleted): new work waits, a release still goes through.
    del secrets.data[("team-a", "k")]
    await conns.secret_changed("team-a", "k")
    bound = {"connection": "GoodMemConnection/default"}
    with pytest.raises(Unavailable):
        conns.route("team-a", {}, bound)
    assert conns.route("team-a", {}, bound, releasing=True).key == key


async def test_the_key_never_shows_in_what_a_connection_reports() -> None:
    conns = connections(Secrets({("team-a", "k"): {"api-key": "SENTINEL-key-value"}}), FakeClient(ok=False))
    applied = await conns.apply(NS_DEFAULT, body("default"))
    assert "SENTINEL" not in repr(applied.connection) and "SENTINEL" not in applied.connection.probe.message


# -- the glue -------------------------------------------------------------------------------------------------


class FakeRequeue:
    def __init__(self) -> None:
        self.added: list[tuple[str, str]] = []

    def add(self, key: tuple[str, str], trigger: str) -> None:
        self.added.append(key)


def runtime(conns: Connections, llms: list[dict[str, Any]]) -> Runtime:
    rt = Runtime(reconciler=None, secret_cache=SecretCache(), status_writer=None, connections=conns)  # type: ignore[arg-type]
    for llm in llms:
        rt.index.observe(llm, deleted=False)
    rt.requeue = FakeRequeue()  # type: ignore[assignment]
    return rt


def llm(name: str, namespace: str = "team-a", ready: str = "False", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": name},
        "spec": {},
        "status": {"conditions": [{"type": "Ready", "status": ready}, {"type": "Synced", "status": ready}], **status},
    }


async def test_a_connection_turning_ready_requeues_only_its_waiting_llms() -> None:
    conns = connections(Secrets({("team-a", "k"): {"api-key": "A"}}))
    await conns.apply(NS_DEFAULT, body("default"))
    rt = runtime(
        conns,
        [
            llm("waiting"),
            llm("ready", ready="True", connection="GoodMemConnection/default"),
            llm("on-operator", connection="Operator"),
            llm("elsewhere", namespace="team-b"),
        ],
    )
    assert glue.requeue_waiting(rt, NS_DEFAULT) == 1
    assert rt.requeue.added == [("team-a", "waiting")]  # type: ignore[attr-defined]


async def test_status_lists_users_and_never_the_key() -> None:
    conns = connections(Secrets({("team-a", "k"): {"api-key": "SENTINEL-xyz"}}))
    applied = await conns.apply(NS_DEFAULT, body("default"))
    conns.learned_principal(NS_DEFAULT, "0000-principal")
    rt = runtime(conns, [llm("a", connection="GoodMemConnection/default"), llm("b", connection="Operator")])
    status = glue.connection_status(rt, applied.connection, None)
    assert status["llmCount"] == 1 and status["users"] == ["team-a/a"] and status["principal"] == "0000-principal"
    assert status["conditions"][0]["status"] == "True" and status["observedGeneration"] == 2
    assert "SENTINEL" not in repr(status)


async def test_deleting_a_connection_waits_while_llms_are_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    conns = connections(Secrets({("team-a", "k"): {"api-key": "A"}}))
    await conns.apply(NS_DEFAULT, body("default"))
    rt = runtime(conns, [])
    listed = [llm("bound", connection="GoodMemConnection/default"), llm("other", connection="Operator")]

    async def list_llms(namespace: str | None) -> list[dict[str, Any]]:
        assert namespace == "team-a"
        return listed

    rt.list_llms = list_llms
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(glue, "_post", lambda rt, body, type_, reason, message: posted.append((reason, message)))
    memo: Any = type("M", (), {"runtime": rt})()
    patch = kopf.Patch()
    with pytest.raises(kopf.TemporaryError):
        await glue.connection_released(
            body=kopf.Body({**body("default"), "kind": CONNECTION_KIND}), patch=patch, memo=memo
        )
    assert patch["status"]["users"] == ["team-a/bound"] and posted[0][0] == "InUse"
    assert NS_DEFAULT in conns.objects
    listed.pop(0)
    await glue.connection_released(
        body=kopf.Body({**body("default"), "kind": CONNECTION_KIND}), patch=kopf.Patch(), memo=memo
    )
    assert NS_DEFAULT not in conns.objects


async def test_connections_that_trust_the_same_share_one_tls_context() -> None:
    """A TLS context holds its CA store (about 0.8 MB): one per distinct trust, not one per connection."""
    from goodmem_devcluster.pki import CertificateAuthority

    pem = CertificateAuthority("shared-ca").cert_pem.decode()
    secrets = Secrets({(ns, "k"): {"api-key": ns, "ca": pem} for ns in ("a", "b", "c", "d")})
    seen: list[Any] = []

    def factory(base_url: str, key: Any, limits: Limits, verify: Any) -> FakeClient:
        seen.append(verify)
        return FakeClient()

    conns = Connections(
        FakeClient(),  # type: ignore[arg-type]
        secrets,
        operator_namespace="ops",
        defaults=Limits(5.0, 10.0, 4),
        client_factory=factory,  # type: ignore[arg-type]
    )
    ca = {"caBundleSecretRef": {"name": "k", "key": "ca"}}
    for ns, spec in (("a", {}), ("b", {}), ("c", ca), ("d", ca)):
        await conns.apply(ConnKey(CONNECTION_KIND, ns, "default"), body("default", namespace=ns, **spec))
    assert seen[0] is seen[1] and seen[2] is seen[3] and seen[0] is not seen[2]


async def test_a_registry_back_after_an_outage_is_probed_and_its_llms_retry() -> None:
    """While a client's breaker is open, one key check per backoff step goes out (not waiting for an LLM's own
    retry); the first answer closes it and the connection's LLMs are requeued at once."""
    answers: list[int] = []

    def registry(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers.pop(0) if answers else 200, json={"llms": []})

    client = RegistryClient("http://registry.test", "k", transport=httpx.MockTransport(registry))
    conns = Connections(client, Secrets({}), operator_namespace="ops", defaults=Limits(5.0, 10.0, 4))
    recovered: list[ConnKey] = []
    conns.on_recovered = recovered.append
    for _ in range(client.breaker.threshold):
        client.breaker.failure()
    assert client.breaker.open
    await conns.probe_open_breakers()
    assert recovered == [], "not due yet: the breaker waits its first step"
    client.breaker.opened_at = -100.0  # the step is over
    answers.append(503)
    await conns.probe_open_breakers()
    assert recovered == [] and client.breaker.open and client.breaker.delay == 2 * client.breaker.base
    client.breaker.opened_at = -100.0
    await conns.probe_open_breakers()
    assert recovered == [OPERATOR] and not client.breaker.open
    await client.aclose()


def test_recovery_is_told_after_failures_or_429s_once_per_interval() -> None:
    """The first answer after 5xx, timeouts or 429s (the circuit need not have opened) tells on_recovered, at most
    once per recovery_interval: a flaky registry cannot make it a retry storm."""
    now = [0.0]
    breaker = Breaker(clock=lambda: now[0])
    told: list[float] = []
    breaker.on_recovered = lambda: told.append(now[0])
    breaker.success()
    assert told == [], "nothing to recover from"
    breaker.throttled()
    breaker.success()
    assert told == [0.0]
    now[0] = 3.0
    breaker.failure()
    breaker.success()
    assert told == [0.0], "within the interval: not told again yet..."
    now[0] = 10.5
    breaker.success()
    assert told == [0.0, 10.5], "...but the next answer after it is"


def test_a_degraded_client_is_probed_every_few_seconds_until_it_answers() -> None:
    now = [0.0]
    breaker = Breaker(clock=lambda: now[0])
    assert not breaker.probe_due(), "a healthy registry is never probed by itself"
    breaker.throttled()
    assert breaker.probe_due() and not breaker.probe_due(), "one probe, then a pause"
    now[0] = breaker.recovery_interval / 2
    assert breaker.probe_due()
    breaker.success()
    now[0] += breaker.recovery_interval
    assert not breaker.probe_due()


async def test_an_unselected_namespace_cannot_hold_a_cluster_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """An LLM that names a ClusterGoodMemConnection from a namespace it does not select uses nothing: it must not keep
    the platform's connection from being deleted. One in a selected namespace does."""
    conns = connections(Secrets({("ops", "k"): {"api-key": "S"}}))
    key = ConnKey(CLUSTER_CONNECTION_KIND, "", "shared")
    shared = body("shared", namespace="", namespaceSelector={"matchLabels": {"team": "a"}})
    await conns.apply(key, shared)
    conns.namespace_labels.update({"team-a": {"team": "a"}, "intruder": {}})
    ref = {"connectionRef": {"kind": CLUSTER_CONNECTION_KIND, "name": "shared"}}
    intruder = {**llm("squatter", namespace="intruder"), "spec": ref}
    member = {**llm("user", namespace="team-a"), "spec": ref}
    listed = [intruder]

    async def list_llms(namespace: str | None) -> list[dict[str, Any]]:
        return listed

    rt = runtime(conns, [])
    rt.list_llms = list_llms
    monkeypatch.setattr(glue, "_post", lambda *args: None)
    memo: Any = type("M", (), {"runtime": rt})()
    deleted = kopf.Body({**shared, "kind": CLUSTER_CONNECTION_KIND})
    listed.append(member)
    with pytest.raises(kopf.TemporaryError):
        await glue.connection_released(body=deleted, patch=kopf.Patch(), memo=memo)
    listed.remove(member)
    await glue.connection_released(body=deleted, patch=kopf.Patch(), memo=memo)
    assert key not in conns.objects


async def test_a_hanging_registry_does_not_delay_another_connections_probe() -> None:
    hang = asyncio.Event()

    async def hanging(request: httpx.Request) -> httpx.Response:
        await hang.wait()
        return httpx.Response(200, json={"llms": []})

    slow = RegistryClient("http://slow.test", "k", transport=httpx.MockTransport(hanging))
    fast = RegistryClient(
        "http://fast.test", "k", transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"llms": []}))
    )
    conns = Connections(slow, Secrets({}), operator_namespace="ops", defaults=Limits(5.0, 10.0, 4))
    told: list[str] = []
    slow.breaker.on_recovered = lambda: told.append("slow")
    fast.breaker.on_recovered = lambda: told.append("fast")
    conns.clients = lambda: [(OPERATOR, slow), (NS_DEFAULT, fast)]  # type: ignore[method-assign]
    for client in (slow, fast):
        client.breaker.throttled()
    task = asyncio.create_task(conns.probe_open_breakers())
    for _ in range(100):
        if told:
            break
        await asyncio.sleep(0.01)
    assert told == ["fast"], "the fast registry's recovery did not wait for the hanging one"
    hang.set()
    await task
    assert told == ["fast", "slow"]
    await slow.aclose()
    await fast.aclose()
