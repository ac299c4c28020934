"""Fair share of the registry client (issue #13 part 5): per-namespace queues served in turn, a per-namespace
in-flight cap, one global token bucket. Deterministic: fake waiters and a fake clock, no wall-clock assertions."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from goodmem_operator.fairness import TENANT, FairLimiter, FairScheduler, default_per_tenant, tenant
from goodmem_operator.registry import RateLimited, RegistryClient

pytestmark = pytest.mark.unit

FAST = 1e9  # a rate at which the token bucket never decides anything


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def serve(s: FairScheduler, n: int) -> list[str]:
    """Grant and release one at a time (concurrency 1): the order in which waiters are served."""
    order: list[str] = []
    for _ in range(n):
        [(name, waiter)] = s.grants()
        order.append(waiter)
        s.release(name)
    return order


def test_turns_go_round_robin_across_namespaces() -> None:
    s: FairScheduler[str] = FairScheduler(1, FAST)
    for i in range(4):
        s.add("a", f"a{i}")
    s.add("b", "b0")
    s.add("b", "b1")
    s.add("c", "c0")
    assert serve(s, 7) == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


def test_a_late_lone_request_waits_for_at_most_one_grant_of_a_busy_namespace() -> None:
    s: FairScheduler[str] = FairScheduler(1, FAST)
    for i in range(2000):
        s.add("busy", f"busy{i}")
    [(name, _first)] = s.grants()
    s.add("lone", "create")  # arrives behind 1,999 waiters of another namespace
    s.release(name)
    assert serve(s, 3) == ["busy1", "create", "busy2"]  # a new namespace joins the back of the line, once


def test_fewest_in_flight_goes_first() -> None:
    s: FairScheduler[str] = FairScheduler(3, FAST, per_tenant=3)
    s.add("a", "a0")
    s.add("a", "a1")
    s.add("c", "c0")
    assert [w for _, w in s.grants()] == ["a0", "c0", "a1"]  # all 3 slots: a holds 2, c holds 1
    s.add("a", "a2")  # a's turn is older than b's ...
    s.add("c", "c1")
    s.add("b", "b0")
    s.release("a")
    assert [w for _, w in s.grants()] == ["b0"]  # ... but b has nothing in flight (a: 1, c: 1)


def test_one_namespace_never_holds_every_slot() -> None:
    s: FairScheduler[str] = FairScheduler(4, FAST, per_tenant=3)
    for i in range(10):
        s.add("greedy", f"g{i}")
    assert len(s.grants()) == 3 and s.in_flight == {"greedy": 3} and s.active == 3
    assert s.grants() == [], "the fourth slot is kept for other namespaces"
    s.add("other", "o0")
    assert s.grants() == [("other", "o0")]
    s.release("greedy")
    assert s.grants() == [("greedy", "g3")] and s.in_flight == {"greedy": 3, "other": 1}


def test_default_cap_is_one_below_the_whole() -> None:
    assert [default_per_tenant(c) for c in (1, 2, 16)] == [1, 1, 15]
    assert FairScheduler(16, FAST).per_tenant == 15


def test_every_grant_takes_a_global_token() -> None:
    clock = Clock()
    s: FairScheduler[str] = FairScheduler(10, rate=2, burst=2, clock=clock)
    for name in ("a", "b", "c", "d"):
        s.add(name, name)
    assert [w for _, w in s.grants()] == ["a", "b"]  # the burst, whoever asks
    assert s.grants() == [] and s.blocked_on_tokens() and s.token_wait() == pytest.approx(0.5)
    clock.now = 0.5
    assert [w for _, w in s.grants()] == ["c"]
    clock.now = 10.0  # the bucket refills to its capacity, not beyond
    assert [w for _, w in s.grants()] == ["d"] and not s.blocked_on_tokens()


def test_without_a_bucket_only_the_slots_limit() -> None:
    clock = Clock()
    s: FairScheduler[str] = FairScheduler(3, rate=None, per_tenant=2, clock=clock)
    for w in ("a0", "a1", "a2", "b0"):
        s.add(w[0], w)
    # No token is taken, whatever the clock: three slots, two of them at most for "a".
    assert sorted(w for _, w in s.grants()) == ["a0", "a1", "b0"]
    assert s.grants() == [] and not s.blocked_on_tokens() and s.token_wait() == 0.0
    s.release("b")
    assert [w for _, w in s.grants()] == [], "a is at its cap of two"
    s.release("a")
    assert [w for _, w in s.grants()] == ["a2"]


def test_withdrawn_waiters_and_idle_namespaces_leave_nothing_behind() -> None:
    s: FairScheduler[str] = FairScheduler(1, FAST)
    s.add("a", "a0")
    s.add("b", "b0")
    assert s.remove("b", "b0") and not s.remove("b", "b0")
    assert serve(s, 1) == ["a0"]
    assert s.waiting() == 0 and s.in_flight == {} and s.active == 0
    assert s.grants() == [] and not s.blocked_on_tokens()


# -- the asyncio limiter ----------------------------------------------------------------------------


async def test_slot_queues_under_the_tenant_of_the_calling_task() -> None:
    limiter = FairLimiter(4, FAST)
    seen: dict[str, int] = {}
    with tenant("team-a"):
        async with limiter.slot():
            seen.update(limiter.scheduler.in_flight)
    assert seen == {"team-a": 1} and limiter.scheduler.in_flight == {}
    assert TENANT.get() == ""  # reset on leaving the block


async def test_tenant_follows_into_tasks_started_inside_the_block() -> None:
    async def read() -> str:
        await asyncio.sleep(0)
        return TENANT.get()

    with tenant("team-b"):
        inner = asyncio.create_task(read())  # e.g. the reconcile's own gathers
    outer = asyncio.create_task(read())
    assert (await inner, await outer) == ("team-b", "")


async def test_a_cancelled_waiter_gives_back_nothing_it_did_not_get() -> None:
    limiter = FairLimiter(1, FAST)
    await limiter.acquire("a")
    waiter = asyncio.create_task(limiter.acquire("b"))
    await asyncio.sleep(0)
    assert limiter.scheduler.waiting("b") == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release("a")
    assert limiter.scheduler.active == 0 and limiter.scheduler.waiting() == 0 and limiter.scheduler.in_flight == {}


async def test_a_waiter_cancelled_after_its_grant_releases_the_slot() -> None:
    limiter = FairLimiter(1, FAST)
    await limiter.acquire("a")
    waiter = asyncio.create_task(limiter.acquire("b"))
    await asyncio.sleep(0)
    limiter.release("a")  # grants b's future; b's task has not run yet
    assert limiter.scheduler.in_flight == {"b": 1}
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.scheduler.active == 0 and limiter.scheduler.in_flight == {}


def _client(handler, **kw) -> RegistryClient:
    return RegistryClient("http://registry.test", "operator-key-0123", transport=httpx.MockTransport(handler), **kw)


async def test_hanging_requests_of_one_namespace_leave_a_slot_for_another() -> None:
    """Namespace `slow`'s registry calls never answer; namespace `b`'s create still goes through."""
    release = asyncio.Event()
    started: list[str] = []

    prefix = {"slow": "00000000", "b": "11111111"}  # ids are UUIDs (the client refuses anything else)

    async def handler(request: httpx.Request) -> httpx.Response:
        started.append(request.url.path)
        if f"/{prefix['slow']}-" in request.url.path:
            await release.wait()
        return httpx.Response(200, json={"llmId": request.url.path.rsplit("/", 1)[-1]})

    async with _client(handler, concurrency=4, rate=FAST) as c:

        async def call(ns: str, i: int) -> None:
            with tenant(ns):
                await c.get_llm(f"{prefix[ns]}-0000-4000-8000-{i:012d}")

        slow = [asyncio.create_task(call("slow", i)) for i in range(20)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(started) == 3, "the per-namespace cap holds `slow` at 3 of 4 slots"
        await call("b", 0)  # completes while all of `slow`'s requests hang
        assert c._limiter.scheduler.in_flight == {"slow": 3}
        release.set()
        await asyncio.gather(*slow)
    assert len(started) == 21


async def test_a_429_returns_at_once_and_holds_no_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backing off is the reconcile's job (RateLimited -> retry later), never a sleep inside the client."""
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *a, **kw):
        if delay > 0:
            sleeps.append(delay)
        return await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)

    async with _client(
        lambda r: httpx.Response(429, headers={"retry-after": "30"}, json={"error": "slow down"}),
        concurrency=1,
        rate=FAST,
    ) as c:
        with tenant("noisy"), pytest.raises(RateLimited) as info:
            await c.get_llm("00000000-0000-0000-0000-000000000001")
        assert info.value.retry_after == 30
        assert c._limiter.scheduler.active == 0 and c._limiter.scheduler.in_flight == {}
    assert sleeps == []
