"""Fair share of the registry client: one wait queue per tenant (namespace), served in turn.

The registry client has one budget for the whole operator: `concurrency` requests in flight and
`rate` requests per second (a token bucket). A single FIFO in front of that budget lets one namespace
with thousands of LLMs, a tight loop or entries the registry keeps answering 429 fill the queue, and
every other namespace's single create waits behind all of it. Here every tenant has a queue of its
own, and each free slot goes to:

1. a tenant with waiters and fewer than `per_tenant` requests in flight (the per-tenant cap: one
   namespace's slow requests can never hold every slot), and among those
2. the one with the fewest requests in flight (a namespace that has nothing in flight goes first), and
   among equals
3. the one whose turn came longest ago (round robin).

Each grant still takes one global slot and one token from the global bucket: fairness decides the
order, never the total. The tenant is read from `TENANT`, a context variable the kopf glue sets
around each reconcile and finalize (`handlers.run_reconcile`, `handlers.release_llm`), so the client's
verbs need no extra argument; a call outside any tenant shares the tenant "".

`FairScheduler` is the bookkeeping alone (no asyncio, an injectable clock: its unit tests are
deterministic); `FairLimiter` puts futures and one timer around it. The operator's requeue (requeue.py) orders
its due keys with a `FairScheduler` too, without a token bucket (`rate=None`): its slots are reconciles, and
their registry requests pass this limiter's bucket anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

#: The tenant (namespace) on whose behalf registry calls are made in the current task.
TENANT: contextvars.ContextVar[str] = contextvars.ContextVar("goodmem_tenant", default="")

W = TypeVar("W", bound=Hashable)


@contextlib.contextmanager
def tenant(name: str) -> Iterator[None]:
    """Registry calls made inside this block (and in tasks it starts) are queued as `name`'s."""
    token = TENANT.set(name)
    try:
        yield
    finally:
        TENANT.reset(token)


def default_per_tenant(concurrency: int) -> int:
    """One slot fewer than the whole: a lone busy namespace keeps nearly all the concurrency (throughput is
    in-flight / latency, so at 100 ms a registry answers 15 in flight at 150 req/s, above the default budget of
    100, where half the slots would give 80), and one slot always stays for the others. Together with
    fewest-in-flight-first, a namespace that waits gets the next slot that frees."""
    return max(1, concurrency - 1)


class FairScheduler(Generic[W]):
    """Who gets the next slot: per-tenant queues, a per-tenant cap, one global token bucket (none if `rate` is
    None: then only the slots limit)."""

    def __init__(
        self,
        concurrency: int,
        rate: float | None,
        *,
        burst: int | None = None,
        per_tenant: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.per_tenant = max(
            1, min(self.concurrency, per_tenant if per_tenant is not None else default_per_tenant(self.concurrency))
        )
        self.rate = None if rate is None else max(0.001, rate)
        self.capacity = float(burst if burst is not None else max(1, int(rate or 1)))
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self._queues: dict[str, OrderedDict[W, None]] = {}
        self._turns: OrderedDict[str, None] = OrderedDict()  # tenants with waiters, longest since a grant first
        self.in_flight: dict[str, int] = {}
        self.active = 0

    # -- waiters ---------------------------------------------------------------------------------

    def add(self, tenant: str, waiter: W) -> None:
        self._queues.setdefault(tenant, OrderedDict())[waiter] = None
        if tenant not in self._turns:
            self._turns[tenant] = None

    def remove(self, tenant: str, waiter: W) -> bool:
        """A waiter gave up before its grant (its task was cancelled). False if it was not waiting."""
        queue = self._queues.get(tenant)
        if queue is None or waiter not in queue:
            return False
        del queue[waiter]
        if not queue:
            self._drop(tenant)
        return True

    def waiting(self, tenant: str | None = None) -> int:
        if tenant is not None:
            return len(self._queues.get(tenant, ()))
        return sum(len(q) for q in self._queues.values())

    def _drop(self, tenant: str) -> None:
        self._queues.pop(tenant, None)
        self._turns.pop(tenant, None)

    # -- grants ----------------------------------------------------------------------------------

    def _refill(self) -> None:
        if self.rate is None:
            return
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def token_wait(self) -> float:
        """Seconds until the bucket holds a whole token (0 when it does)."""
        self._refill()
        if self.rate is None or self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self.rate

    def _next_tenant(self) -> str | None:
        best: str | None = None
        for name in self._turns:  # oldest turn first; the strict `<` keeps the oldest among equals
            flying = self.in_flight.get(name, 0)
            if flying >= self.per_tenant:
                continue
            if best is None or flying < self.in_flight.get(best, 0):
                best = name
                if flying == 0:
                    break  # nobody can beat an idle tenant that has waited longest
        return best

    def grants(self) -> list[tuple[str, W]]:
        """Every grant that can be made now, in order; each takes a slot and a token."""
        out: list[tuple[str, W]] = []
        while self.active < self.concurrency:
            name = self._next_tenant()
            if name is None:
                break
            if self.rate is not None:
                self._refill()
                if self._tokens < 1:
                    break
                self._tokens -= 1
            queue = self._queues[name]
            waiter, _ = queue.popitem(last=False)
            self.active += 1
            self.in_flight[name] = self.in_flight.get(name, 0) + 1
            if queue:
                self._turns.move_to_end(name)  # its turn is over: to the back of the line
            else:
                self._drop(name)
            out.append((name, waiter))
        return out

    def blocked_on_tokens(self) -> bool:
        """Whether a waiter could be served but for the token bucket (then a timer must come back)."""
        return self.rate is not None and self.active < self.concurrency and self._next_tenant() is not None

    def release(self, tenant: str) -> None:
        """A granted request is over (whatever its result)."""
        self.active -= 1
        left = self.in_flight.get(tenant, 0) - 1
        if left > 0:
            self.in_flight[tenant] = left
        else:
            self.in_flight.pop(tenant, None)


class _Slot:
    """`async with limiter.slot():` one registry request for the tenant current when `slot()` was called."""

    __slots__ = ("_limiter", "_tenant")

    def __init__(self, limiter: FairLimiter, tenant: str) -> None:
        self._limiter = limiter
        self._tenant = tenant

    async def __aenter__(self) -> None:
        await self._limiter.acquire(self._tenant)

    async def __aexit__(self, *exc: object) -> None:
        self._limiter.release(self._tenant)


class FairLimiter:
    """At most `concurrency` requests in flight (at most `per_tenant` of one tenant) and `rate` per second,
    granted fairly across tenants (see the module docstring)."""

    def __init__(
        self,
        concurrency: int,
        rate: float,
        *,
        burst: int | None = None,
        per_tenant: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scheduler: FairScheduler[asyncio.Future[None]] = FairScheduler(
            concurrency, rate, burst=burst, per_tenant=per_tenant, clock=clock
        )
        self._timer: asyncio.TimerHandle | None = None

    def slot(self, tenant: str | None = None) -> _Slot:
        return _Slot(self, TENANT.get() if tenant is None else tenant)

    async def acquire(self, tenant: str) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.scheduler.add(tenant, fut)
        self._dispatch()
        try:
            await fut
        except asyncio.CancelledError:
            if not self.scheduler.remove(tenant, fut) and fut.done() and not fut.cancelled():
                self.release(tenant)  # granted, but the task was cancelled before it could use the slot
            raise

    def release(self, tenant: str) -> None:
        self.scheduler.release(tenant)
        self._dispatch()

    def _dispatch(self) -> None:
        while True:
            given_back = False
            for name, fut in self.scheduler.grants():
                if fut.done():  # cancelled while queued, before its task could withdraw it: the slot goes on
                    self.scheduler.release(name)
                    given_back = True
                else:
                    fut.set_result(None)  # cancelled after this, the waiter gives the slot back itself (acquire)
            if not given_back:
                break
        if self._timer is None and self.scheduler.blocked_on_tokens():
            self._timer = asyncio.get_running_loop().call_later(self.scheduler.token_wait(), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()
