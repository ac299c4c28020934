"""Leader election over a `coordination.k8s.io/v1` Lease: one replica works, the others stand by.

client-go's (and controller-runtime's) algorithm, written for the operator's event loop:

- A candidate reads the Lease. It takes it when there is none (create), when its holder is empty (released on a
  clean shutdown), or when the record has not changed for `leaseDurationSeconds` by the candidate's OWN monotonic
  clock: expiry is judged from when this process last saw the record change, never by comparing the holder's
  `renewTime` with the local wall clock, so clock skew between nodes cannot hand the Lease over early.
- Every write is conditional (the record's `metadata.resourceVersion`): of two candidates only one wins, the other
  gets a 409 and stays a candidate.
- The leader renews every `retry_period`. If it has not renewed for `renew_deadline` (< lease duration), or finds
  another holder, it has lost: the caller stops working at once (main exits non-zero), before any standby can
  consider the Lease expired (lease duration after the last renewal it saw).
- A clean shutdown releases the Lease (empty holder, duration 1 s) after the work has stopped, so a standby takes
  over at its next retry instead of waiting for the Lease to expire.

The identity is the pod name plus a random suffix: a restarted container of the same pod is a new candidate and
waits like any other, instead of believing it still holds a Lease its previous life held.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
import signal
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn, Protocol

import aiohttp.web

from goodmem_operator.kube import KubeApi

log = logging.getLogger("goodmem_operator.leader")

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"


class LeaseError(Exception):
    """The API server refused or failed a Lease request (its HTTP status only)."""


@dataclass(frozen=True)
class Timings:
    """Seconds. lease duration > renew deadline > retry period (config.Config checks it)."""

    lease_duration: int = 10
    renew_deadline: float = 8.0
    retry_period: float = 2.0


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec as the election reads and writes it, with the resourceVersion it was read at."""

    holder: str
    lease_duration: int
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0
    resource_version: str = ""

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> LeaseRecord:
        spec = obj.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=str((obj.get("metadata") or {}).get("resourceVersion") or ""),
        )

    def spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }

    def same_as(self, other: LeaseRecord | None) -> bool:
        """The same record (a renewal changes renewTime and the resourceVersion)."""
        return other is not None and replace(self, resource_version="") == replace(other, resource_version="")


class LeaseApi(Protocol):
    """The three Lease requests. None from create/update: someone else wrote first (409)."""

    async def get(self) -> LeaseRecord | None: ...  # None: no Lease yet (404)
    async def create(self, record: LeaseRecord) -> LeaseRecord | None: ...
    async def update(self, record: LeaseRecord) -> LeaseRecord | None: ...


class KubeLeaseApi:
    """The Lease `name` in `namespace`, through the operator's own Kubernetes client (kube.KubeApi)."""

    def __init__(self, kube: KubeApi, namespace: str, name: str) -> None:
        self._kube = kube
        self.namespace = namespace
        self.name = name
        self._collection = LEASES.format(namespace=namespace)

    def _object(self, record: LeaseRecord) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if record.resource_version:
            metadata["resourceVersion"] = record.resource_version  # a conditional replace
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": record.spec()}

    async def get(self) -> LeaseRecord | None:
        answer = await self._kube.get(f"{self._collection}/{self.name}")
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise LeaseError(f"get lease {self.namespace}/{self.name}: HTTP {answer.status}")
        return LeaseRecord.from_object(answer.json())

    async def create(self, record: LeaseRecord) -> LeaseRecord | None:
        answer = await self._kube.post(self._collection, self._object(record))
        if answer.status == 409:
            return None
        if answer.status not in (200, 201):
            raise LeaseError(f"create lease {self.namespace}/{self.name}: HTTP {answer.status}")
        return LeaseRecord.from_object(answer.json())

    async def update(self, record: LeaseRecord) -> LeaseRecord | None:
        answer = await self._kube.put(f"{self._collection}/{self.name}", self._object(record))
        if answer.status == 409:
            return None
        if answer.status != 200:
            raise LeaseError(f"update lease {self.namespace}/{self.name}: HTTP {answer.status}")
        return LeaseRecord.from_object(answer.json())


def identity(pod_name: str | None) -> str:
    """`<pod name>_<random>` (the host name outside a pod): unique per process, recognisable per pod."""
    return f"{pod_name or socket.gethostname()}_{secrets.token_hex(4)}"


def micro_time(now: dt.datetime) -> str:
    """A Kubernetes MicroTime (RFC 3339, microseconds, UTC)."""
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElector:
    """One candidate for the Lease `api` names. `acquire()` returns once it leads; `hold()` renews until it loses
    (then returns); `release()` gives the Lease up. `on_change(leading)` hears every change of leadership."""

    def __init__(
        self,
        api: LeaseApi,
        identity: str,
        timings: Timings,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = _utcnow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.api = api
        self.identity = identity
        self.timings = timings
        self._clock = clock
        self._now = now
        self._sleep = sleep
        self._on_change = on_change
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0  # clock() when the observed record last changed
        self._renewed_at = 0.0  # clock() of our last successful write
        self.leading = False
        self.last_holder = ""  # the holder last seen, for the log

    def _lead(self, leading: bool) -> None:
        if leading != self.leading:
            self.leading = leading
            if self._on_change is not None:
                self._on_change(leading)

    def _observe(self, record: LeaseRecord, at: float) -> None:
        if not record.same_as(self._observed):
            self._observed, self._observed_at = record, at
        else:
            self._observed = record  # same spec, maybe a newer resourceVersion
        self.last_holder = record.holder

    async def try_acquire_or_renew(self) -> bool:
        """One attempt (client-go's tryAcquireOrRenew): True when this candidate holds the Lease afterwards."""
        stamp = micro_time(self._now())
        desired = LeaseRecord(self.identity, self.timings.lease_duration, stamp, stamp)
        current = await self.api.get()
        started = self._clock()
        if current is None:
            created = await self.api.create(desired)
            if created is None:
                return False  # another candidate created it first
            self._observe(created, self._clock())
            self._renewed_at = started
            return True
        self._observe(current, started)
        held_by_other = current.holder and current.holder != self.identity
        if held_by_other and self._observed_at + current.lease_duration > started:
            return False  # held, and not expired by our own clock
        if current.holder == self.identity:
            desired = replace(desired, acquire_time=current.acquire_time, transitions=current.transitions)
        else:
            desired = replace(desired, transitions=current.transitions + 1)
        updated = await self.api.update(replace(desired, resource_version=current.resource_version))
        if updated is None:
            return False  # someone wrote in between: read again next time
        self._observe(updated, self._clock())
        self._renewed_at = started
        return True

    async def _attempt(self, timeout: float) -> bool:
        """An attempt that gives up after `timeout` seconds; API errors count as a failed attempt."""
        try:
            async with asyncio.timeout(max(timeout, 0.001)):
                return await self.try_acquire_or_renew()
        except TimeoutError:
            log.warning("leader election: the Lease request took longer than %.1fs", timeout)
        except (LeaseError, OSError, ValueError) as exc:  # aiohttp.ClientError is an OSError
            log.warning("leader election: %s", exc or type(exc).__name__)
        return False

    async def acquire(self) -> None:
        """Return once this candidate leads; until then, try every retry period."""
        announced = None
        while True:
            if await self._attempt(self.timings.retry_period):
                log.info("leader election: %s leads (Lease acquired)", self.identity)
                self._lead(True)
                return
            if self.last_holder and self.last_holder != announced:
                announced = self.last_holder
                log.info("leader election: standing by; the Lease is held by %s", announced)
            await self._sleep(self.timings.retry_period)

    async def hold(self) -> None:
        """Renew every retry period while leading; return when the Lease is lost: not renewed for the renew
        deadline, or found with another holder. The caller must stop working at once."""
        while True:
            await self._sleep(self.timings.retry_period)
            left = self._renewed_at + self.timings.renew_deadline - self._clock()
            if left > 0 and await self._attempt(left):
                continue
            if self._observed is not None and self._observed.holder not in ("", self.identity):
                log.error("leader election: the Lease is now held by %s: lost", self._observed.holder)
                break
            if self._clock() - self._renewed_at >= self.timings.renew_deadline:
                log.error("leader election: not renewed for %.1fs: lost", self.timings.renew_deadline)
                break
        self._lead(False)

    async def release(self) -> None:
        """Give the Lease up (empty holder, 1 s), so that a standby takes it at its next attempt. Only when leading
        and the record is still ours; errors are logged, never raised (it would expire anyway)."""
        if not self.leading or self._observed is None or self._observed.holder != self.identity:
            return
        stamp = micro_time(self._now())
        released = replace(self._observed, holder="", lease_duration=1, renew_time=stamp, acquire_time=stamp)
        try:
            async with asyncio.timeout(self.timings.retry_period):
                done = await self.api.update(released)
        except (TimeoutError, LeaseError, OSError, ValueError) as exc:
            log.warning("leader election: the Lease was not released (%s); it expires by itself", exc)
        else:
            if done is not None:
                log.info("leader election: %s released the Lease", self.identity)
        self._lead(False)


class StandbyHealth:
    """The liveness endpoint while standing by (kopf serves it once the operator works): `GET <path>` answers 200
    with `{"leader": false}`. The port is freed before kopf binds it."""

    def __init__(self, endpoint: str) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme != "http":
            raise ValueError(f"unsupported liveness endpoint: {endpoint}")
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 80
        self.path = parts.path or "/"
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        async def healthz(_: aiohttp.web.Request) -> aiohttp.web.Response:
            return aiohttp.web.json_response({"leader": False})

        app = aiohttp.web.Application()
        app.add_routes([aiohttp.web.get(self.path, healthz)])
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _hard_exit(code: int) -> NoReturn:
    logging.shutdown()  # flush the log: nothing else runs after this
    os._exit(code)


async def run_when_leading(
    elector: LeaderElector,
    operate: Callable[[], Awaitable[None]],
    *,
    liveness: str | None = None,
    lost: Callable[[int], NoReturn] = _hard_exit,
) -> None:
    """Stand by until `elector` leads, then run `operate` (kopf) while holding the Lease.

    - SIGTERM or SIGINT while standing by: return at once (nothing to release). While working, kopf handles them:
      when `operate` returns, the Lease is released, so a standby takes over within its retry period.
    - Lease lost while working: `lost(1)`, by default an immediate exit (no cleanup, no handler finishes): the work
      must stop before a standby may consider the Lease expired, and kopf's graceful stop could take longer. The pod
      restarts and comes back as a standby (controller-runtime does the same).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    health = StandbyHealth(liveness) if liveness else None
    acquiring = asyncio.ensure_future(elector.acquire())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        if health is not None:
            await health.start()
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for task in (acquiring, stopping):
            task.cancel()
        if health is not None:
            await health.stop()
    if stop.is_set() or not acquiring.done() or acquiring.cancelled():
        if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
            await elector.release()  # acquired as the signal came: give it back
        log.info("leader election: stopped while standing by")
        return
    acquiring.result()
    holding = asyncio.ensure_future(elector.hold())
    working = asyncio.ensure_future(operate())
    await asyncio.wait({holding, working}, return_when=asyncio.FIRST_COMPLETED)
    if not working.done():
        log.critical("leader election: the Lease is lost; exiting at once so that only one replica works")
        lost(1)
    holding.cancel()
    await elector.release()
    working.result()  # kopf's own failure, if any, after the Lease is released
