"""Connections over real HTTP: each LLM's calls go out under its connection's key, to its connection's registry.

The emulator derives a principal (owner id) from each key, so "the entry lands under the right owner" is
checked against what the registry stored. A second emulator plays a registry that is down.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest

from goodmem_devcluster.pki import CertificateAuthority
from goodmem_emulator import Emulator, owner_id_for_key
from goodmem_operator.api.types import CLUSTER_CONNECTION_KIND, CONNECTION_KIND
from goodmem_operator.conditions import Reason
from goodmem_operator.connections import (
    OPERATOR,
    Breaker,
    Connections,
    ConnKey,
    KeyFile,
    Limits,
)
from goodmem_operator.reconcile import Reconciler, ReconcileSettings, Result
from goodmem_operator.registry import RegistryClient

from .conftest import API_KEY, FakeSecrets, after, make_llm

pytestmark = pytest.mark.integration

KEY_A = "team-a-registry-key"
KEY_B = "team-b-registry-key"
KEY_SHARED = "platform-shared-key"


@pytest.fixture
async def multi() -> AsyncIterator[Emulator]:
    emu = Emulator(api_keys=[API_KEY, KEY_A, KEY_B, KEY_SHARED])
    await emu.start("127.0.0.1", 0)
    try:
        yield emu
    finally:
        await emu.stop()


@pytest.fixture
async def connections(multi: Emulator, secrets: FakeSecrets) -> AsyncIterator[Connections]:
    operator = RegistryClient(multi.base_url, API_KEY, timeout=5.0)
    conns = Connections(operator, secrets, operator_namespace="ops", defaults=Limits(2.0, 100.0, 8))
    conns.namespace_labels.update({"team-a": {"team": "a"}, "team-b": {"team": "b"}, "ops": {}})
    try:
        yield conns
    finally:
        await conns.aclose()


def connection(namespace: str, name: str, base_url: str, secret: str = "registry", **spec: Any) -> dict[str, Any]:
    meta = {"name": name, "uid": f"uid-{namespace}-{name}", "generation": 1}
    if namespace:
        meta["namespace"] = namespace
    return {
        "metadata": meta,
        "spec": {"baseUrl": base_url, "apiKeySecretRef": {"name": secret, "key": "api-key"}, **spec},
    }


def reconciler(conns: Connections, secrets: FakeSecrets) -> Reconciler:
    return Reconciler(conns, secrets, ReconcileSettings(cluster_name="it", fingerprint_key=b"k", backoff_base=0.01))


async def test_each_namespace_writes_under_its_own_key(
    multi: Emulator, connections: Connections, secrets: FakeSecrets
) -> None:
    secrets.data[("team-a", "registry")] = {"api-key": KEY_A}
    secrets.data[("team-b", "registry")] = {"api-key": KEY_B}
    for ns in ("team-a", "team-b"):
        applied = await connections.apply(
            ConnKey(CONNECTION_KIND, ns, "default"), connection(ns, "default", multi.base_url)
        )
        assert applied.connection.ready, applied.connection.probe
    rec = reconciler(connections, secrets)
    a = make_llm(namespace="team-a", name="chat")
    b = make_llm(namespace="team-b", name="chat", spec={"endpointUrl": "https://b.example.test/v1"})
    c = make_llm(namespace="team-c", name="chat", spec={"endpointUrl": "https://c.example.test/v1"})
    outcomes = [await rec.reconcile(obj) for obj in (a, b, c)]
    assert [o.result for o in outcomes] == [Result.SUCCESS] * 3
    owners = {e["displayName"] and e["llmId"]: e["ownerId"] for e in multi.records()}
    assert owners[outcomes[0].status["llmId"]] == owner_id_for_key(KEY_A)
    assert owners[outcomes[1].status["llmId"]] == owner_id_for_key(KEY_B)
    assert owners[outcomes[2].status["llmId"]] == owner_id_for_key(API_KEY)  # no connection: the operator's own
    assert [o.status["connection"] for o in outcomes] == [
        "GoodMemConnection/default",
        "GoodMemConnection/default",
        "Operator",
    ]
    # The registry told the principal each key acts as.
    assert connections.objects[ConnKey(CONNECTION_KIND, "team-a", "default")].principal == owner_id_for_key(KEY_A)


async def test_team_b_cannot_reach_team_as_entry_through_its_key(
    multi: Emulator, connections: Connections, secrets: FakeSecrets
) -> None:
    secrets.data[("team-a", "registry")] = {"api-key": KEY_A}
    secrets.data[("team-b", "registry")] = {"api-key": KEY_B}
    for ns in ("team-a", "team-b"):
        await connections.apply(ConnKey(CONNECTION_KIND, ns, "default"), connection(ns, "default", multi.base_url))
    rec = reconciler(connections, secrets)
    a = make_llm(namespace="team-a", name="chat")
    done = await rec.reconcile(a)
    llm_id = done.status["llmId"]
    # team-b names team-a's entry: its key may not even read it (the registry answers 403 or 404).
    b = make_llm(namespace="team-b", name="steal", spec={"llmId": llm_id, "displayName": "Stolen"})
    refused = await rec.reconcile(b)
    assert refused.result != Result.SUCCESS
    entry = next(e for e in multi.records() if e["llmId"] == llm_id)
    assert entry["displayName"] == "Test LLM" and entry["ownerId"] == owner_id_for_key(KEY_A)


async def test_bound_llm_keeps_its_connection_when_a_default_appears(
    multi: Emulator, connections: Connections, secrets: FakeSecrets
) -> None:
    rec = reconciler(connections, secrets)
    obj = make_llm(namespace="team-a", name="chat")
    first = await rec.reconcile(obj)
    assert first.status["connection"] == "Operator"
    secrets.data[("team-a", "registry")] = {"api-key": KEY_A}
    await connections.apply(
        ConnKey(CONNECTION_KIND, "team-a", "default"), connection("team-a", "default", multi.base_url)
    )
    again = await rec.reconcile(after(obj, first))
    assert again.result in (Result.SUCCESS, Result.NOOP) and again.status.get("connection", "Operator") == "Operator"
    assert len(multi.records()) == 1  # no second entry under the new principal
    # An LLM that had an entry before connections existed (llmId, no status.connection) stays with the operator.
    legacy = after(obj, first)
    legacy_status = {k: v for k, v in legacy.status.items() if k != "connection"}
    assert connections.binding("team-a", legacy.spec, legacy_status) == OPERATOR


async def test_missing_or_unready_connection_refuses_and_heals(
    multi: Emulator, connections: Connections, secrets: FakeSecrets
) -> None:
    rec = reconciler(connections, secrets)
    obj = make_llm(namespace="team-a", name="chat", spec={"connectionRef": {"kind": CONNECTION_KIND, "name": "mine"}})
    missing = await rec.reconcile(obj)
    assert missing.condition("Ready")["reason"] == Reason.CONNECTION_NOT_FOUND
    assert multi.records() == []
    key = ConnKey(CONNECTION_KIND, "team-a", "mine")
    secrets.data[("team-a", "registry")] = {"api-key": "not-a-registry-key"}
    applied = await connections.apply(key, connection("team-a", "mine", multi.base_url))
    assert not applied.connection.ready and applied.connection.probe.reason == Reason.UNAUTHORIZED
    waiting = await rec.reconcile(after(obj, missing))
    assert waiting.condition("Ready")["reason"] == Reason.CONNECTION_NOT_READY
    assert "Unauthorized" in waiting.condition("Ready")["message"]
    secrets.data[("team-a", "registry")] = {"api-key": KEY_A}
    [rotated] = await connections.secret_changed("team-a", "registry")
    assert rotated.rotated and rotated.became_ready and rotated.connection.rotated_at
    healed = await rec.reconcile(after(obj, waiting))
    assert healed.result == Result.SUCCESS, healed.conditions if hasattr(healed, "conditions") else healed
    assert multi.records()[0]["ownerId"] == owner_id_for_key(KEY_A)


async def test_cluster_connection_serves_only_the_namespaces_it_selects(
    multi: Emulator, connections: Connections, secrets: FakeSecrets
) -> None:
    secrets.data[("ops", "shared")] = {"api-key": KEY_SHARED}  # in the operator's namespace
    key = ConnKey(CLUSTER_CONNECTION_KIND, "", "default")
    body = connection("", "default", multi.base_url, secret="shared", namespaceSelector={"matchLabels": {"team": "a"}})
    assert (await connections.apply(key, body)).connection.ready
    rec = reconciler(connections, secrets)
    selected = await rec.reconcile(make_llm(namespace="team-a", name="x"))
    assert selected.status["connection"] == "ClusterGoodMemConnection/default"
    # Not selected: the cluster default does not apply; the operator's own settings do.
    unselected = await rec.reconcile(make_llm(namespace="team-b", name="x", spec={"endpointUrl": "https://b.test/v1"}))
    assert unselected.status["connection"] == "Operator"
    # Named explicitly from an unselected namespace: refused, nothing sent.
    before = len(multi.records())
    named = make_llm(
        namespace="team-b",
        name="y",
        spec={"connectionRef": {"kind": CLUSTER_CONNECTION_KIND, "name": "default"}, "endpointUrl": "https://y/v1"},
    )
    refused = await rec.reconcile(named)
    assert refused.condition("Ready")["reason"] == Reason.CONNECTION_NOT_ALLOWED
    assert len(multi.records()) == before
    owners = {e["ownerId"] for e in multi.records()}
    assert owners == {owner_id_for_key(KEY_SHARED), owner_id_for_key(API_KEY)}


async def test_a_registry_that_is_down_does_not_slow_another_connection(
    multi: Emulator, connections: Connections, secrets: FakeSecrets
) -> None:
    """team-a's registry stops answering (a port nobody listens on, then a hung one); team-b's creates go on, and
    team-a's calls fail fast once its breaker is open."""
    down = Emulator(api_keys=[KEY_A])
    await down.start("127.0.0.1", 0)
    secrets.data[("team-a", "registry")] = {"api-key": KEY_A}
    secrets.data[("team-b", "registry")] = {"api-key": KEY_B}
    key_a = ConnKey(CONNECTION_KIND, "team-a", "default")
    await connections.apply(key_a, connection("team-a", "default", down.base_url, requestTimeoutSeconds=2))
    await connections.apply(
        ConnKey(CONNECTION_KIND, "team-b", "default"), connection("team-b", "default", multi.base_url)
    )
    down.set_faults(latency_ms=5000)  # every answer late: timeouts
    rec = reconciler(connections, secrets)
    finished: list[str] = []

    async def run(obj: Any) -> Any:
        outcome = await rec.reconcile(obj)
        finished.append(obj.namespace)
        return outcome

    def llms(ns: str) -> list[Any]:
        return [make_llm(namespace=ns, name=f"x{i}", spec={"endpointUrl": f"https://{ns}-{i}/v1"}) for i in range(8)]

    try:
        a_task = asyncio.gather(*(run(o) for o in llms("team-a")))
        b_outcomes = await asyncio.gather(*(run(o) for o in llms("team-b")))
        a_outcomes = await a_task
        # The breaker is open now: at most one call per backoff step goes out (the probe); the next fails at once.
        await rec.reconcile(make_llm(namespace="team-a", name="probe"))
        late = await rec.reconcile(make_llm(namespace="team-a", name="late"))
    finally:
        await down.stop()
    assert all(o.result == Result.SUCCESS for o in b_outcomes)
    assert all(o.result != Result.SUCCESS for o in a_outcomes)
    assert late.result != Result.SUCCESS and "not sent" in late.condition("Ready")["message"]
    breaker = connections.objects[key_a].client.breaker  # type: ignore[union-attr]
    assert breaker.open and breaker.failures >= breaker.threshold
    # team-b did not wait for team-a's timeouts (the order, not a time: timing figures live in bench/).
    assert finished[:8] == ["team-b"] * 8
    assert {e["ownerId"] for e in multi.records()} == {owner_id_for_key(KEY_B)}


def test_breaker_opens_probes_once_per_step_and_closes() -> None:
    now = [0.0]
    breaker = Breaker(threshold=3, base=1.0, cap=4.0, clock=lambda: now[0])
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.allow() and not breaker.open
    breaker.failure()
    assert breaker.open and not breaker.allow()
    now[0] = 1.0
    assert breaker.allow()  # the one probe of this step
    assert not breaker.allow()  # and only one
    breaker.failure()  # the probe failed: twice as long
    now[0] = 2.5
    assert not breaker.allow()
    now[0] = 3.0
    assert breaker.allow()
    breaker.failure()
    now[0] = 3.0 + 4.0  # capped at 4
    assert breaker.allow()
    breaker.success()
    assert not breaker.open and breaker.allow() and breaker.allow()


async def test_the_operators_own_key_file_rotates_without_a_restart(
    multi: Emulator, secrets: FakeSecrets, tmp_path: Any
) -> None:
    """The operator's key, mounted as a file: the registry learns a new key, the file changes, the old key is
    revoked; the next request uses the new key, and the key-file watch tells the waiting LLMs to retry."""
    path = tmp_path / "api-key"
    path.write_text(API_KEY)
    key = KeyFile(API_KEY, path)
    conns = Connections(
        RegistryClient(multi.base_url, key, timeout=5.0),
        secrets,
        operator_namespace="ops",
        defaults=Limits(2.0, 100.0, 8),
        operator_key=key,
    )
    rec = reconciler(conns, secrets)
    woken: list[bool] = []
    watch = asyncio.create_task(conns.watch_operator_key(lambda: woken.append(True), period=0.05))
    try:
        first = await rec.reconcile(make_llm(namespace="ops-a", name="one"))
        assert first.result == Result.SUCCESS
        multi.add_key("rotated-operator-key", same_as=API_KEY)
        path.write_text("rotated-operator-key\n")
        os.utime(path, ns=(10, 20))
        for _ in range(100):
            if woken:
                break
            await asyncio.sleep(0.05)
        assert woken, "the key-file watch noticed the new key"
        multi.revoke_key(API_KEY)
        second = await rec.reconcile(make_llm(namespace="ops-a", name="two", spec={"endpointUrl": "https://two/v1"}))
        assert second.result == Result.SUCCESS
        assert {e["ownerId"] for e in multi.records()} == {owner_id_for_key(API_KEY)}  # one principal throughout
    finally:
        watch.cancel()
        await conns.aclose()


async def test_a_private_registrys_ca_bundle(secrets: FakeSecrets, tmp_path: Any) -> None:
    """A registry served over TLS with a certificate from a private CA: the connection trusts it only with its CA
    bundle (caBundleSecretRef); without it the key check fails (Unreachable); a bundle that is not PEM is
    InvalidCABundle, with no request sent."""
    ca = CertificateAuthority("private-registry-ca")
    serving = ca.issue_serving(dns=["localhost"], ips=["127.0.0.1"])
    serving.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    tls = Emulator(api_keys=[KEY_A])
    await tls.start("127.0.0.1", 0, ssl_context=context)
    conns = Connections(
        RegistryClient(tls.base_url, API_KEY), secrets, operator_namespace="ops", defaults=Limits(2.0, 100.0, 8)
    )
    try:
        assert tls.base_url.startswith("https://")
        secrets.data[("team-a", "registry")] = {"api-key": KEY_A, "ca.crt": ca.cert_pem.decode()}
        secrets.data[("team-a", "not-pem")] = {"ca.crt": "not a certificate"}
        plain = ConnKey(CONNECTION_KIND, "team-a", "plain")
        refused = await conns.apply(plain, connection("team-a", "plain", tls.base_url))
        assert not refused.connection.ready and refused.connection.probe.reason == Reason.UNREACHABLE
        trusted = ConnKey(CONNECTION_KIND, "team-a", "trusted")
        body = connection("team-a", "trusted", tls.base_url, caBundleSecretRef={"name": "registry", "key": "ca.crt"})
        assert (await conns.apply(trusted, body)).connection.ready
        rec = reconciler(conns, secrets)
        ref = {"connectionRef": {"kind": CONNECTION_KIND, "name": "trusted"}}
        done = await rec.reconcile(make_llm(namespace="team-a", name="tls", spec=ref))
        assert done.result == Result.SUCCESS and tls.records()[0]["ownerId"] == owner_id_for_key(KEY_A)
        bad = ConnKey(CONNECTION_KIND, "team-a", "bad")
        bad_body = connection("team-a", "bad", tls.base_url, caBundleSecretRef={"name": "not-pem", "key": "ca.crt"})
        broken = await conns.apply(bad, bad_body)
        assert broken.connection.problem is not None and broken.connection.problem[0] == Reason.INVALID_CA_BUNDLE
    finally:
        await conns.aclose()
        await tls.stop()
