"""Connections: under which registry identity (URL, key, limits) each LLM's entry lives.

One `RegistryClient` per connection, each with its own rate and concurrency limits and circuit breaker, so a
registry that is down or slow behind one connection costs nothing to LLMs on another. Three sources:

- the operator's own settings (`--base-url` and its key, re-read from the key file when it changes): `Operator`;
- `GoodMemConnection` objects (namespaced; key Secret in their own namespace);
- `ClusterGoodMemConnection` objects (cluster-scoped; key Secret in the operator's namespace; usable by the
  namespaces their `namespaceSelector` selects).

Which one an LLM uses (`binding`, pure): `spec.connectionRef`; else the one recorded in `status.connection` (an
entry lives with the principal that created it, so the choice is kept); else, for an LLM that never had an entry,
the namespace's `GoodMemConnection` named `default`, else the `ClusterGoodMemConnection` named `default` if it
selects the namespace, else the operator's own. An LLM with an entry but no record (made before connections
existed) stays with the operator's own.

`Connections.route` gives an LLM's reconcile its client, or `Unavailable` with a precise reason. The kopf glue
feeds this module the connection objects (`apply`, `remove`), their Secrets (`secret_changed`) and the namespaces'
labels; it decides nothing about the registry itself (that is the LLM client's and the engine's).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from goodmem_operator.api.connections import (
    DEFAULT_CONNECTION_NAME,
    OPERATOR_CONNECTION,
    ClusterGoodMemConnectionSpec,
    GoodMemConnectionSpec,
    NamespaceSelector,
)
from goodmem_operator.api.types import CLUSTER_CONNECTION_KIND, CONNECTION_KIND
from goodmem_operator.conditions import Reason
from goodmem_operator.registry import (
    Breaker,
    Forbidden,
    RegistryClient,
    RegistryError,
    Unauthorized,
    Unreachable,
    tls_context,
)
from goodmem_operator.secrets import CredentialError, SecretReader, read_secret_key

log = logging.getLogger("goodmem_operator.connections")


class Unavailable(Exception):
    """The LLM's connection cannot be used now: missing, not ready, or not for this namespace. Heals by itself
    (the glue requeues the LLMs of a connection that appears or turns Ready)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, order=True)
class ConnKey:
    """A connection's identity: kind, namespace ("" for the cluster-scoped kind and the operator's own), name."""

    kind: str
    namespace: str
    name: str

    @property
    def label(self) -> str:
        """As written in an LLM's status.connection."""
        return OPERATOR_CONNECTION if self.kind == OPERATOR_CONNECTION else f"{self.kind}/{self.name}"

    def __str__(self) -> str:
        if self.kind == OPERATOR_CONNECTION:
            return "the operator's own registry settings"
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.kind} {self.name}{where}"


OPERATOR = ConnKey(OPERATOR_CONNECTION, "", "")


def parse_label(label: str, namespace: str) -> ConnKey | None:
    """status.connection of an LLM in `namespace` back to a key (None if it names no connection we know)."""
    if label == OPERATOR_CONNECTION:
        return OPERATOR
    kind, _, name = label.partition("/")
    if not name:
        return None
    if kind == CONNECTION_KIND:
        return ConnKey(kind, namespace, name)
    if kind == CLUSTER_CONNECTION_KIND:
        return ConnKey(kind, "", name)
    return None


def ref_key(ref: Mapping[str, Any], namespace: str) -> ConnKey:
    """spec.connectionRef of an LLM in `namespace`."""
    kind = str(ref.get("kind") or CONNECTION_KIND)
    return ConnKey(kind, namespace if kind == CONNECTION_KIND else "", str(ref.get("name") or ""))


def bound_key(namespace: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> ConnKey | None:
    """The connection an LLM is bound to for good: its spec's ref, or its recorded choice, or the operator's own for
    an LLM that had an entry before connections existed. None: not bound yet (the default order decides)."""
    ref = spec.get("connectionRef")
    if isinstance(ref, Mapping):
        return ref_key(ref, namespace)
    recorded = status.get("connection")
    if isinstance(recorded, str) and recorded:
        return parse_label(recorded, namespace)
    if status.get("llmId"):
        return OPERATOR
    return None


def binding(
    namespace: str,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    usable_default: Callable[[ConnKey, str], bool],
) -> ConnKey:
    """The connection an LLM uses now. `usable_default(key, namespace)`: whether that default connection exists (and
    is not being deleted) and, for the cluster-scoped kind, selects the namespace."""
    bound = bound_key(namespace, spec, status)
    if bound is not None:
        return bound
    for candidate in (
        ConnKey(CONNECTION_KIND, namespace, DEFAULT_CONNECTION_NAME),
        ConnKey(CLUSTER_CONNECTION_KIND, "", DEFAULT_CONNECTION_NAME),
    ):
        if usable_default(candidate, namespace):
            return candidate
    return OPERATOR


@dataclass(frozen=True)
class Route:
    """What an LLM's reconcile gets: the client to call, and the connection's label for its status."""

    key: ConnKey
    client: RegistryClient

    @property
    def label(self) -> str:
        return self.key.label


@dataclass(frozen=True)
class Limits:
    """A connection's request settings (the operator's where the connection leaves them unset)."""

    timeout: float
    rate: float
    concurrency: int


@dataclass
class Probe:
    """The last key check of a connection: Ready or not, why, when."""

    ready: bool = False
    reason: str = Reason.UNREACHABLE
    message: str = "not checked yet"
    at: float = 0.0  # monotonic; 0: never
    wall: str = ""  # RFC 3339


@dataclass
class Connection:
    """What the operator holds of one connection object: its spec, its client and key, and its last probe."""

    key: ConnKey
    uid: str = ""
    generation: int = 0
    status: dict[str, Any] = field(default_factory=dict)  # as last written (the glue's), for its next delta
    spec: GoodMemConnectionSpec | None = None
    selector: NamespaceSelector | None = None  # the cluster-scoped kind's
    deleting: bool = False
    client: RegistryClient | None = None
    settings: tuple[Any, ...] = ()  # what the client was built from (base URL, CA digest, limits)
    api_key: str = field(default="", repr=False)
    key_digest: str = ""  # of the key in use, to tell a rotation (never the key)
    secrets: tuple[tuple[str, str], ...] = ()  # (namespace, name) of the key and CA Secrets
    problem: tuple[str, str] | None = None  # (reason, message) found before any registry call
    probe: Probe = field(default_factory=Probe)
    principal: str | None = None
    rotated_at: str | None = None  # RFC 3339 of the last key change seen

    @property
    def ready(self) -> bool:
        return self.problem is None and self.probe.ready and self.client is not None


@dataclass(frozen=True)
class Applied:
    """What `apply` (or a Secret change) did to a connection: for its status and Events, and the glue's requeue."""

    connection: Connection
    rotated: bool = False  # the key changed (not the first read)
    became_ready: bool = False


def _key_of(conn: Connection) -> str:
    """A connection's client reads its key through this at each request: a rotated key is used at once."""
    return conn.api_key


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class KeyFile:
    """The operator's own key, from its file when it has one: re-read when the file changes (a Secret volume swaps
    it in place), so a rotated key is used by the next request. Without a file: the key given at startup."""

    def __init__(self, key: str, path: Path | None = None) -> None:
        self._key = key
        self.path = path
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def changed(self) -> bool:
        """Re-read the file if it changed; whether the key did (a missing or empty file keeps the last key)."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            key = self.path.read_text(encoding="utf-8").strip() if self.path else ""
        except OSError:
            return False
        if not key or key == self._key:
            return False
        self._key = key
        return True

    def __call__(self) -> str:
        return self._key


ClientFactory = Callable[[str, Callable[[], str], Limits, ssl.SSLContext], RegistryClient]


@runtime_checkable
class Router(Protocol):
    """What the LLM client asks of connections (`Connections`, or `SingleRegistry` for one registry)."""

    def route(
        self, namespace: str, spec: Mapping[str, Any], status: Mapping[str, Any], *, releasing: bool = False
    ) -> Route: ...

    def learned_principal(self, key: ConnKey, owner_id: str) -> None: ...

    async def aclose(self) -> None: ...


class SingleRegistry:
    """One registry client for every LLM (the operator's own settings, without connection objects): tests, tools."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def route(
        self, namespace: str, spec: Mapping[str, Any], status: Mapping[str, Any], *, releasing: bool = False
    ) -> Route:
        return Route(OPERATOR, self.client)

    def learned_principal(self, key: ConnKey, owner_id: str) -> None:
        return None

    async def aclose(self) -> None:
        await self.client.aclose()


class Connections:
    """Every connection the operator knows, with one registry client each, and the namespaces' labels."""

    def __init__(
        self,
        operator_client: RegistryClient,
        secrets: SecretReader,
        *,
        operator_namespace: str,
        defaults: Limits,
        observer: Any = None,
        cluster_scoped: bool = True,
        client_factory: ClientFactory | None = None,
        operator_key: KeyFile | None = None,
    ) -> None:
        self.operator = operator_client
        self.operator_key = operator_key
        #: told which connection's registry answers again after failures (main: its LLMs that failed retry now)
        self.on_recovered: Callable[[ConnKey], object] | None = None
        operator_client.breaker.on_recovered = functools.partial(self._recovered, OPERATOR)
        self.secrets = secrets
        self.operator_namespace = operator_namespace
        self.defaults = defaults
        self.observer = observer
        #: whether ClusterGoodMemConnections are served (not by an operator limited to named namespaces)
        self.cluster_scoped = cluster_scoped
        self._factory = client_factory or self._client
        self.objects: dict[ConnKey, Connection] = {}
        self.namespace_labels: dict[str, dict[str, str]] = {}
        #: whether the namespaces' labels are followed (the operator may list/watch namespaces)
        self.namespace_labels_known = True
        self._closing: set[asyncio.Task[None]] = set()

    # -- clients ----------------------------------------------------------------------------------------------

    def _client(self, base_url: str, key: Callable[[], str], limits: Limits, verify: ssl.SSLContext) -> RegistryClient:
        return RegistryClient(
            base_url,
            key,
            timeout=limits.timeout,
            concurrency=limits.concurrency,
            rate=limits.rate,
            observer=self.observer,
            verify=verify,
            breaker=Breaker(),
        )

    def _retire(self, client: RegistryClient | None) -> None:
        """Close a client that was replaced, once requests in flight through it are done (they hold its pool)."""
        if client is None:
            return

        async def close() -> None:
            await asyncio.sleep(max(60.0, self.defaults.timeout * 2))
            await client.aclose()

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        for task in list(self._closing):
            task.cancel()
        for conn in self.objects.values():
            if conn.client is not None:
                await conn.client.aclose()
        await self.operator.aclose()

    # -- routing an LLM ---------------------------------------------------------------------------------------

    def selects(self, conn: Connection, namespace: str) -> bool:
        labels = self.namespace_labels.get(namespace)
        if conn.selector is None or labels is None:
            return False
        return conn.selector.matches(labels)

    def usable_default(self, key: ConnKey, namespace: str) -> bool:
        conn = self.objects.get(key)
        if conn is None or conn.deleting:
            return False
        return key.kind != CLUSTER_CONNECTION_KIND or self.selects(conn, namespace)

    def binding(self, namespace: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> ConnKey:
        return binding(namespace, spec, status, self.usable_default)

    def route(
        self, namespace: str, spec: Mapping[str, Any], status: Mapping[str, Any], *, releasing: bool = False
    ) -> Route:
        """The client an LLM's reconcile uses, or Unavailable. `releasing` (its deletion): a connection being
        deleted, or whose key Secret is gone, still serves with the key it last had, so that a namespace being
        deleted (its connections, Secrets and LLMs at once) can release its entries."""
        key = self.binding(namespace, spec, status)
        if key == OPERATOR:
            return Route(OPERATOR, self.operator)
        if key.kind == CLUSTER_CONNECTION_KIND and not self.cluster_scoped:
            raise Unavailable(
                Reason.CONNECTION_NOT_FOUND,
                f"{key} cannot be used: this operator watches named namespaces only (--namespace) and does not "
                "serve ClusterGoodMemConnections; use a GoodMemConnection in the namespace",
            )
        conn = self.objects.get(key)
        if conn is None:
            raise Unavailable(
                Reason.CONNECTION_NOT_FOUND, f"{key} not found; the LLM waits for it (nothing was sent to a registry)"
            )
        if key.kind == CLUSTER_CONNECTION_KIND and not self.selects(conn, namespace):
            why = (
                "its namespaceSelector"
                if self.namespace_labels_known
                else "the operator may not list/watch namespaces, so it cannot read their labels"
            )
            raise Unavailable(
                Reason.CONNECTION_NOT_ALLOWED,
                f"{key} does not select namespace {namespace} ({why}); nothing was sent to a registry",
            )
        if releasing and conn.client is not None:
            return Route(key, conn.client)
        if conn.deleting:
            raise Unavailable(Reason.CONNECTION_NOT_READY, f"{key} is being deleted")
        if not conn.ready or conn.client is None:
            raise Unavailable(
                Reason.CONNECTION_NOT_READY,
                f"{key} is not ready ({conn.problem[0] if conn.problem else conn.probe.reason}: see its status); "
                "the LLM goes on when it is",
            )
        return Route(key, conn.client)

    def learned_principal(self, key: ConnKey, owner_id: str) -> None:
        """The registry named the principal a connection's key acts as (the owner of an entry it created)."""
        conn = self.objects.get(key)
        if conn is not None and owner_id:
            conn.principal = owner_id

    # -- the connection objects (from the kopf glue) ----------------------------------------------------------

    def uses_secret(self, namespace: str, name: str) -> list[ConnKey]:
        """The connections whose key or CA bundle is this Secret."""
        return [conn.key for conn in self.objects.values() if (namespace, name) in conn.secrets]

    def _secret_namespace(self, key: ConnKey) -> str:
        return key.namespace or self.operator_namespace

    async def apply(self, key: ConnKey, body: Mapping[str, Any]) -> Applied:
        """A connection object was created, changed or resumed: read its key (and CA), (re)build its client when its
        settings changed, check the key with the registry."""
        conn = self.objects.setdefault(key, Connection(key))
        meta = body.get("metadata") or {}
        conn.generation = int(meta.get("generation") or 0)
        conn.uid = str(meta.get("uid") or "")
        conn.status = dict(body.get("status") or {})
        conn.deleting = bool(meta.get("deletionTimestamp"))
        model = ClusterGoodMemConnectionSpec if key.kind == CLUSTER_CONNECTION_KIND else GoodMemConnectionSpec
        try:
            spec = model.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            conn.problem = (Reason.INVALID_SPEC, f"spec is invalid: {detail}")
            return Applied(conn)
        conn.spec = spec
        conn.selector = spec.namespace_selector if isinstance(spec, ClusterGoodMemConnectionSpec) else None
        where = self._secret_namespace(key)
        refs = [spec.api_key_secret_ref, *([spec.ca_bundle_secret_ref] if spec.ca_bundle_secret_ref else [])]
        conn.secrets = tuple((where, ref.name) for ref in refs)
        return await self.refresh(conn)

    async def refresh(self, conn: Connection) -> Applied:
        """Re-read the connection's Secrets, rebuild its client if needed, and probe the key."""
        was_ready = conn.ready
        spec = conn.spec
        if spec is None:
            return Applied(conn)
        where = self._secret_namespace(conn.key)
        rotated = False
        try:
            key = await read_secret_key(self.secrets, where, spec.api_key_secret_ref.name, spec.api_key_secret_ref.key)
            pem = ""
            if spec.ca_bundle_secret_ref is not None:
                ref = spec.ca_bundle_secret_ref
                pem = await read_secret_key(self.secrets, where, ref.name, ref.key)
        except CredentialError as exc:
            conn.problem = (exc.reason, str(exc).replace("the LLM heals", "the connection heals"))
            conn.probe = Probe()
            return Applied(conn)
        try:
            verify = tls_context(pem)  # shared by every connection that trusts the same
        except ValueError as exc:
            bundle = spec.ca_bundle_secret_ref.name if spec.ca_bundle_secret_ref is not None else ""
            conn.problem = (Reason.INVALID_CA_BUNDLE, f"Secret {where}/{bundle}: {exc}")
            return Applied(conn)
        digest = _digest(key)
        if conn.key_digest and digest != conn.key_digest:
            rotated = True
            conn.rotated_at = _now()
        conn.key_digest = digest
        conn.api_key = key
        limits = Limits(
            timeout=spec.request_timeout_seconds or self.defaults.timeout,
            rate=spec.requests_per_second or self.defaults.rate,
            concurrency=spec.max_concurrency or self.defaults.concurrency,
        )
        settings = (spec.base_url, _digest(pem), limits)
        if conn.client is None or settings != conn.settings:
            self._retire(conn.client)
            conn.client = self._factory(spec.base_url, functools.partial(_key_of, conn), limits, verify)
            conn.client.breaker.on_recovered = functools.partial(self._recovered, conn.key)
            conn.settings = settings
        conn.problem = None
        await self.check(conn)
        return Applied(conn, rotated=rotated, became_ready=conn.ready and not was_ready)

    async def check(self, conn: Connection) -> Probe:
        """One authenticated call that matches nothing: whether the registry accepts the connection's key."""
        if conn.client is None:
            return conn.probe
        try:
            await conn.client.probe()
        except Unauthorized:
            result = Probe(False, Reason.UNAUTHORIZED, "the registry refused the key (401)")
        except Forbidden:
            result = Probe(False, Reason.FORBIDDEN, "the registry accepted the key but refused to list entries (403)")
        except Unreachable as exc:
            result = Probe(False, Reason.UNREACHABLE, str(exc))
        except RegistryError as exc:
            result = Probe(False, Reason.REGISTRY_ERROR, str(exc))
        else:
            result = Probe(True, Reason.CONNECTED, f"the registry at {conn.client.base_url} accepted the key")
        result.at = time.monotonic()
        result.wall = _now()
        conn.probe = result
        return result

    async def secret_changed(self, namespace: str, name: str) -> list[Applied]:
        """A Secret some connection uses changed (or went away): re-read it for each of them."""
        return [await self.refresh(self.objects[key]) for key in self.uses_secret(namespace, name)]

    def remove(self, key: ConnKey) -> None:
        """The connection object is gone (its finalizer released): close its client."""
        conn = self.objects.pop(key, None)
        if conn is not None:
            self._retire(conn.client)

    def operator_key_changed(self) -> bool:
        """Whether the operator's own key file changed since last asked (the key is re-read at once)."""
        return self.operator_key is not None and self.operator_key.changed()

    def _recovered(self, key: ConnKey) -> None:
        if self.on_recovered is not None:
            log.info("%s: the registry answers again; the LLMs that failed meanwhile retry now", key)
            self.on_recovered(key)

    def clients(self) -> list[tuple[ConnKey, RegistryClient]]:
        """Every registry client the operator holds: its own, and each connection's."""
        out = [(OPERATOR, self.operator)]
        out += [(key, conn.client) for key, conn in self.objects.items() if conn.client is not None]
        return out

    async def probe_open_breakers(self) -> None:
        """One key check through each client whose breaker says one is due (open: one per backoff step; degraded
        by failures or 429s: one per 5 s): a registry that is back is noticed without waiting for an LLM's own
        retry; its first answer tells `on_recovered`, so the LLMs retry at once instead of waiting out the backoff
        they built up."""
        due = [client for _key, client in self.clients() if client.breaker.probe_due()]
        # At once, each with its own timeout: one registry that hangs never delays another's probe.
        await asyncio.gather(*(self._probe(client) for client in due))

    @staticmethod
    async def _probe(client: RegistryClient) -> None:
        with contextlib.suppress(RegistryError):  # still down: the breaker waits longer for the next probe
            await client.probe()
        # Answered: the breaker told `on_recovered` itself (Breaker.success).

    async def watch_breakers(self, period: float = 1.0) -> None:
        """`probe_open_breakers` every `period` seconds, until cancelled; a round still waiting on a hanging
        registry does not hold up the next (each client's breaker spaces its own probes)."""
        rounds: set[asyncio.Task[None]] = set()
        try:
            while True:
                await asyncio.sleep(period)
                task = asyncio.get_running_loop().create_task(self.probe_open_breakers())
                rounds.add(task)
                task.add_done_callback(rounds.discard)
        finally:
            for task in rounds:
                task.cancel()

    async def watch_operator_key(self, on_change: Callable[[], object], period: float = 2.0) -> None:
        """Poll the operator's key file; `on_change` when the key changed (the next request already uses it)."""
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(Exception):
                if self.operator_key_changed():
                    log.info("goodmem-operator: the registry key file changed; the next request uses the new key")
                    on_change()
