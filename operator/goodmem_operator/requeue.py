"""The one requeue path: a keyed, delayed, de-duplicating work queue of reconciles, fair between namespaces.

controller-runtime's idea (every trigger becomes a key in one rate-limited queue, so there is one retry policy),
fitted to kopf: kopf's change handlers (create, resume, update) still reconcile at once, because kopf writes its own
bookkeeping in the same `/status` patch as their outcome (one API write); everything else is a key here. A key is
`(namespace, name)`; it is submitted by

- a Secret event: `add(key, "secret")`, due now, for each LLM that uses the Secret;
- the end of every reconcile of the key, wherever it ran (`turn`): its next turn, the retry on the engine's backoff
  after a failure, else the next drift check.

The queue

- de-duplicates: a key is pending at most once, and the earliest due time wins (a Secret event now beats a drift
  check in ten minutes); a pending entry is dropped when a reconcile of its key that started after it was added
  ends: that reconcile read the newer state (a changed spec ends a retry delay at once, since kopf's update handler
  reconciles and its turn replaces the pending retry);
- never reconciles a key twice at once: an entry that comes due while its key is being reconciled, here or in a kopf
  handler, waits for that reconcile to end;
- is fair between namespaces: due keys wait in one queue per namespace, served by `fairness.FairScheduler` (fewest
  reconciles in flight first, then round robin, a namespace at most `concurrency - 1`), and each reconcile runs
  with `fairness.tenant` set to its namespace, so its registry requests queue in that namespace's turn as well;
- is bounded: at most `concurrency` reconciles of its own at once (the registry client's limiter still bounds
  requests and their rate); the rate per key is its delay (the engine's backoff, or the drift interval);
- owns its tasks: `aclose` cancels them and the timer, and waits for them.

No kopf and no Kubernetes here: the work function is the kopf glue's (handlers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from goodmem_operator.fairness import FairScheduler, tenant

log = logging.getLogger("goodmem_operator.requeue")

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Next:
    """A key's next turn: what triggers it (the metrics label) and in how many seconds."""

    trigger: str
    delay: float


Work = Callable[[Key, str], Awaitable[Next | None]]


@dataclass(frozen=True)
class _Entry:
    due: float
    trigger: str
    seq: int  # when it was added, in the queue's own order (a reconcile's `mark` is on the same scale)


class Turn:
    """One reconcile of a key in progress; whoever runs it sets `then`, the key's next turn (None: none)."""

    __slots__ = ("then",)

    def __init__(self) -> None:
        self.then: Next | None = None


class Requeue:
    """Keys due at a time, run by `work(key, trigger)` (which returns the key's next turn) in fair order."""

    def __init__(
        self,
        work: Work,
        *,
        concurrency: int = 32,
        per_namespace: int | None = None,
        error_delay: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._work = work
        self._clock = clock
        self.error_delay = error_delay  # when `work` raised: tried again after this
        self._fair: FairScheduler[Key] = FairScheduler(concurrency, None, per_tenant=per_namespace, clock=clock)
        self._entries: dict[Key, _Entry] = {}  # the pending turn of each key
        self._heap: list[tuple[float, int, Key]] = []  # entries not yet due (stale items are skipped)
        self._ready: set[Key] = set()  # due, waiting in the fair scheduler for a slot
        self._running: Counter[Key] = Counter()  # keys being reconciled, here or elsewhere (`turn`)
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = float("inf")
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    # -- submitting ----------------------------------------------------------------------------------

    def add(self, key: Key, trigger: str, delay: float = 0.0) -> None:
        """Reconcile `key` in `delay` seconds, unless it is already due sooner."""
        self._put(key, trigger, delay)
        self._kick()

    def discard(self, key: Key) -> None:
        """Forget the key's pending turn (the object is gone); a reconcile in progress goes on."""
        self._entries.pop(key, None)
        if key in self._ready:
            self._ready.discard(key)
            self._fair.remove(key[0], key)
        self._kick()

    @contextlib.contextmanager
    def turn(self, key: Key) -> Iterator[Turn]:
        """Around a reconcile of `key` that runs outside the queue (kopf's change handlers): the queue does not run
        the key meanwhile, drops the entries the reconcile satisfies, and schedules `turn.then` when it ends."""
        mark = self._begin(key)
        turn = Turn()
        try:
            yield turn
        finally:
            self._end(key, mark, turn.then)
            self._kick()

    # -- looking -------------------------------------------------------------------------------------

    def pending(self, key: Key) -> tuple[str, float] | None:
        """The key's pending turn: (trigger, seconds from now), or None."""
        entry = self._entries.get(key)
        return None if entry is None else (entry.trigger, entry.due - self._clock())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def running(self) -> int:
        """Reconciles the queue itself has in progress."""
        return len(self._tasks)

    async def idle(self) -> None:
        """Until nothing is due and nothing the queue started is running (entries due later may remain)."""
        await self._idle.wait()

    def wake(self) -> None:
        """Move the entries that have come due to their namespace's queue and start what may start (the timer
        calls it; a test on a fake clock too)."""
        if self._timer is not None:
            self._timer.cancel()  # when called by hand; harmless from the timer itself
        self._timer = None
        self._timer_due = float("inf")
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            _due, seq, key = heapq.heappop(self._heap)
            entry = self._entries.get(key)
            if entry is not None and entry.seq == seq:
                self._promote(key)
        self._kick()

    async def aclose(self) -> None:
        """Cancel the timer and every reconcile the queue started, and wait for them; nothing runs afterwards."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._entries.clear()
        self._heap.clear()
        self._ready.clear()
        self._idle.set()

    # -- bookkeeping ---------------------------------------------------------------------------------

    def _put(self, key: Key, trigger: str, delay: float) -> None:
        due = self._clock() + max(0.0, delay)
        entry = self._entries.get(key)
        if entry is not None and entry.due <= due:
            return  # already due as soon: one turn serves both
        self._seq += 1
        self._entries[key] = _Entry(due, trigger, self._seq)
        if len(self._heap) > 2 * len(self._entries) + 64:  # replaced entries leave stale items: compact now and then
            self._heap = [(d, s, k) for d, s, k in self._heap if (e := self._entries.get(k)) is not None and e.seq == s]
            heapq.heapify(self._heap)
        self._promote(key)

    def _promote(self, key: Key) -> None:
        """Put the key's entry where it belongs: its namespace's queue if due (and the key is not running), else the
        timer's heap. A running key's entry is looked at again when the reconcile ends."""
        entry = self._entries.get(key)
        if entry is None or key in self._ready or self._running[key]:
            return
        if entry.due <= self._clock():
            self._ready.add(key)
            self._fair.add(key[0], key)
        else:
            heapq.heappush(self._heap, (entry.due, entry.seq, key))

    def _begin(self, key: Key) -> int:
        self._running[key] += 1
        if key in self._ready:  # due, but now being reconciled: held until that ends
            self._ready.discard(key)
            self._fair.remove(key[0], key)
        self._seq += 1
        return self._seq

    def _end(self, key: Key, mark: int, then: Next | None) -> None:
        self._running[key] -= 1
        if self._running[key] <= 0:
            del self._running[key]
        entry = self._entries.get(key)
        if entry is not None and entry.seq < mark:
            del self._entries[key]  # added before this reconcile started: satisfied by it
        if then is not None and not self._closed:
            self._put(key, then.trigger, then.delay)
        self._promote(key)

    def _kick(self) -> None:
        """Start what may start, set the timer for the earliest entry not yet due, and keep `idle` current."""
        if self._closed:
            return
        for namespace, key in self._fair.grants():
            self._ready.discard(key)
            entry = self._entries.pop(key, None)
            if entry is None:  # cannot happen (discard withdraws it); give the slot back rather than leak it
                self._fair.release(namespace)
                continue
            mark = self._begin(key)  # running from now on, not from when the task first runs
            task = asyncio.get_running_loop().create_task(self._run(namespace, key, entry.trigger, mark))
            self._tasks.add(task)
            task.add_done_callback(self._done)
        self._arm()
        self._check_idle()

    async def _run(self, namespace: str, key: Key, trigger: str, mark: int) -> None:
        try:
            with tenant(namespace):  # every registry call of this reconcile queues in its namespace's turn
                then: Next | None = None
                try:
                    then = await self._work(key, trigger)
                except Exception as exc:
                    # Never the message: it could quote anything. The key is tried again; nothing is lost.
                    log.warning(
                        "%s/%s: %s reconcile failed: %s; retrying in %gs",
                        *key,
                        trigger,
                        type(exc).__name__,
                        self.error_delay,
                    )
                    then = Next(trigger, self.error_delay)
                finally:
                    self._end(key, mark, then)
        finally:
            self._fair.release(namespace)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._kick()

    def _arm(self) -> None:
        while self._heap:
            due, seq, key = self._heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry.seq == seq and key not in self._ready and not self._running[key]:
                break
            heapq.heappop(self._heap)  # stale: replaced, discarded, due already or running
        if not self._heap:
            return
        due = self._heap[0][0]
        if self._timer is not None and self._timer_due <= due:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = asyncio.get_running_loop().call_later(max(0.0, due - self._clock()), self.wake)

    def _check_idle(self) -> None:
        if self._tasks or self._ready:
            self._idle.clear()
        else:
            self._idle.set()
