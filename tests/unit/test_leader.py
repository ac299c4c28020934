"""Leader election (goodmem_operator.leader) against a fake Lease API and a fake clock: who takes the Lease and
when, that expiry is judged by the candidate's own clock (never the holder's timestamps), that conditional writes
let one of two racing candidates win, that the leader gives up before a standby may take over, and release."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import replace
from typing import Any

import pytest

from goodmem_operator.kube import Answer
from goodmem_operator.leader import (
    KubeLeaseApi,
    LeaderElector,
    LeaseError,
    LeaseRecord,
    Timings,
    identity,
    micro_time,
    run_when_leading,
)

pytestmark = pytest.mark.unit

TIMINGS = Timings(lease_duration=10, renew_deadline=8.0, retry_period=2.0)
EPOCH = dt.datetime(2026, 12, 4, 18, 0, tzinfo=dt.UTC)


class FakeLeaseApi:
    """One Lease in memory, with resourceVersions: an update with a stale one is a conflict (None)."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.failing = False
        self.writes: list[LeaseRecord] = []

    def _check(self) -> None:
        if self.failing:
            raise LeaseError("get lease ns/goodmem-operator: HTTP 503")

    def _store(self, record: LeaseRecord) -> LeaseRecord:
        self.version += 1
        self.record = replace(record, resource_version=str(self.version))
        self.writes.append(self.record)
        return self.record

    async def get(self) -> LeaseRecord | None:
        self._check()
        return self.record

    async def create(self, record: LeaseRecord) -> LeaseRecord | None:
        self._check()
        return None if self.record is not None else self._store(record)

    async def update(self, record: LeaseRecord) -> LeaseRecord | None:
        self._check()
        if self.record is None or record.resource_version != self.record.resource_version:
            return None
        return self._store(record)


class Clock:
    """Monotonic seconds and wall time that move only when a candidate sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def now(self) -> dt.datetime:
        return EPOCH + dt.timedelta(seconds=self.t)

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


def candidate(api: FakeLeaseApi, clock: Clock, name: str, changes: list[bool] | None = None) -> LeaderElector:
    return LeaderElector(
        api,
        name,
        TIMINGS,
        clock=clock,
        now=clock.now,
        sleep=clock.sleep,
        on_change=None if changes is None else changes.append,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_first_candidate_creates_the_lease_and_leads() -> None:
    api, clock, changes = FakeLeaseApi(), Clock(), []
    a = candidate(api, clock, "a", changes)
    run(a.acquire())
    assert a.leading and changes == [True]
    assert api.record is not None
    assert (api.record.holder, api.record.lease_duration, api.record.transitions) == ("a", 10, 0)
    assert api.record.acquire_time == api.record.renew_time == micro_time(EPOCH)


def test_a_standby_waits_while_the_holder_renews() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    run(a.acquire())
    for _ in range(20):  # 40 s: four lease durations, renewed every retry period
        clock.t += TIMINGS.retry_period
        assert run(a.try_acquire_or_renew())
        assert not run(b.try_acquire_or_renew())
    assert api.record is not None and api.record.holder == "a" and not b.leading
    assert api.record.acquire_time == micro_time(EPOCH), "a renewal keeps the acquire time"


def test_a_standby_takes_over_a_lease_not_renewed_for_its_duration_by_its_own_clock() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    run(a.acquire())
    clock.t = 1.0
    assert not run(b.try_acquire_or_renew())  # b first sees the record at t=1
    clock.t = 10.9
    assert not run(b.try_acquire_or_renew()), "not expired: 9.9 s since b saw it change"
    clock.t = 11.0
    assert run(b.try_acquire_or_renew())
    assert api.record is not None and (api.record.holder, api.record.transitions) == ("b", 1)


def test_the_holders_timestamps_never_shorten_the_wait() -> None:
    """A Lease renewed long ago by the holder's (skewed) clock is judged from when this candidate saw it change."""
    api, clock = FakeLeaseApi(), Clock()
    stale = micro_time(EPOCH - dt.timedelta(days=1))
    api.record = LeaseRecord("a", 10, stale, stale, 3, "1")
    b = candidate(api, clock, "b")
    clock.t = 100.0
    assert not run(b.try_acquire_or_renew())
    clock.t = 109.0
    assert not run(b.try_acquire_or_renew())
    clock.t = 110.0
    assert run(b.try_acquire_or_renew())
    assert api.record.transitions == 4


def test_a_released_lease_is_taken_at_once() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    run(a.acquire())
    assert not run(b.try_acquire_or_renew())
    run(a.release())
    assert api.record is not None and (api.record.holder, api.record.lease_duration) == ("", 1)
    assert not a.leading
    assert run(b.try_acquire_or_renew()), "no wait for the duration"


def test_release_only_by_the_holder() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a, b = candidate(api, clock, "a"), candidate(api, clock, "b")
    run(a.acquire())
    run(b.release())
    assert api.record is not None and api.record.holder == "a"


def test_of_two_racing_candidates_one_wins() -> None:
    """Both read the same expired record; the conditional update lets the first through, the second gets a 409."""
    api, clock = FakeLeaseApi(), Clock()
    api.record = LeaseRecord("", 1, None, None, 0, "7")
    api.version = 7
    b, c = candidate(api, clock, "b"), candidate(api, clock, "c")
    original_get = api.get

    async def same_read() -> LeaseRecord | None:
        return replace(api.record, resource_version="7") if api.record else None

    api.get = same_read  # type: ignore[method-assign] - both see resourceVersion 7
    assert run(b.try_acquire_or_renew())
    assert not run(c.try_acquire_or_renew())
    api.get = original_get  # type: ignore[method-assign]
    assert api.record is not None and api.record.holder == "b"


def test_two_candidates_creating_at_once_one_wins() -> None:
    api, clock = FakeLeaseApi(), Clock()
    b, c = candidate(api, clock, "b"), candidate(api, clock, "c")
    assert run(b.try_acquire_or_renew())
    api_record = api.record
    api.record = None  # c read "no Lease" before b's create landed
    real_create = api.create

    async def create_after_b(record: LeaseRecord) -> LeaseRecord | None:
        api.record = api_record
        return await real_create(record)

    api.create = create_after_b  # type: ignore[method-assign]
    assert not run(c.try_acquire_or_renew())
    assert api.record is not None and api.record.holder == "b"


def test_the_leader_gives_up_before_a_standby_may_take_over() -> None:
    api, clock, changes = FakeLeaseApi(), Clock(), []
    a = candidate(api, clock, "a", changes)
    run(a.acquire())
    clock.t = 4.0
    assert run(a.try_acquire_or_renew())  # last renewal at t=4
    api.failing = True
    run(a.hold())
    assert changes == [True, False] and not a.leading
    assert 4.0 + TIMINGS.renew_deadline <= clock.t < 4.0 + TIMINGS.lease_duration, clock.t


def test_renewal_errors_shorter_than_the_deadline_are_ridden_out() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a = candidate(api, clock, "a")
    run(a.acquire())

    async def flaky_sleep(seconds: float) -> None:
        clock.t += seconds
        api.failing = 4.0 <= clock.t < 8.0  # the renewals at 4 and 6 fail; at 8, 6 s after the last (< 8 s): ok
        if clock.t >= 30.0:
            raise asyncio.CancelledError  # the test's end: still leading

    a._sleep = flaky_sleep
    with pytest.raises(asyncio.CancelledError):
        run(a.hold())
    assert a.leading and api.record is not None and api.record.holder == "a"


def test_the_leader_stops_at_once_when_another_holds_the_lease() -> None:
    api, clock = FakeLeaseApi(), Clock()
    a = candidate(api, clock, "a")
    run(a.acquire())
    assert api.record is not None
    api._store(replace(api.record, holder="intruder"))
    run(a.hold())
    assert not a.leading
    assert clock.t == TIMINGS.retry_period, "at the first renewal"


def test_api_errors_leave_a_candidate_standing_by() -> None:
    api, clock = FakeLeaseApi(), Clock()
    api.failing = True
    a = candidate(api, clock, "a")

    async def attempts() -> list[bool]:
        return [await a._attempt(1.0) for _ in range(3)]

    assert run(attempts()) == [False, False, False] and not a.leading


def test_identity_is_the_pod_name_and_a_random_suffix() -> None:
    one, two = identity("goodmem-operator-7d9f-abc"), identity("goodmem-operator-7d9f-abc")
    assert one.startswith("goodmem-operator-7d9f-abc_") and one != two
    assert identity(None)


# -- the Lease over the Kubernetes API (kube.KubeApi's answers) -----------------------------------------------


class FakeKube:
    def __init__(self, status: int, body: dict[str, Any] | None = None) -> None:
        self.status, self.body = status, body or {}
        self.calls: list[tuple[str, str, Any]] = []

    def _answer(self) -> Answer:
        return Answer(self.status, json.dumps(self.body).encode())

    async def get(self, path: str) -> Answer:
        self.calls.append(("GET", path, None))
        return self._answer()

    async def post(self, path: str, body: Any) -> Answer:
        self.calls.append(("POST", path, body))
        return self._answer()

    async def put(self, path: str, body: Any) -> Answer:
        self.calls.append(("PUT", path, body))
        return self._answer()


LEASE = {
    "metadata": {"name": "goodmem-operator", "resourceVersion": "42"},
    "spec": {
        "holderIdentity": "pod-a_1234",
        "leaseDurationSeconds": 10,
        "acquireTime": "2026-12-04T18:00:00.000000Z",
        "renewTime": "2026-12-04T18:00:04.000000Z",
        "leaseTransitions": 2,
    },
}


def test_the_kube_lease_api_reads_and_writes_the_lease_conditionally() -> None:
    kube = FakeKube(200, LEASE)
    api = KubeLeaseApi(kube, "goodmem-system", "goodmem-operator")  # type: ignore[arg-type]
    record = run(api.get())
    assert record == LeaseRecord(
        "pod-a_1234", 10, "2026-12-04T18:00:00.000000Z", "2026-12-04T18:00:04.000000Z", 2, "42"
    )
    run(api.update(replace(record, holder="pod-b_5678")))
    method, path, body = kube.calls[-1]
    assert (method, path) == ("PUT", "/apis/coordination.k8s.io/v1/namespaces/goodmem-system/leases/goodmem-operator")
    assert body["metadata"]["resourceVersion"] == "42", "a conditional replace"
    assert body["spec"]["holderIdentity"] == "pod-b_5678"
    kube.status = 201
    run(api.create(LeaseRecord("pod-b_5678", 10)))
    method, path, body = kube.calls[-1]
    assert (method, path) == ("POST", "/apis/coordination.k8s.io/v1/namespaces/goodmem-system/leases")
    assert "resourceVersion" not in body["metadata"]


@pytest.mark.parametrize(
    ("status", "verb", "result"), [(404, "get", None), (409, "create", None), (409, "update", None)]
)
def test_the_kube_lease_api_answers_none_for_missing_or_conflict(status: int, verb: str, result: None) -> None:
    api = KubeLeaseApi(FakeKube(status), "ns", "goodmem-operator")  # type: ignore[arg-type]
    call = api.get() if verb == "get" else getattr(api, verb)(LeaseRecord("x", 10, resource_version="1"))
    assert run(call) is result


@pytest.mark.parametrize("verb", ["get", "create", "update"])
def test_the_kube_lease_api_raises_on_a_refusal(verb: str) -> None:
    api = KubeLeaseApi(FakeKube(403, {"message": "secret-ish body"}), "ns", "goodmem-operator")  # type: ignore[arg-type]
    call = api.get() if verb == "get" else getattr(api, verb)(LeaseRecord("x", 10, resource_version="1"))
    with pytest.raises(LeaseError, match="HTTP 403") as raised:
        run(call)
    assert "secret-ish" not in str(raised.value), "the status only, never the body"


# -- standing by, working, losing, stopping ---------------------------------------------------------------------


def test_work_runs_only_while_leading_and_a_clean_stop_releases() -> None:
    api = FakeLeaseApi()
    fast = Timings(lease_duration=1, renew_deadline=0.5, retry_period=0.05)
    a = LeaderElector(api, "a", fast)
    seen: list[bool] = []

    async def operate() -> None:
        seen.append(a.leading)
        await asyncio.sleep(0.2)  # kopf runs, then stops (SIGTERM)

    run(run_when_leading(a, operate))
    assert seen == [True]
    assert api.record is not None and api.record.holder == "", "released after the work stopped"


def test_losing_the_lease_while_working_exits_at_once() -> None:
    api = FakeLeaseApi()
    fast = Timings(lease_duration=1, renew_deadline=0.3, retry_period=0.05)
    a = LeaderElector(api, "a", fast)
    exits: list[int] = []

    class Exited(Exception):
        pass

    def lost(code: int) -> Any:
        exits.append(code)
        raise Exited

    async def operate() -> None:
        api.failing = True  # the API server stops answering the renewals
        await asyncio.sleep(30)

    with pytest.raises(Exited):
        run(run_when_leading(a, operate, lost=lost))
    assert exits == [1]


def test_a_standby_does_not_work() -> None:
    api, clock = FakeLeaseApi(), Clock()
    run(candidate(api, clock, "a").acquire())  # held by a, renewed by nobody during this test's short life
    b = LeaderElector(api, "b", Timings(lease_duration=30, renew_deadline=20, retry_period=0.05))
    worked: list[bool] = []

    async def operate() -> None:
        worked.append(True)

    async def for_a_while() -> None:
        task = asyncio.ensure_future(run_when_leading(b, operate))
        await asyncio.sleep(0.3)
        task.cancel()

    run(for_a_while())
    assert worked == [] and not b.leading
    assert b.last_holder == "a"
