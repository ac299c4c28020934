"""The one requeue path (issue #14 part 3): keyed de-duplication, per-namespace order, delays and backoff, a
reconcile elsewhere replacing a pending retry (a changed spec), never a key twice at once, and a shutdown that
leaves no task. Due times run on a fake clock (`wake()` by hand): no wall-clock assertion."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from goodmem_operator.fairness import TENANT
from goodmem_operator.requeue import Key, Next, Requeue

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """The work function: records (time, key, trigger, tenant); `script` decides what each call returns; `gate`,
    when set, holds every call until it is opened."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, Key, str, str]] = []
        self.script: dict[Key, list[Any]] = {}
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.most_in_flight: dict[Key, int] = {}
        self.active: dict[Key, int] = {}

    async def __call__(self, key: Key, trigger: str) -> Next | None:
        self.calls.append((self.clock.now, key, trigger, TENANT.get()))
        self.active[key] = self.active.get(key, 0) + 1
        self.most_in_flight[key] = max(self.most_in_flight.get(key, 0), self.active[key])
        try:
            if self.gate is not None:
                await self.gate.wait()
            answers = self.script.get(key)
            answer = answers.pop(0) if answers else None
            if isinstance(answer, Exception):
                raise answer
            return answer  # type: ignore[no-any-return]
        finally:
            self.active[key] -= 1

    def order(self) -> list[Key]:
        return [key for _, key, _, _ in self.calls]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def work(clock: Clock) -> Recorder:
    return Recorder(clock)


@pytest.fixture
async def queue(clock: Clock, work: Recorder) -> AsyncIterator[Requeue]:
    q = Requeue(work, concurrency=4, clock=clock)
    yield q
    await q.aclose()


async def advance(q: Requeue, clock: Clock, to: float) -> None:
    clock.now = to
    q.wake()
    await q.idle()


A, B, C = ("team-a", "x"), ("team-b", "y"), ("team-a", "z")


async def test_a_key_submitted_many_times_is_reconciled_once(queue: Requeue, clock: Clock, work: Recorder) -> None:
    for _ in range(3):
        queue.add(A, "drift", 5.0)
    queue.add(A, "secret", 5.0)
    await advance(queue, clock, 5.0)
    assert [(t, k, trig) for t, k, trig, _ in work.calls] == [(5.0, A, "drift")]


async def test_the_earliest_due_time_wins_and_a_later_one_never_postpones(
    queue: Requeue, clock: Clock, work: Recorder
) -> None:
    queue.add(A, "drift", 600.0)
    queue.add(A, "update", 5.0)
    assert queue.pending(A) == ("update", 5.0), "sooner: it replaces the drift check"
    queue.add(A, "drift", 600.0)
    assert queue.pending(A) == ("update", 5.0), "later: it changes nothing"
    await advance(queue, clock, 4.9)
    assert work.calls == []
    await advance(queue, clock, 5.0)
    assert work.order() == [A] and len(queue) == 0


async def test_a_failed_reconcile_is_retried_on_the_delay_it_returns(
    queue: Requeue, clock: Clock, work: Recorder
) -> None:
    work.script[A] = [Next("update", 2.0), Next("update", 4.0), Next("drift", 600.0)]
    queue.add(A, "update")
    await queue.idle()
    assert queue.pending(A) == ("update", 2.0)
    await advance(queue, clock, 1.0)
    await advance(queue, clock, 2.0)
    await advance(queue, clock, 5.0)
    await advance(queue, clock, 6.0)
    assert [t for t, _, _, _ in work.calls] == [0.0, 2.0, 6.0]
    assert queue.pending(A) == ("drift", 600.0), "in sync: the next turn is the drift check"


async def test_a_reconcile_that_raises_is_tried_again_after_the_error_delay(
    queue: Requeue, clock: Clock, work: Recorder
) -> None:
    work.script[A] = [RuntimeError("API server away")]
    queue.add(A, "secret")
    await queue.idle()
    assert queue.pending(A) == ("secret", queue.error_delay)
    await advance(queue, clock, queue.error_delay)
    assert len(work.calls) == 2


async def test_keys_are_served_in_turn_across_namespaces(clock: Clock) -> None:
    work = Recorder(clock)
    q = Requeue(work, concurrency=1, clock=clock)
    try:
        for i in range(4):
            q.add(("busy", f"llm-{i}"), "secret", 1.0)
        q.add(("quiet", "llm"), "secret", 1.0)  # submitted last, all come due at once
        await advance(q, clock, 1.0)
        assert work.order()[:2] == [("busy", "llm-0"), ("quiet", "llm")], work.order()
        assert all(ns == key[0] for _, key, _, ns in work.calls), "each reconcile runs as its namespace's tenant"
    finally:
        await q.aclose()


async def test_one_namespace_never_holds_every_slot(clock: Clock) -> None:
    work = Recorder(clock)
    work.gate = asyncio.Event()
    q = Requeue(work, concurrency=3, clock=clock)
    try:
        for i in range(5):
            q.add(("busy", f"llm-{i}"), "secret")
        await asyncio.sleep(0)
        assert q.running == 2, "busy holds at most concurrency - 1"
        q.add(("quiet", "llm"), "secret")
        await asyncio.sleep(0)
        assert ("quiet", "llm") in work.order(), "the slot left free goes to the other namespace at once"
        work.gate.set()
        await q.idle()
        assert len(work.calls) == 6
    finally:
        await q.aclose()


async def test_a_reconcile_elsewhere_replaces_a_pending_retry(queue: Requeue, clock: Clock, work: Recorder) -> None:
    """A changed spec: kopf's update handler reconciles at once (in a `turn`), and its outcome decides the next
    turn; the retry that was waiting out its backoff is dropped, not run afterwards."""
    queue.add(A, "update", 300.0)
    with queue.turn(A) as turn:
        turn.then = Next("drift", 600.0)
    assert queue.pending(A) == ("drift", 600.0)
    await advance(queue, clock, 300.0)
    assert work.calls == []


async def test_an_entry_added_during_a_reconcile_elsewhere_runs_after_it(
    queue: Requeue, clock: Clock, work: Recorder
) -> None:
    """A Secret rotated while kopf's handler reconciles: that reconcile may have read the old value, so the Secret's
    turn is kept, and runs when the handler's reconcile ends (not during it)."""
    with queue.turn(A) as turn:
        queue.add(A, "secret")
        await asyncio.sleep(0)
        assert work.calls == [], "not while the key is being reconciled"
        turn.then = Next("drift", 600.0)
    await queue.idle()
    assert [(k, trig) for _, k, trig, _ in work.calls] == [(A, "secret")]


async def test_a_key_is_never_reconciled_twice_at_once(queue: Requeue, clock: Clock, work: Recorder) -> None:
    work.gate = asyncio.Event()
    queue.add(A, "secret")
    await asyncio.sleep(0)
    queue.add(A, "secret")  # rotated again while the first reconcile runs
    queue.add(B, "secret")
    await asyncio.sleep(0)
    assert work.order() == [A, B]
    work.gate.set()
    await queue.idle()
    assert work.order() == [A, B, A], "the second rotation gets its own reconcile, after the first"
    assert work.most_in_flight[A] == 1


async def test_a_discarded_key_never_runs(queue: Requeue, clock: Clock, work: Recorder) -> None:
    queue.add(A, "drift", 10.0)
    queue.add(C, "secret", 10.0)
    queue.discard(A)
    await advance(queue, clock, 10.0)
    assert work.order() == [C] and queue.pending(A) is None


async def test_shutdown_cancels_everything_and_leaves_no_task(clock: Clock) -> None:
    work = Recorder(clock)
    work.gate = asyncio.Event()  # never opened: the reconciles hang
    q = Requeue(work, concurrency=4, clock=clock)
    before = asyncio.all_tasks()
    for i in range(3):
        q.add(("ns", f"llm-{i}"), "secret")
    q.add(("ns", "later"), "drift", 600.0)
    await asyncio.sleep(0)
    assert q.running == 3 and len(asyncio.all_tasks() - before) == 3
    await asyncio.wait_for(q.aclose(), 10)  # a hang guard, not a time assertion: aclose must cancel, not wait
    assert q.running == 0 and asyncio.all_tasks() == before and len(q) == 0
    q.add(("ns", "after"), "secret")
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before and len(work.calls) == 3, "a closed queue starts nothing"
