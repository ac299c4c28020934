"""kopf glue for GoodMemConnection and ClusterGoodMemConnection, and for the namespaces' labels.

Thin like handlers.py: connections.py holds the connections and decides which one an LLM uses; this module feeds it
the objects' events, writes their status and Events, requeues the LLMs a change concerns, and holds a connection's
finalizer while LLMs are bound to it. Nothing here deletes a registry entry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from goodmem_operator import conditions as cond
from goodmem_operator.api.connections import (
    CLUSTER_CONNECTION_PLURAL,
    CONNECTION_PLURAL,
    USERS_SHOWN,
)
from goodmem_operator.api.types import CLUSTER_CONNECTION_KIND, CONNECTION_KIND, GROUP, VERSION
from goodmem_operator.conditions import Reason
from goodmem_operator.connections import Applied, Connection, ConnKey, bound_key
from goodmem_operator.handlers import Memo, Runtime
from goodmem_operator.reconcile import Trigger

log = logging.getLogger("goodmem_operator.connections")

#: How often a connection's timer runs: a connection that is not Ready is checked again at each run; a Ready one
#: once per drift interval. Also the delay between two looks at a connection that LLMs still use, when deleted.
CHECK_PERIOD = 30.0
IN_USE_RETRY = 10.0
NAMESPACE_HANDLER = "namespace-labels"  # its success lines are dropped from kopf's log (main.QuietIndexLog)

#: Lists a kind's objects in a namespace (None: every namespace, or a cluster-scoped kind) from the API server: the
#: deletion check and the startup seed read the truth, not the watch's latest news.
Lister = Callable[[str | None], Awaitable[list[dict[str, Any]]]]


@dataclass(frozen=True)
class Listers:
    """How the startup seed reads the connection objects (a namespace, or None: all) and the namespaces."""

    connections: Lister
    cluster_connections: Lister
    namespaces: Lister


#: How long a restart waits for the connections' key checks: one tenant's hanging registry costs the others this much
#: at most (its own LLMs may show ConnectionNotReady until its check answers).
SEED_TIMEOUT = 5.0


async def seed(rt: Runtime, namespaces: tuple[str, ...]) -> None:
    """At startup, before any watch: the namespaces' labels and the connection objects that exist, applied (key
    read and checked, at once for all of them, for SEED_TIMEOUT at most). Without it an LLM resumed before its
    connection would show ConnectionNotFound (or NotAllowed, without its namespace's labels) for a moment on every
    restart. What cannot be listed (rights) is left to the watches, logged."""
    listers: Listers | None = rt.connection_listers
    connections = rt.connections
    if listers is None or connections is None:
        return
    bodies: list[tuple[str, Mapping[str, Any]]] = []
    try:
        if connections.cluster_scoped:
            for ns in await listers.namespaces(None) if connections.namespace_labels_known else []:
                meta = ns.get("metadata") or {}
                connections.namespace_labels[str(meta.get("name"))] = dict(meta.get("labels") or {})
            bodies += [(CLUSTER_CONNECTION_KIND, b) for b in await listers.cluster_connections(None)]
            bodies += [(CONNECTION_KIND, b) for b in await listers.connections(None)]
        else:
            for ns_name in namespaces:
                bodies += [(CONNECTION_KIND, b) for b in await listers.connections(ns_name)]
    except Exception as exc:  # never the message: it could quote anything
        log.warning(
            "goodmem-operator: could not list connections at startup (%s); the watches bring them", type(exc).__name__
        )
    work = [connections.apply(key_of(kind, body), body) for kind, body in bodies]
    if work:
        done, pending = await asyncio.wait([asyncio.ensure_future(w) for w in work], timeout=SEED_TIMEOUT)
        for task in pending:
            task.cancel()
        log.info("goodmem-operator: %d connection(s) at startup, %d checked", len(work), len(done))


def key_of(kind: str, body: Mapping[str, Any]) -> ConnKey:
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "") if kind == CONNECTION_KIND else ""
    return ConnKey(kind, namespace, str(meta.get("name") or ""))


def _binds(rt: Runtime, key: ConnKey, body: Mapping[str, Any]) -> bool:
    """Whether this LLM is bound to the connection for good (its ref, or its recorded choice). For a
    ClusterGoodMemConnection, only in a namespace it selects (or with an entry made through it): an LLM of another
    namespace that names it uses nothing, and must not hold the platform's connection from being deleted."""
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    if key.namespace and namespace != key.namespace:
        return False
    status = body.get("status") or {}
    if bound_key(namespace, body.get("spec") or {}, status) != key:
        return False
    if key.kind != CLUSTER_CONNECTION_KIND or status.get("connection") == key.label:
        return True
    conn = rt.connections.objects.get(key) if rt.connections is not None else None
    return conn is not None and rt.connections is not None and rt.connections.selects(conn, namespace)


def users_in_index(rt: Runtime, key: ConnKey) -> list[str]:
    """namespace/name of the LLMs bound to the connection, as the operator last saw them."""
    return sorted(f"{ns}/{name}" for (ns, name), body in rt.index.items() if _binds(rt, key, body))


def connection_status(rt: Runtime, conn: Connection, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The connection's status from what the operator holds of it."""
    if conn.problem is not None:
        ready = cond.ready_false(*conn.problem)
    elif conn.probe.ready:
        ready = cond.ready_true(Reason.CONNECTED, conn.probe.message)
    else:
        ready = cond.ready_false(conn.probe.reason, conn.probe.message)
    users = users_in_index(rt, conn.key)
    status: dict[str, Any] = {
        "observedGeneration": conn.generation,
        "conditions": cond.dump(
            cond.set_conditions((previous or {}).get("conditions"), [ready], conn.generation or None)
        ),
        "llmCount": len(users),
        "users": users[:USERS_SHOWN],
    }
    if conn.principal:
        status["principal"] = conn.principal
    if conn.probe.wall:
        status["lastProbeTime"] = conn.probe.wall
    if conn.rotated_at:
        status["keyRotatedTime"] = conn.rotated_at
    return status


def _delta(status: Mapping[str, Any], previous: Mapping[str, Any] | None) -> dict[str, Any]:
    before = previous or {}
    out: dict[str, Any] = {}
    for name, value in status.items():
        if name == "conditions":
            if not cond.same(before.get(name), value):
                out[name] = value
        elif before.get(name) != value:
            out[name] = value
    return out


def _post(rt: Runtime, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """An Event on the connection; into a namespace being deleted (the API server refuses it), the log instead."""
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    if namespace and rt.terminating(namespace):
        log.info(
            "%s/%s: %s %s: %s (no Event: the namespace is being deleted)",
            namespace,
            meta.get("name"),
            type_,
            reason,
            message,
        )
        return
    kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message)


def requeue_waiting(rt: Runtime, key: ConnKey | None = None, namespace: str | None = None) -> int:
    """Requeue, due now, the LLMs that use (or would use) this connection, or that live in this namespace, and are
    not Ready and Synced: they wait for it (ConnectionNotFound/NotReady/NotAllowed), failed with its key
    (Unauthorized), or failed while its registry was down."""
    count = 0
    connections = rt.connections
    if connections is None:
        return 0
    for (ns, name), body in rt.index.items():
        if namespace is not None and ns != namespace:
            continue
        if key is not None and connections.binding(ns, body.get("spec") or {}, body.get("status") or {}) != key:
            continue
        conditions = (body.get("status") or {}).get("conditions")
        settled = all((cond.find(conditions, c) or {}).get("status") == "True" for c in (cond.READY, cond.SYNCED))
        if not settled and not (body.get("metadata") or {}).get("deletionTimestamp"):
            rt.requeue.add((ns, name), Trigger.CONNECTION)
            count += 1
    return count


def _announce(rt: Runtime, applied: Applied, body: Mapping[str, Any]) -> None:
    """Events for what changed, and the LLMs waiting on it requeued."""
    conn = applied.connection
    if applied.rotated:
        _post(rt, body, "Normal", "KeyRotated", "the registry key changed; the next request uses the new one")
        log.info("%s: the registry key changed", conn.key)
    if applied.became_ready:
        _post(rt, body, "Normal", Reason.CONNECTED, conn.probe.message)
    if applied.rotated or applied.became_ready:
        requeue_waiting(rt, conn.key)


def reference(conn: Connection) -> dict[str, Any]:
    """What an Event about the connection needs of its body (kopf.event reads only these)."""
    meta = {"name": conn.key.name, "uid": conn.uid}
    if conn.key.namespace:
        meta["namespace"] = conn.key.namespace
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": conn.key.kind, "metadata": meta}


StatusWriter = Callable[[ConnKey, dict[str, Any]], Awaitable[None]]


def connection_secret_changed(write: StatusWriter) -> Callable[[Runtime, str, str], Awaitable[None]]:
    """What handlers.secret_changed calls when a Secret a connection uses changed (a rotated key, a new CA, a
    Secret gone): the connection re-reads it, is checked again, its status written, its waiting LLMs requeued."""

    async def changed(rt: Runtime, namespace: str, name: str) -> None:
        if rt.connections is None:
            return
        for applied in await rt.connections.secret_changed(namespace, name):
            conn = applied.connection
            status = connection_status(rt, conn, conn.status)
            delta = _delta(status, conn.status)
            if delta:
                try:
                    await write(conn.key, delta)
                    conn.status.update(delta)
                except Exception as exc:  # the timer writes it again; never the message (it could quote anything)
                    log.warning("%s: could not write status: %s", conn.key, type(exc).__name__)
            body = reference(conn)
            if not conn.ready:
                reason, message = conn.problem or (conn.probe.reason, conn.probe.message)
                _post(rt, body, "Warning", reason, message)
            _announce(rt, applied, body)

    return changed


async def connection_changed(body: kopf.Body, patch: kopf.Patch, memo: Memo, **_: Any) -> None:
    """create, resume, update of either kind: read its Secrets, (re)build its client, check the key."""
    rt = memo.runtime
    assert rt.connections is not None, "main builds the connections with the runtime"
    key = key_of(str(body.get("kind")), body)
    applied = await rt.connections.apply(key, body)
    previous = body.get("status") or {}
    delta = _delta(connection_status(rt, applied.connection, previous), previous)
    for name, value in delta.items():
        patch.status[name] = value
    applied.connection.status.update(delta)
    if not applied.connection.ready:
        conn = applied.connection
        reason, message = conn.problem or (conn.probe.reason, conn.probe.message)
        _post(rt, body, "Warning", reason, message)
    _announce(rt, applied, body)


async def connection_timer(body: kopf.Body, patch: kopf.Patch, memo: Memo, **_: Any) -> None:
    """Every CHECK_PERIOD: a connection that is not Ready is checked again (its Secrets re-read), a Ready one once
    per drift interval; the users in its status are brought up to date."""
    rt = memo.runtime
    assert rt.connections is not None
    key = key_of(str(body.get("kind")), body)
    conn = rt.connections.objects.get(key)
    if conn is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return
    due = not conn.ready or time.monotonic() - conn.probe.at >= rt.drift_interval
    if due:
        applied = await rt.connections.refresh(conn)
        _announce(rt, applied, body)
    previous = body.get("status") or {}
    delta = _delta(connection_status(rt, conn, previous), previous)
    for name, value in delta.items():
        patch.status[name] = value
    conn.status = {**previous, **delta}


async def connection_released(body: kopf.Body, patch: kopf.Patch, memo: Memo, **_: Any) -> None:
    """Deletion: held while any LLM is bound to the connection (asked of the API server, not the watch), the users
    listed in status and an InUse Event; then the client is closed. No registry entry is touched."""
    rt = memo.runtime
    assert rt.connections is not None
    key = key_of(str(body.get("kind")), body)
    conn = rt.connections.objects.get(key)
    if conn is not None:
        conn.deleting = True
    if rt.list_llms is None:
        raise kopf.PermanentError("no way to list LLMs")  # main always gives one
    llms = await rt.list_llms(key.namespace or None)
    users = sorted(
        f"{(b.get('metadata') or {}).get('namespace')}/{(b.get('metadata') or {}).get('name')}"
        for b in llms
        if _binds(rt, key, b)
    )
    if users:
        shown = ", ".join(users[:USERS_SHOWN]) + (
            f" and {len(users) - USERS_SHOWN} more" if len(users) > USERS_SHOWN else ""
        )
        message = f"{len(users)} LLM(s) still use this connection: {shown}; it is deleted once none does"
        patch.status["llmCount"] = len(users)
        patch.status["users"] = users[:USERS_SHOWN]
        patch.status["conditions"] = cond.dump(
            cond.set_conditions(
                (body.get("status") or {}).get("conditions"), [cond.ready_false("InUse", message)], None
            )
        )
        _post(rt, body, "Warning", "InUse", message)
        raise kopf.TemporaryError(message, delay=IN_USE_RETRY)
    rt.connections.remove(key)
    log.info("%s: deleted (no LLM uses it; registry entries untouched)", key)


async def namespace_seen(event: kopf.RawEvent, body: kopf.Body, memo: Memo, **_: Any) -> None:
    """A namespace's labels (for ClusterGoodMemConnection selectors): when they change, its waiting LLMs retry."""
    rt = memo.runtime
    if rt.connections is None:
        return
    name = str((body.get("metadata") or {}).get("name") or "")
    labels = rt.connections.namespace_labels
    if event.get("type") == "DELETED":
        labels.pop(name, None)
        return
    new = dict((body.get("metadata") or {}).get("labels") or {})
    if labels.get(name) != new:
        known = name in labels
        labels[name] = new
        if known:
            requeue_waiting(rt, namespace=name)


def register(registry: kopf.OperatorRegistry, *, cluster_scoped: bool, namespace_labels: bool = True) -> None:
    """The connection handlers; the cluster-scoped kind only for an operator that watches every namespace (one limited
    to named namespaces has no rights to it), and the namespaces' labels only where it may list/watch namespaces."""
    plurals = [(CONNECTION_KIND, CONNECTION_PLURAL)]
    if cluster_scoped:
        plurals.append((CLUSTER_CONNECTION_KIND, CLUSTER_CONNECTION_PLURAL))
    if cluster_scoped and namespace_labels:
        kopf.on.event("", "v1", "namespaces", id=NAMESPACE_HANDLER, registry=registry)(namespace_seen)
    for kind, plural in plurals:
        for on in (kopf.on.create, kopf.on.update, kopf.on.resume):
            on(GROUP, VERSION, plural, id=f"{kind}-apply", registry=registry)(connection_changed)
        kopf.timer(GROUP, VERSION, plural, id=f"{kind}-check", interval=CHECK_PERIOD, registry=registry)(
            connection_timer
        )
        kopf.on.delete(GROUP, VERSION, plural, id=f"{kind}-release", registry=registry)(connection_released)
