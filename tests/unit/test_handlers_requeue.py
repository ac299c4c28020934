"""The kopf glue over the one requeue path (issue #14 part 3): kopf's change handlers reconcile at once and write
into kopf's own patch, but never retry through kopf; every retry, Secret fan-out and drift check is a key in the
requeue, whose reconciles read the index's latest body and write through the one status writer. Real handlers and
requeue, a scripted reconciler, a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest

from goodmem_operator.fairness import TENANT
from goodmem_operator.handlers import SIDE_PATH_RETRY, Memo, Runtime, build_registry
from goodmem_operator.reconcile import Outcome, Result
from goodmem_operator.secrets import SecretCache

pytestmark = pytest.mark.unit

KEY = ("team-a", "gpt")


def failed(delay: float) -> Outcome:
    return Outcome(
        status={"llmId": "e1", "lastError": f"down, retrying in {delay:g}s"}, retry_after=delay, result=Result.ERROR
    )


def synced() -> Outcome:
    return Outcome(status={"llmId": "e1", "lastError": None}, result=Result.SUCCESS)


class Scripted:
    """A reconciler whose outcomes are scripted; records (time, trigger, displayName, tenant) per call."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.outcomes: list[Outcome | Exception] = []
        self.calls: list[tuple[float, str, str, str]] = []
        self.registry = None

    async def reconcile(self, obj: Any, *, trigger: str) -> Outcome:
        self.calls.append((self.rig.now, trigger, obj.spec.get("displayName", ""), TENANT.get()))
        answer = self.outcomes.pop(0) if self.outcomes else synced()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def finalize(self, obj: Any) -> list[Any]:
        return []


class Rig:
    def __init__(self) -> None:
        self.now = 0.0
        self.writes: list[tuple[float, str, str, dict[str, Any]]] = []
        self.write_fails = False
        self.rec = Scripted(self)
        self.rt = Runtime(
            reconciler=self.rec,  # type: ignore[arg-type]
            secret_cache=SecretCache(),
            status_writer=self.write,
            drift_interval=600.0,
            clock=lambda: self.now,
        )
        self.memo = Memo(runtime=self.rt)
        registry = build_registry()
        handlers = [*registry._changing.get_all_handlers(), *registry._watching.get_all_handlers()]
        self.fn = {h.id: h.fn for h in handlers}
        self.body: dict[str, Any] = {
            "apiVersion": "goodmem.ai/v1alpha1",
            "kind": "LLM",
            "metadata": {"namespace": KEY[0], "name": KEY[1], "uid": "uid-1", "generation": 1},
            "spec": {"displayName": "v1"},
            "status": {},
        }

    async def write(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        if self.write_fails:
            raise ConnectionError("API server away")
        self.writes.append((self.now, namespace, name, status))
        self.body["status"].update(status)  # what the watch brings back
        self.rt.index.observe(self.body, deleted=False)

    async def kopf(self, reason: str) -> kopf.Patch:
        """kopf's change handler as kopf calls it (the LLM's event indexed first); returns kopf's patch."""
        self.rt.index.observe(self.body, deleted=False)
        patch = kopf.Patch()
        await self.fn["reconcile"](body=self.body, patch=patch, reason=reason, memo=self.memo)
        self.body["status"].update(dict(patch.get("status") or {}))  # kopf sends it; the watch brings it back
        self.rt.index.observe(self.body, deleted=False)
        return patch

    async def advance(self, to: float) -> None:
        self.now = to
        self.rt.requeue.wake()
        await self.rt.requeue.idle()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    yield r
    await r.rt.requeue.aclose()


async def test_a_failed_create_is_retried_by_the_requeue_and_not_by_kopf(rig: Rig) -> None:
    rig.rec.outcomes = [failed(5.0)]
    patch = await rig.kopf("create")  # returns: no kopf.TemporaryError, so kopf keeps no retry of its own
    assert dict(patch["status"]) == failed(5.0).status, "kopf's patch carries the outcome (one write with its own)"
    assert rig.rt.requeue.pending(KEY) == ("create", 5.0)
    await rig.advance(4.0)
    assert len(rig.rec.calls) == 1
    await rig.advance(5.0)
    assert [(t, trig) for t, trig, _, _ in rig.rec.calls] == [(0.0, "create"), (5.0, "create")]
    assert rig.writes == [(5.0, *KEY, {"lastError": None})], "the retry writes only what changed, through /status"
    trigger, delay = rig.rt.requeue.pending(KEY) or ("", 0.0)
    assert trigger == "drift" and 540 <= delay <= 660, "in sync: the next turn is the drift check"


async def test_a_changed_spec_ends_the_retry_delay_at_once(rig: Rig) -> None:
    rig.rec.outcomes = [failed(300.0)]
    await rig.kopf("create")
    rig.now = 7.0
    rig.body["spec"]["displayName"] = "v2"  # the user fixes the spec: kopf calls the update handler at once
    await rig.kopf("update")
    assert [(t, trig, name) for t, trig, name, _ in rig.rec.calls] == [(0.0, "create", "v1"), (7.0, "update", "v2")]
    assert rig.rt.requeue.pending(KEY)[0] == "drift"  # type: ignore[index]
    await rig.advance(300.0)
    assert len(rig.rec.calls) == 2, "the retry that was waiting out its delay is gone, not run as well"


async def test_an_unexpected_failure_or_a_lost_status_write_is_tried_again(rig: Rig) -> None:
    rig.rec.outcomes = [RuntimeError("Secret read failed")]
    await rig.kopf("create")  # kopf's handler does not raise: the requeue owns the retry
    assert rig.rt.requeue.pending(KEY) == ("create", SIDE_PATH_RETRY)
    rig.write_fails = True
    await rig.advance(SIDE_PATH_RETRY)
    assert len(rig.rec.calls) == 2 and rig.writes == []
    assert rig.rt.requeue.pending(KEY) == ("create", SIDE_PATH_RETRY), "the status was not written: again"
    rig.write_fails = False
    await rig.advance(2 * SIDE_PATH_RETRY)
    assert len(rig.writes) == 1 and rig.rt.requeue.pending(KEY)[0] == "drift"  # type: ignore[index]


async def test_the_drift_check_reconciles_the_latest_body_and_writes_nothing_in_sync(rig: Rig) -> None:
    await rig.kopf("create")
    rig.body["metadata"]["annotations"] = {"team": "x"}
    rig.rt.index.observe(rig.body, deleted=False)  # a later event: the index holds the latest body
    _, delay = rig.rt.requeue.pending(KEY) or ("", 0.0)
    await rig.advance(delay)
    assert [trig for _, trig, _, _ in rig.rec.calls] == ["create", "drift"]
    assert rig.writes == [], "steady state: no API write"
    assert rig.rec.calls[1][3] == KEY[0], "the requeue's reconcile runs as its namespace's tenant"


async def test_a_deleted_llm_has_no_next_turn(rig: Rig) -> None:
    rig.rec.outcomes = [failed(5.0)]
    await rig.kopf("create")
    rig.body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    await rig.fn["release"](body=rig.body, patch=kopf.Patch(), memo=rig.memo)
    assert rig.rt.requeue.pending(KEY) is None
    await rig.advance(5.0)
    assert len(rig.rec.calls) == 1


async def test_a_turn_due_while_deleting_does_not_reconcile(rig: Rig) -> None:
    rig.rec.outcomes = [failed(5.0)]
    await rig.kopf("create")
    rig.body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    rig.rt.index.observe(rig.body, deleted=False)  # the deletion is seen before the finalizer handler ends
    await rig.advance(5.0)
    assert len(rig.rec.calls) == 1 and rig.rt.requeue.pending(KEY) is None


async def test_an_llm_deleted_event_drops_its_turn(rig: Rig) -> None:
    await rig.kopf("create")
    await rig.fn["llm-index"](event={"type": "DELETED"}, body=rig.body, memo=rig.memo)
    assert rig.rt.requeue.pending(KEY) is None and rig.rt.index.body(*KEY) is None


async def test_no_event_is_posted_into_a_namespace_being_deleted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The API server refuses new objects in a namespace being deleted, and kopf would retry each refused Event 9
    times over a minute: the release's Event goes to the log instead. Elsewhere it is posted as before."""
    from goodmem_operator.engine import Event

    rig = Rig()
    posted: list[str] = []
    monkeypatch.setattr(kopf, "event", lambda body, *, type, reason, message: posted.append(reason))

    async def finalize(obj: Any) -> list[Event]:
        return [Event("Normal", "Deleted", "registry entry e1 deleted")]

    monkeypatch.setattr(rig.rec, "finalize", finalize)
    rig.rt.terminating = lambda namespace: namespace == KEY[0]
    with caplog.at_level("INFO", logger="goodmem_operator.handlers"):
        await rig.fn["release"](body=rig.body, patch=kopf.Patch(), memo=rig.memo)
    assert posted == []
    assert "Normal Deleted: registry entry e1 deleted (no Event: the namespace is being deleted)" in caplog.text

    rig.rt.terminating = lambda namespace: False
    await rig.fn["release"](body=rig.body, patch=kopf.Patch(), memo=rig.memo)
    assert posted == ["Deleted"]
