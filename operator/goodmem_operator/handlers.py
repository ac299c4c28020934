"""kopf glue: wire Kubernetes events to the one reconcile, and apply its outcome.

Nothing here decides anything about the registry: every reconcile, whatever started it, goes through `settle`
(`Reconciler.reconcile`, then `write_outcome`, the one writer of an `Outcome`: status delta and Events), which
also names the key's next turn. Two ways in:

- kopf's change handlers (create, resume, update) reconcile at once, and the status delta goes into kopf's own
  patch, which kopf sends in one `/status` request with its bookkeeping (`status.kopf`);
- everything else is a key in the one requeue (requeue.py): a Secret event's users, and each key's next turn,
  the retry on the engine's backoff after a failure, else the next drift check. Those reconciles read the LLM's
  latest body from `LLMIndex`, and their delta goes out as one `/status` merge patch.

Only deletion keeps kopf's own retry (`kopf.TemporaryError`): the finalizer is kopf's to remove.
The handlers are module-level functions, registered by `build_registry`; what they share is in kopf's memo
(`Memo.runtime`, set by main's startup handler).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hashlib
import json
import logging
import math
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from goodmem_operator import conditions as cond
from goodmem_operator._kopf import ResourceMemories, ResourceMemory
from goodmem_operator.api.types import GROUP, PLURAL, VERSION
from goodmem_operator.connections import Connections
from goodmem_operator.fairness import tenant
from goodmem_operator.llm_index import LLMIndex
from goodmem_operator.metrics import Metrics
from goodmem_operator.reconcile import Event, LLMObject, Outcome, Reconciler, RetryLater, Trigger
from goodmem_operator.requeue import Key, Next, Requeue
from goodmem_operator.secrets import CREDENTIALS_SELECTOR, UNKNOWN, SecretCache

log = logging.getLogger("goodmem_operator.handlers")

FINALIZER = "goodmem.ai/finalizer"
# kopf's own storages (progress, last-handled configuration) live under this prefix. It must differ
# from goodmem.ai: kopf ignores every annotation under its storage prefix when it detects changes,
# and goodmem.ai/paused and goodmem.ai/drift-interval must be seen.
ANNOTATION_PREFIX = "kopf.goodmem.ai"
DIGEST_PREFIX = "sha256:"
INDEX_HANDLER = "llm-index"  # its success lines are dropped from kopf's log (main.QuietIndexLog)


KOPF_STATUS = "kopf"  # status.kopf: kopf's diff-base digest and handler progress (declared in the CRD)


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base kept as a digest of the last-handled essence, in `status.kopf.lastHandled`.

    kopf remembers the last-handled essence (spec, labels, annotations) to tell a real change from
    a status-only event. Its default storage writes the whole essence as JSON into an annotation,
    and all annotations of an object share a 256 KiB limit: a large spec (a big clientConfig, counted
    twice under client-side `kubectl apply`, which keeps its own copy) then makes every patch kopf
    sends fail, status and finalizer removal included, so the resource can never be deleted
    (nolar/kopf#1087). Our handlers never read kopf's `old`/`new`/`diff` (the reconcile is
    level-triggered), so a SHA-256 of the essence is all kopf needs: `fetch` returns the current
    essence when the digest matches (no change) and the same essence plus one marker key when it
    does not (a change, so kopf calls the update handler).

    The digest lives in the status, not in an annotation: kopf then writes it in the same `/status`
    patch as our conditions, so handling a change costs one API write fewer (bench/ANALYSIS.md #3)
    and kopf never writes the object's metadata apart from its finalizer. An annotation written by
    an older operator (a digest, or kopf's own JSON) is still read, and removed on the next store.
    """

    CHANGED = f"{ANNOTATION_PREFIX}/changed-since-last-handled"
    FIELD = ("status", KOPF_STATUS, "lastHandled")

    def _comparable(self, essence: Mapping[str, Any]) -> dict[str, Any]:
        """The essence without kopf's own annotations (progress, markers) and empty stanzas."""
        data = copy.deepcopy(dict(essence))
        meta = data.get("metadata")
        if isinstance(meta, dict):
            annotations = {
                k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith(f"{self.prefix}/")
            }
            if annotations:
                meta["annotations"] = annotations
            else:
                meta.pop("annotations", None)
            if not meta:
                data.pop("metadata")
        return data

    def _digest(self, essence: Mapping[str, Any]) -> str:
        canonical = json.dumps(self._comparable(essence), sort_keys=True, separators=(",", ":"), default=str)
        return DIGEST_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()

    def digest_of(self, body: kopf.Body) -> str:
        """The digest of `body`'s essence (what changes it: spec, labels, annotations but kopf's own)."""
        return self._digest(self.build(body=body))

    def _stored(self, body: kopf.Body) -> str | None:
        status = body.get("status") or {}
        value = (status.get(KOPF_STATUS) or {}).get(self.FIELD[-1]) if isinstance(status, dict) else None
        if isinstance(value, str):
            return value
        for full_key in self.make_keys(self.key, body=body):  # written by an older operator
            legacy = body.metadata.annotations.get(full_key)
            if legacy is not None:
                return str(legacy)
        return None

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        stored = self._stored(body)
        if stored is None:
            return None
        if not stored.startswith(DIGEST_PREFIX):
            old: kopf.BodyEssence = json.loads(stored)  # written by kopf's AnnotationsDiffBaseStorage (before this)
            return old
        current = self.build(body=body)  # what kopf compares it with (no extra fields in our handlers)
        if self._digest(current) == stored.strip():
            return current
        changed: Any = {**current, self.CHANGED: True}  # kopf's TypedDict plus one key of ours: a diff for kopf
        return cast(kopf.BodyEssence, changed)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        patch.status.setdefault(KOPF_STATUS, {})[self.FIELD[-1]] = self._digest(essence)
        for full_key in self.make_keys(self.key, body=body):
            if full_key in body.metadata.annotations:
                patch.metadata.annotations[full_key] = None  # moved to the status


class ChangeAwareProgressStorage(kopf.StatusProgressStorage):
    """kopf's per-handler progress (in `status.kopf.progress`), except that a retry delay ends when the
    resource changes.

    kopf does not call a handler that raised TemporaryError(delay=...) again before the delay is over,
    even if the spec changes meanwhile. The reconcile handler no longer raises it (its retries are keys in
    the requeue, where a changed spec ends the delay at once: requeue.py), but the release handler does, and
    an LLM that was waiting out a delay under an older operator carries that record in its status: this
    storage records with each handler state the digest of the essence it was written for, and drops the
    delay when the resource's essence differs: a changed spec is tried at once, once per change; retrying
    the same spec keeps its backoff.
    """

    FIELD = "essence"  # an extra key in kopf's record; kopf ignores keys it does not know

    def __init__(self, *, diffbase: DigestDiffBaseStorage) -> None:
        super().__init__(name=KOPF_STATUS, field="status.{name}.progress", touch_field="status.{name}.dummy")
        self.diffbase = diffbase

    def store(self, *, key: kopf.HandlerId, record: kopf.ProgressRecord, body: kopf.Body, patch: kopf.Patch) -> None:
        extended: Any = {**record, self.FIELD: self.diffbase.digest_of(body)}  # kopf's TypedDict plus our key
        super().store(key=key, record=extended, body=body, patch=patch)

    def fetch(self, *, key: kopf.HandlerId, body: kopf.Body) -> kopf.ProgressRecord | None:
        record = super().fetch(key=key, body=body)
        if not record:
            return record
        # kopf must get back exactly its own record: it re-stores (and re-patches) a record that differs from
        # what it would write, and a patch that changes nothing brings no event to wake it after a delay.
        plain: dict[str, Any] = dict(record)
        essence = plain.pop(self.FIELD, None)
        if plain.get("delayed") and essence not in (None, self.diffbase.digest_of(body)):
            plain["delayed"] = None
        return cast(kopf.ProgressRecord, plain)  # kopf's own keys only, as it wrote them


StatusWriter = Callable[[str, str, dict[str, Any]], Awaitable[None]]  # (namespace, name, status delta)

# A reconcile outside kopf's change handlers that failed unexpectedly (say, a Secret read while the API server is
# away), or whose status could not be written, is tried again after this.
SIDE_PATH_RETRY = 10.0


def _never_terminating(namespace: str) -> bool:
    return False


@dataclass
class Runtime:
    """What the handlers share; built by main at startup and kept in kopf's memo (`Memo.runtime`)."""

    reconciler: Reconciler
    secret_cache: SecretCache
    status_writer: StatusWriter | None  # the /status merge patch of reconciles outside kopf's change handlers
    drift_interval: float = 600.0
    metrics: Metrics | None = None
    index: LLMIndex = field(default_factory=LLMIndex)
    concurrency: int = 32  # reconciles the requeue runs at once (main: twice the registry's concurrency)
    clock: Callable[[], float] = time.monotonic
    requeue: Requeue = field(init=False)
    warned: dict[Key, str] = field(default_factory=dict)  # per LLM, the clamped drift interval last warned about
    #: whether a namespace is being deleted (main: watching.NamespaceWatch.terminating, known with namespace
    #: observation); the API server refuses new objects there, Events included
    terminating: Callable[[str], bool] = _never_terminating
    #: the connections (connections.py), when the reconciler routes through them (main); None: one registry
    connections: Connections | None = None
    #: the LLMs of a namespace (None: all) read from the API server (a connection's deletion check)
    list_llms: Callable[[str | None], Awaitable[list[dict[str, Any]]]] | None = None
    #: the connection objects and namespaces read at startup (connection_handlers.seed; given by main)
    connection_listers: Any = None
    #: a connection's Secret changed (connection_handlers.connection_secret_changed, given by main)
    connection_secret_changed: Callable[[Runtime, str, str], Awaitable[None]] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # background work, cancelled on close

    def __post_init__(self) -> None:
        self.requeue = Requeue(
            functools.partial(requeued, self),
            concurrency=self.concurrency,
            error_delay=SIDE_PATH_RETRY,
            clock=self.clock,
        )

    def forget(self, key: Key) -> None:
        """The LLM is gone: no next turn, no warning state."""
        self.requeue.discard(key)
        self.warned.pop(key, None)

    async def aclose(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.requeue.aclose()
        await self.reconciler.registry.aclose()  # the connections' clients, or the one registry client
        await self.secret_cache.aclose()


class Memo(kopf.Memo):
    """kopf's memo, typed (passed as `kopf.run(memo=...)`). `runtime` is set by the startup handler, before any
    watch starts; each object's memo is kopf's shallow copy of this one, so every handler sees the same Runtime."""

    runtime: Runtime


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def select_credential_secrets(settings: kopf.OperatorSettings) -> None:
    """Watch only Secrets labelled goodmem.ai/credentials=true: the API server filters the Secret watch (and its
    listings), so a Secret that has not opted in never reaches the operator, not even its metadata.

    Under a label selector the API server sends ADDED when a Secret gains the label and DELETED (with the
    last labelled content) when it loses it, so both transitions reach `secret_changed`. Set before
    `kopf.run`: the watches start with the run.
    """
    settings.watching.label_selectors["", "v1", "secrets"] = CREDENTIALS_SELECTOR


def secret_in_use(rt: Runtime, namespace: str, name: str) -> bool:
    """Whether the operator has any business with this Secret: some LLM or connection uses it, or it is still
    cached."""
    return (
        rt.index.referenced(namespace, name)
        or (namespace, name) in rt.secret_cache
        or bool(rt.connections and rt.connections.uses_secret(namespace, name))
    )


class LeanMemories(ResourceMemories):
    """kopf's per-object memories, minus the ones for Secrets the operator has no business with.

    kopf keeps a `ResourceMemory` (memo, error throttler, indexing and daemon state: about 1.6 KB) for
    every object it has seen on a watch, until the object is deleted, whether or not a handler matches
    it: with 10,000 unrelated Secrets that was 16 MB of a fresh operator's RSS (BENCHMARKS.md). Such a
    Secret's memory is made ephemeral (kopf's own mode for objects that may never exist): created for
    the event and dropped after it. A Secret that comes into use gets a kept memory from its next event.
    What the operator knows comes from kopf's memo (`memobase`, the one passed to `kopf.run`).
    """

    @staticmethod
    def _keep(raw_body: kopf.RawBody, memobase: object | None) -> bool:
        rt = memobase.get("runtime") if isinstance(memobase, dict) else None
        if rt is None or raw_body.get("kind") != "Secret" or raw_body.get("apiVersion", "v1") != "v1":
            return True
        meta = raw_body.get("metadata") or {}
        return secret_in_use(rt, meta.get("namespace", ""), meta.get("name", ""))

    async def recall(
        self,
        raw_body: kopf.RawBody,
        *,
        memobase: Any = None,  # the memo given to kopf.run, typed by kopf's private NewType AnyMemo
        noticed_by_listing: bool = False,
        ephemeral: bool = False,
    ) -> ResourceMemory:
        return await super().recall(
            raw_body,
            memobase=memobase,
            noticed_by_listing=noticed_by_listing,
            ephemeral=ephemeral or not self._keep(raw_body, memobase),
        )


DRIFT_INTERVAL_ANNOTATION = "goodmem.ai/drift-interval"
# The least a namespace may ask for with the annotation: every drift check is a registry GET out of the budget all
# namespaces share ("0.0001" once made 395 GETs in 3 s from a single LLM). The operator's own --drift-interval is set
# by whoever runs the operator and is not floored.
DRIFT_INTERVAL_FLOOR = 30.0
DRIFT_INTERVAL_CLAMPED = "DriftIntervalClamped"  # the Warning Event's reason


@dataclass(frozen=True)
class DriftInterval:
    """The drift interval in force for one LLM, and the annotation value it replaced if that was clamped."""

    seconds: float
    clamped_from: str | None = None  # the annotation as given, when it was below the floor or not a number


def drift_interval_of(annotations: Any, default: float, floor: float = DRIFT_INTERVAL_FLOOR) -> DriftInterval:
    """The per-resource drift interval: the annotation (seconds, at least `floor`) or the operator's default.

    A value below the floor, or one that is not a finite number ("fast", "nan", "-1", "inf"), gives the floor:
    a namespace may ask for checks more often than the default, never for a loop."""
    raw = (annotations or {}).get(DRIFT_INTERVAL_ANNOTATION)
    if raw is None:
        return DriftInterval(default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if math.isfinite(value) and value >= floor:
        return DriftInterval(value)
    return DriftInterval(floor, clamped_from=str(raw))


def drift_clamped_message(interval: DriftInterval) -> str:
    given = interval.clamped_from or ""
    shown = given if len(given) <= 40 else given[:40] + "..."
    return (
        f"annotation {DRIFT_INTERVAL_ANNOTATION}={shown!r} is below the floor of {DRIFT_INTERVAL_FLOOR:g}s "
        f"or not a number of seconds; drift checks run every {interval.seconds:g}s"
    )


def _jitter(uid: str) -> float:
    """A stable factor in [0.9, 1.1) per resource, so drift checks of many LLMs spread out."""
    return 0.9 + (zlib.crc32(uid.encode()) % 1000) / 5000


def drift_of(rt: Runtime, body: Mapping[str, Any]) -> DriftInterval:
    """The LLM's drift interval now, with a `DriftIntervalClamped` Warning the first time a clamped value is seen
    (again after a valid value came between). Read at every reconcile: an annotation change is one (kopf's update
    handler), so the new interval counts from that reconcile on."""
    meta = body.get("metadata") or {}
    interval = drift_interval_of(meta.get("annotations"), rt.drift_interval)
    key = key_of(body)
    if interval.clamped_from is None:
        rt.warned.pop(key, None)
    elif rt.warned.get(key) != interval.clamped_from:
        rt.warned[key] = interval.clamped_from
        _post(rt, body, [Event("Warning", DRIFT_INTERVAL_CLAMPED, drift_clamped_message(interval))])
    return interval


async def run_reconcile(rt: Runtime, body: Mapping[str, Any], trigger: str) -> Outcome:
    """The reconcile plus its metrics."""
    obj = LLMObject.from_body(body)
    started = time.monotonic()
    with tenant(obj.namespace):  # its registry calls queue in its namespace's turn (fairness.py)
        outcome = await rt.reconciler.reconcile(obj, trigger=trigger)
    if rt.metrics is not None:
        rt.metrics.reconciled(obj.uid, trigger, outcome, time.monotonic() - started)
    return outcome


def _post(rt: Runtime, body: Mapping[str, Any], events: list[Event]) -> None:
    meta = body.get("metadata") or {}
    if events and rt.terminating(str(meta.get("namespace") or "")):
        # The API server refuses new objects in a namespace being deleted, Events included, and kopf would retry each
        # refused Event 9 times over a minute (measured: tests/e2e/test_namespace_deletion.py). The log has them.
        for event in events:
            log.info(
                "%s/%s: %s %s: %s (no Event: the namespace is being deleted)",
                meta.get("namespace"),
                meta.get("name"),
                event.type,
                event.reason,
                event.message,
            )
        return
    # kopf.event reads only apiVersion, kind and metadata (its object reference): the index's plain snapshot serves
    # as well as kopf's own Body, which is what kopf's signature names.
    for event in events:
        kopf.event(cast(kopf.Body, body), type=event.type, reason=event.reason, message=event.message)


async def write_outcome(rt: Runtime, outcome: Outcome, body: Mapping[str, Any], patch: kopf.Patch | None) -> bool:
    """The one writer of an outcome: the status fields that changed, then its Events. In a kopf change handler the
    fields go into kopf's `patch`, which kopf sends in one `/status` request with its own `status.kopf` (a write of
    ours beside it would cost one more API write per change); elsewhere, one `/status` merge patch. Returns
    whether the status is (or will be) written."""
    delta = outcome.status_patch(dict(body.get("status") or {}))
    written = True
    if patch is not None:
        for name, value in delta.items():
            patch.status[name] = value
    elif delta:
        namespace, name = key_of(body)
        try:
            if rt.status_writer is None:
                raise RuntimeError("no status writer")
            await rt.status_writer(namespace, name, delta)
        except Exception as exc:
            log.warning("%s/%s: could not write status: %s", namespace, name, type(exc).__name__)
            written = False
    _post(rt, body, outcome.events)
    return written


async def settle(rt: Runtime, body: Mapping[str, Any], trigger: str, patch: kopf.Patch | None) -> Next:
    """One reconcile of an LLM, wherever it runs, and its outcome written; returns the key's next turn: the retry
    on the outcome's backoff, SIDE_PATH_RETRY when the reconcile raised or its status could not be written, else
    the next drift check, one interval (with the LLM's stable jitter) from now."""
    interval = drift_of(rt, body)
    namespace, name = key_of(body)
    try:
        outcome = await run_reconcile(rt, body, trigger)
    except Exception as exc:
        # Never the message: it could quote anything. The key is tried again; nothing is lost.
        log.warning(
            "%s/%s: %s reconcile failed: %s; retrying in %gs",
            namespace,
            name,
            trigger,
            type(exc).__name__,
            SIDE_PATH_RETRY,
        )
        return Next(trigger, SIDE_PATH_RETRY)
    written = await write_outcome(rt, outcome, body, patch)
    if outcome.retry_after is not None:
        log.warning("%s/%s: %s; retrying in %gs", namespace, name, _retry_message(outcome), outcome.retry_after)
        return Next(trigger, outcome.retry_after)
    if not written:
        return Next(trigger, SIDE_PATH_RETRY)
    uid = (body.get("metadata") or {}).get("uid") or ""
    return Next(Trigger.DRIFT, interval.seconds * _jitter(uid))


async def requeued(rt: Runtime, key: Key, trigger: str) -> Next | None:
    """A key's turn in the requeue: reconcile the LLM's latest body (from the index); None when it is gone or
    being deleted (its finalizer handler owns it now)."""
    body = rt.index.body(*key)
    if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
        return None
    return await settle(rt, body, trigger, None)


def _retry_message(outcome: Outcome) -> str:
    synced = outcome.condition(cond.SYNCED) or {}
    return f"{synced.get('reason', 'Error')}: {synced.get('message', '')}"


# -- the handlers (registered by build_registry) ------------------------------------------------------------------


async def index_llm(event: kopf.RawEvent, body: kopf.Body, memo: Memo, **_: Any) -> None:
    """Who uses which Secret, and the latest LLM bodies for the requeue's reconciles: our own maps, not
    @kopf.index, whose readiness gate makes startup quadratic (llm_index.py)."""
    rt = memo.runtime
    deleted = event.get("type") == "DELETED"
    released = rt.index.observe(body, deleted=deleted)
    if released is not None and not (rt.connections and rt.connections.uses_secret(*released)):
        rt.secret_cache.forget(*released)  # nothing uses it any more: keep no copy
    if deleted:
        rt.forget(key_of(body))


async def reconcile_llm(body: kopf.Body, patch: kopf.Patch, reason: str, memo: Memo, **_: Any) -> None:
    """create, resume, update: reconcile now, the outcome in kopf's own patch (one `/status` write with kopf's
    digest). The key's next turn (a retry, or the drift check) goes to the requeue, and replaces any turn that was
    waiting there: a changed spec ends a retry delay at once. Never kopf's TemporaryError."""
    rt = memo.runtime
    with rt.requeue.turn(key_of(body)) as turn:
        turn.then = await settle(rt, body, str(reason), patch)


async def release_llm(body: kopf.Body, patch: kopf.Patch, memo: Memo, **_: Any) -> None:
    """Deletion: the deletion policy, then kopf removes the finalizer. A retryable failure keeps the finalizer
    through kopf's own TemporaryError (the one retry that stays kopf's: removing the finalizer is kopf's)."""
    rt = memo.runtime
    obj = LLMObject.from_body(body)
    try:
        with tenant(obj.namespace):  # as in run_reconcile: the namespace's own turn at the registry
            events = await rt.reconciler.finalize(obj)
    except RetryLater as exc:
        deleting = cond.deleting(f"{exc} (retrying in {exc.delay:g}s)")
        patch.status["conditions"] = cond.dump(cond.set_conditions(None, [deleting], obj.generation))
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
    rt.forget(key_of(body))
    if rt.metrics is not None:
        rt.metrics.forget(obj.uid)
    _post(rt, body, events)


def watched(namespace: str | None, name: str, memo: Memo, **_: Any) -> bool:
    """A Secret some LLM uses, or one still cached: every other Secret event is dropped before a handler
    runs (no log line, no cache entry, no work for the labelled Secrets no LLM uses). Secrets without
    the credentials label are not even sent: the watch selects by label (`select_credential_secrets`)."""
    return secret_in_use(memo.runtime, namespace or "", name)


async def secret_changed(
    event: kopf.RawEvent, namespace: str | None, name: str, body: kopf.Body, memo: Memo, **_: Any
) -> None:
    """Events only (no create/update handlers, so nothing is ever written to a Secret): update the cache, and when
    the data (or the label) really changed, submit every LLM that uses the Secret to the requeue, due now."""
    rt = memo.runtime
    namespace = namespace or ""  # kopf types it optional; Secrets are namespaced
    # Gaining the credentials label comes as ADDED, losing it as DELETED (the watch selects by label);
    # an unlabelled body (should the selector be off) is kept as "not labelled", without its data.
    # Either way the users are reconciled: they take up the Secret, or show SecretNotLabelled.
    users = rt.index.users(namespace, name)
    connections = rt.connections.uses_secret(namespace, name) if rt.connections is not None else []
    cache = rt.secret_cache
    before = cache.peek(namespace, name)
    kind = event.get("type")
    cache.observe(namespace, name, body, deleted=kind == "DELETED", referenced=bool(users or connections))
    if not users and not connections:
        return
    if kind is None and before is UNKNOWN:
        return  # a listing, and nothing known of this Secret yet: the resume handlers cover its users
    # A listing (kind None) also comes after kopf restarts a watch (410 Gone, say after an API server
    # restart): a Secret that changed while the watch was away shows up only there.
    if kind != "DELETED" and before == cache.peek(namespace, name):
        return
    if connections and rt.connection_secret_changed is not None:
        await rt.connection_secret_changed(rt, namespace, name)  # a key rotated: used by the next request
    # All users at once: the requeue runs them concurrently, in fair order; the registry client's limiter bounds
    # requests and their rate (bench/ANALYSIS.md #4).
    for llm_name in users:
        rt.requeue.add((namespace, llm_name), Trigger.SECRET)


def build_registry() -> kopf.OperatorRegistry:
    """All handlers, on a registry of their own; what they share comes in kopf's memo (`Memo.runtime`)."""
    registry = kopf.OperatorRegistry()
    kopf.on.event(GROUP, VERSION, PLURAL, id=INDEX_HANDLER, registry=registry)(index_llm)
    for on in (kopf.on.update, kopf.on.create, kopf.on.resume):
        on(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)(reconcile_llm)
    kopf.on.delete(GROUP, VERSION, PLURAL, id="release", registry=registry)(release_llm)
    kopf.on.event("", "v1", "secrets", id="secret-changed", when=watched, registry=registry)(secret_changed)
    return registry
