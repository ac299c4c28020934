"""kopf glue: wire Kubernetes events to the one reconcile, and apply its outcome.

Nothing here decides anything about the registry: every path (create,
resume, update, the drift timer, Secret events) calls `Reconciler.reconcile`
and applies the returned `Outcome` (status delta, events, retry delay).
Handlers are registered on a registry built from the operator's `Config`, so
intervals and names come from configuration, not from import-time globals.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import math
import random
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import kopf

from goodmem_operator import conditions as cond
from goodmem_operator._kopf import ResourceMemories
from goodmem_operator.api.types import GROUP, PLURAL, VERSION
from goodmem_operator.fairness import tenant
from goodmem_operator.llm_index import LLMIndex, snapshot
from goodmem_operator.reconcile import Event, LLMObject, Outcome, Reconciler, RetryLater
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

    def _comparable(self, essence: Any) -> dict[str, Any]:
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

    def _digest(self, essence: Any) -> str:
        canonical = json.dumps(self._comparable(essence), sort_keys=True, separators=(",", ":"), default=str)
        return DIGEST_PREFIX + hashlib.sha256(canonical.encode()).hexdigest()

    def digest_of(self, body: Any) -> str:
        """The digest of `body`'s essence (what changes it: spec, labels, annotations but kopf's own)."""
        return self._digest(self.build(body=body))

    def _stored(self, body: Any) -> str | None:
        status = body.get("status") or {}
        value = (status.get(KOPF_STATUS) or {}).get(self.FIELD[-1]) if isinstance(status, dict) else None
        if isinstance(value, str):
            return value
        for full_key in self.make_keys(self.key, body=body):  # written by an older operator
            legacy = body.metadata.annotations.get(full_key)
            if legacy is not None:
                return str(legacy)
        return None

    def fetch(self, *, body: Any) -> Any:
        stored = self._stored(body)
        if stored is None:
            return None
        if not stored.startswith(DIGEST_PREFIX):
            return json.loads(stored)  # written by kopf's AnnotationsDiffBaseStorage (before this storage)
        current = self.build(body=body)  # what kopf compares it with (no extra fields in our handlers)
        if self._digest(current) == stored.strip():
            return current
        return {**current, self.CHANGED: True}

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        patch.status.setdefault(KOPF_STATUS, {})[self.FIELD[-1]] = self._digest(essence)
        for full_key in self.make_keys(self.key, body=body):
            if full_key in body.metadata.annotations:
                patch.metadata.annotations[full_key] = None  # moved to the status


class ChangeAwareProgressStorage(kopf.StatusProgressStorage):
    """kopf's per-handler progress (in `status.kopf.progress`), except that a retry delay ends when the
    resource changes.

    kopf does not call a handler that raised TemporaryError(delay=...) again before the delay is over,
    even if the spec changes meanwhile (and while a creation keeps failing, kopf stores no diff base, so
    every later change is still that same creation): a fix to a spec waiting out a 5-minute backoff (a
    missing Secret, a registry outage) would wait those 5 minutes. This storage records with each handler
    state the digest of the essence it was written for, and drops the delay when the resource's essence
    differs: a changed spec is tried at once, once per change; retrying the same spec keeps its backoff.
    """

    FIELD = "essence"  # an extra key in kopf's record; kopf ignores keys it does not know

    def __init__(self, *, diffbase: DigestDiffBaseStorage) -> None:
        super().__init__(name=KOPF_STATUS, field="status.{name}.progress", touch_field="status.{name}.dummy")
        self.diffbase = diffbase

    def store(self, *, key: Any, record: Any, body: Any, patch: Any) -> None:
        extended: Any = {**record, self.FIELD: self.diffbase.digest_of(body)}  # kopf's TypedDict plus our key
        super().store(key=key, record=extended, body=body, patch=patch)

    def fetch(self, *, key: Any, body: Any) -> Any:
        record = super().fetch(key=key, body=body)
        if not record:
            return record
        # kopf must get back exactly its own record: it re-stores (and re-patches) a record that differs from
        # what it would write, and a patch that changes nothing brings no event to wake it after a delay.
        plain: dict[str, Any] = dict(record)
        essence = plain.pop(self.FIELD, None)
        if plain.get("delayed") and essence not in (None, self.diffbase.digest_of(body)):
            plain["delayed"] = None
        return plain


@dataclass
class Runtime:
    """What the handlers share; built by main at startup."""

    reconciler: Reconciler
    secret_cache: SecretCache
    status_writer: Any  # async (namespace, name, status_patch) -> None, for paths outside kopf's own patch
    drift_interval: float = 600.0
    metrics: Any = None  # goodmem_operator.metrics.Metrics, or None
    index: LLMIndex = field(default_factory=LLMIndex)
    _retries: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)


def select_credential_secrets(settings: kopf.OperatorSettings) -> None:
    """Watch only Secrets labelled goodmem.ai/credentials=true: the API server filters the Secret watch (and its
    listings), so a Secret that has not opted in never reaches the operator, not even its metadata.

    Under a label selector the API server sends ADDED when a Secret gains the label and DELETED (with the
    last labelled content) when it loses it, so both transitions reach `secret_changed`. Set before
    `kopf.run`: the watches start with the run.
    """
    settings.watching.label_selectors["", "v1", "secrets"] = CREDENTIALS_SELECTOR


def secret_in_use(rt: Runtime, namespace: str, name: str) -> bool:
    """Whether the operator has any business with this Secret: some LLM uses it, or it is still cached."""
    return rt.index.referenced(namespace, name) or (namespace, name) in rt.secret_cache


class LeanMemories(ResourceMemories):
    """kopf's per-object memories, minus the ones for Secrets the operator has no business with.

    kopf keeps a `ResourceMemory` (memo, error throttler, indexing and daemon state: about 1.6 KB) for
    every object it has seen on a watch, until the object is deleted, whether or not a handler matches
    it: with 10,000 unrelated Secrets that was 16 MB of a fresh operator's RSS (BENCHMARKS.md). Such a
    Secret's memory is made ephemeral (kopf's own mode for objects that may never exist): created for
    the event and dropped after it. A Secret that comes into use gets a kept memory from its next event.
    """

    def __init__(self, runtime_ref: dict[str, Runtime]) -> None:
        super().__init__()
        self._runtime_ref = runtime_ref

    def _keep(self, raw_body: Any) -> bool:
        rt = self._runtime_ref.get("rt")
        if rt is None or raw_body.get("kind") != "Secret" or raw_body.get("apiVersion", "v1") != "v1":
            return True
        meta = raw_body.get("metadata") or {}
        return secret_in_use(rt, meta.get("namespace", ""), meta.get("name", ""))

    async def recall(
        self, raw_body: Any, *, memobase: Any = None, noticed_by_listing: bool = False, ephemeral: bool = False
    ) -> Any:
        return await super().recall(
            raw_body,
            memobase=memobase,
            noticed_by_listing=noticed_by_listing,
            ephemeral=ephemeral or not self._keep(raw_body),
        )


def _post(body: Any, events: list[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def apply_outcome(outcome: Outcome, body: Any, patch: kopf.Patch) -> None:
    delta = outcome.status_patch(dict(body.get("status") or {}))
    for key, value in delta.items():
        patch.status[key] = value
    _post(body, outcome.events)


DRIFT_INTERVAL_ANNOTATION = "goodmem.ai/drift-interval"
# The least a namespace may ask for with the annotation: every drift check is a registry GET out of the budget all
# namespaces share ("0.0001" once made 395 GETs in 3 s from a single LLM). The operator's own --drift-interval is set
# by whoever runs the operator and is not floored. It is also how often a drift daemon re-reads the annotation.
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


async def run_reconcile(rt: Runtime, body: Any, trigger: str) -> Outcome:
    """The reconcile plus its metrics; every path goes through here."""
    obj = LLMObject.from_body(body)
    started = time.monotonic()
    with tenant(obj.namespace):  # its registry calls queue in its namespace's turn (fairness.py)
        outcome = await rt.reconciler.reconcile(obj, trigger=trigger)
    if rt.metrics is not None:
        rt.metrics.reconciled(obj.uid, trigger, outcome, time.monotonic() - started)
    return outcome


# C901 excepted: mccabe counts the branches of every handler nested here; each handler alone is under 10. The
# handlers move to module level with the one requeue path (issue #14 part 3), which removes this exception.
def build_registry(  # noqa: C901
    runtime_ref: dict[str, Runtime], *, drift_interval: float, recheck: float = DRIFT_INTERVAL_FLOOR
) -> kopf.OperatorRegistry:
    """All handlers, on a registry of their own.  `runtime_ref['rt']` is filled at startup.

    Drift: a daemon per LLM reconciles when the LLM's interval (annotation
    goodmem.ai/drift-interval, at least DRIFT_INTERVAL_FLOOR, else `drift_interval`, times a stable
    per-resource jitter) has passed since its last reconcile of any kind; a changed annotation is
    seen within `recheck` seconds, from the daemon's first wait on.
    """
    registry = kopf.OperatorRegistry()

    def rt() -> Runtime:
        return runtime_ref["rt"]

    # -- who uses which Secret, and the latest LLM bodies for Secret-driven reconciles ------------
    # Our own maps, not @kopf.index: kopf's index readiness gate makes startup quadratic (llm_index.py).

    @kopf.on.event(GROUP, VERSION, PLURAL, id=INDEX_HANDLER, registry=registry)
    async def index_llm(event: Any, body: Any, **_: Any) -> None:
        released = rt().index.observe(body, deleted=event.get("type") == "DELETED")
        if released is not None:
            rt().secret_cache.forget(*released)  # no LLM uses it any more: keep no copy

    # -- the LLM lifecycle ---------------------------------------------------------------------

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile", registry=registry)
    async def reconcile_llm(body: Any, patch: kopf.Patch, reason: str, **_: Any) -> None:
        outcome = await run_reconcile(rt(), body, str(reason))
        apply_outcome(outcome, body, patch)
        if outcome.retry_after is not None:
            raise kopf.TemporaryError(_retry_message(outcome), delay=outcome.retry_after)

    @kopf.daemon(GROUP, VERSION, PLURAL, id="drift", cancellation_timeout=5.0, registry=registry)
    async def observe_drift(stopped: kopf.DaemonStopped, body: Any, uid: str, **_: Any) -> None:
        """One quiet loop per LLM: re-observe when its drift interval has passed since its last reconcile."""
        # `body` is a live view in kopf daemons: annotation changes are seen on the next wake-up, and no wait is
        # longer than `recheck`, the first one included.
        started = time.monotonic()
        # Before any reconcile of this LLM is recorded, the first check is due this share of an interval after the
        # daemon started (a restart's checks spread out); once one is, an interval (with jitter) after the last one.
        first_share = random.uniform(0.5, 1.0)
        warned: str | None = None  # the clamped annotation value last warned about
        retry_in: float | None = None
        while not stopped:
            meta = body.get("metadata", {})
            if meta.get("deletionTimestamp"):
                return
            interval = drift_interval_of(meta.get("annotations"), drift_interval)
            if interval.clamped_from is not None and interval.clamped_from != warned:
                kopf.event(body, type="Warning", reason=DRIFT_INTERVAL_CLAMPED, message=drift_clamped_message(interval))
            warned = interval.clamped_from
            if retry_in is None:
                last = rt().reconciler.last_observed.get(uid)
                if last is None:
                    remaining = interval.seconds * first_share - (time.monotonic() - started)
                else:
                    remaining = interval.seconds * _jitter(uid) - (time.monotonic() - last)
                if remaining > 0:
                    await stopped.wait(min(remaining, recheck))
                    continue
            retry_in = await reconcile_and_write(rt(), snapshot(body), "drift")
            if retry_in is not None:
                # A failed drift check is retried on its backoff, not a whole interval later,
                # unless another reconcile comes in between (its path then owns the retry).
                stamp = rt().reconciler.last_observed.get(uid)
                await stopped.wait(retry_in)
                if rt().reconciler.last_observed.get(uid) != stamp:
                    retry_in = None

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="release", registry=registry)
    async def release_llm(body: Any, patch: kopf.Patch, **_: Any) -> None:
        obj = LLMObject.from_body(body)
        try:
            with tenant(obj.namespace):  # as in run_reconcile: the namespace's own turn at the registry
                events = await rt().reconciler.finalize(obj)
        except RetryLater as exc:
            deleting = cond.deleting(f"{exc} (retrying in {exc.delay:g}s)")
            patch.status["conditions"] = cond.dump(cond.set_conditions(None, [deleting], obj.generation))
            raise kopf.TemporaryError(str(exc), delay=exc.delay) from None
        if rt().metrics is not None:
            rt().metrics.forget(obj.uid)
        _post(body, events)

    # -- Secrets: events only (no create/update handlers, so nothing is ever written to a Secret) --

    def watched(namespace: str | None, name: str, **_: Any) -> bool:
        """A Secret some LLM uses, or one still cached: every other Secret event is dropped before a handler
        runs (no log line, no cache entry, no work for the labelled Secrets no LLM uses). Secrets without
        the credentials label are not even sent: the watch selects by label (`select_credential_secrets`)."""
        return secret_in_use(rt(), namespace or "", name)

    @kopf.on.event("", "v1", "secrets", id="secret-changed", when=watched, registry=registry)
    async def secret_changed(event: Any, namespace: str | None, name: str, body: Any, **_: Any) -> None:
        namespace = namespace or ""  # kopf types it optional; Secrets are namespaced
        # Gaining the credentials label comes as ADDED, losing it as DELETED (the watch selects by label);
        # an unlabelled body (should the selector be off) is kept as "not labelled", without its data.
        # Either way the users are reconciled: they take up the Secret, or show SecretNotLabelled.
        users = rt().index.users(namespace, name)
        cache = rt().secret_cache
        before = cache.peek(namespace, name)
        kind = event.get("type")
        cache.observe(namespace, name, body, deleted=kind == "DELETED", referenced=bool(users))
        if not users:
            return
        if kind is None and before is UNKNOWN:
            return  # a listing, and nothing known of this Secret yet: the resume handlers cover its users
        # A listing (kind None) also comes after kopf restarts a watch (410 Gone, say after an API server
        # restart): a Secret that changed while the watch was away shows up only there.
        if kind != "DELETED" and before == cache.peek(namespace, name):
            return
        # All users at once: the registry client's limiter bounds concurrency and rate (bench/ANALYSIS.md #4).
        await asyncio.gather(
            *(_reconcile_from_index(rt(), namespace, llm_name, trigger="secret") for llm_name in users)
        )

    return registry


async def _reconcile_from_index(rt: Runtime, namespace: str, name: str, *, trigger: str) -> None:
    """Reconcile an LLM outside kopf's handler machinery (a Secret changed) and write its status."""
    body = rt.index.body(namespace, name)
    if body is None:
        return
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return
    retry_in = await reconcile_and_write(rt, body, trigger)
    key = (namespace, name)
    pending = rt._retries.pop(key, None)
    if pending is not None and pending is not asyncio.current_task():
        pending.cancel()
    if retry_in is not None:
        uid = (body.get("metadata") or {}).get("uid", "")
        stamp = rt.reconciler.last_observed.get(uid)

        async def later() -> None:
            await asyncio.sleep(retry_in)
            rt._retries.pop(key, None)
            if rt.reconciler.last_observed.get(uid) != stamp:
                return  # reconciled since (or deleted): that path owns any retry
            await _reconcile_from_index(rt, namespace, name, trigger=trigger)

        rt._retries[key] = asyncio.create_task(later())


# Outside kopf's handlers nothing retries for us: a reconcile whose status could not be written, or
# that failed unexpectedly (say, a Secret read while the API server is away), is tried again after this.
SIDE_PATH_RETRY = 10.0


async def reconcile_and_write(rt: Runtime, body: dict[str, Any], trigger: str) -> float | None:
    """Reconcile outside a kopf change handler (drift, Secret), write the status delta through /status
    and post the Events.  Returns when to try again (seconds), or None when nothing needs retrying:
    the outcome's backoff for a retryable failure, SIDE_PATH_RETRY when the status write or the
    reconcile itself failed."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        outcome = await run_reconcile(rt, body, trigger)
    except Exception as exc:
        log.warning(
            "%s/%s: %s reconcile failed: %s; retrying in %gs",
            namespace,
            name,
            trigger,
            type(exc).__name__,
            SIDE_PATH_RETRY,
        )
        return SIDE_PATH_RETRY
    written = True
    delta = outcome.status_patch(dict(body.get("status") or {}))
    if delta:
        try:
            await rt.status_writer(namespace, name, delta)
        except Exception as exc:
            log.warning("%s/%s: could not write status: %s", namespace, name, type(exc).__name__)
            written = False
    _post(body, outcome.events)
    if outcome.retry_after is not None:
        return outcome.retry_after
    return None if written else SIDE_PATH_RETRY


def _retry_message(outcome: Outcome) -> str:
    synced = outcome.condition(cond.SYNCED) or {}
    return f"{synced.get('reason', 'Error')}: {synced.get('message', '')}"
