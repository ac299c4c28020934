"""The drift-interval annotation (issue #13 part 5): a floor of 30 s, a Warning Event once per clamped value, and a
change honoured within 30 s, on a new LLM too. The daemon runs on a fake clock: no wall-clock assertion."""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from goodmem_operator import handlers
from goodmem_operator.handlers import (
    DRIFT_INTERVAL_ANNOTATION,
    DRIFT_INTERVAL_CLAMPED,
    DRIFT_INTERVAL_FLOOR,
    DriftInterval,
    Runtime,
    build_registry,
    drift_clamped_message,
    drift_interval_of,
)

pytestmark = pytest.mark.unit


def ann(value: str) -> dict[str, str]:
    return {DRIFT_INTERVAL_ANNOTATION: value}


def test_floor_is_thirty_seconds() -> None:
    assert DRIFT_INTERVAL_FLOOR == 30.0


@pytest.mark.parametrize(
    "value, seconds", [("30", 30.0), ("45", 45.0), ("3600", 3600.0), (" 90 ", 90.0), ("1e3", 1000.0)]
)
def test_values_at_or_above_the_floor_are_kept(value: str, seconds: float) -> None:
    assert drift_interval_of(ann(value), 600) == DriftInterval(seconds)


def test_no_annotation_means_the_operators_default_unfloored() -> None:
    assert drift_interval_of({}, 600) == DriftInterval(600)
    assert drift_interval_of(None, 5) == DriftInterval(5)  # --drift-interval is the operator admin's choice


@pytest.mark.parametrize("value", ["0.0001", "29.99", "1", "0", "-5", "", "fast", "nan", "inf", "-inf", "30s"])
def test_low_values_and_garbage_are_clamped_to_the_floor(value: str) -> None:
    assert drift_interval_of(ann(value), 600) == DriftInterval(30.0, clamped_from=value)


def test_the_warning_names_the_value_given_and_the_value_used() -> None:
    message = drift_clamped_message(drift_interval_of(ann("0.0001"), 600))
    assert "'0.0001'" in message and "every 30s" in message and DRIFT_INTERVAL_ANNOTATION in message
    long = drift_clamped_message(drift_interval_of(ann("x" * 5000), 600))
    assert len(long) < 300  # a tenant's garbage is not copied whole into an Event


# -- the daemon, on a fake clock ------------------------------------------------------------------


class FakeReconciler:
    def __init__(self) -> None:
        self.last_observed: dict[str, float] = {}


class Harness:
    """Runs the real drift daemon; `script` maps a fake time to an action (e.g. change the annotation)."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        annotations: dict[str, str],
        *,
        default: float = 600.0,
        created_at: float | None = 0.0,
    ) -> None:
        self.now = 0.0
        self.checks: list[float] = []
        self.events: list[tuple[float, str, str]] = []
        self.wakes: list[float] = []
        self.body: dict[str, Any] = {
            "metadata": {"namespace": "ns", "name": "llm", "uid": "uid-1", "annotations": dict(annotations)}
        }
        self.reconciler = FakeReconciler()
        if created_at is not None:
            self.reconciler.last_observed["uid-1"] = created_at  # the create handler's reconcile
        self.script: dict[float, Any] = {}
        self.until = 0.0
        rt = Runtime(reconciler=self.reconciler, secret_cache=None, status_writer=None)  # type: ignore[arg-type]
        registry = build_registry({"rt": rt}, drift_interval=default)
        [daemon] = [h for h in registry._spawning.get_all_handlers() if h.id == "drift"]
        self.fn = daemon.fn
        # handlers' own name `time` only: the event loop's clock (the real time.monotonic) must keep running.
        monkeypatch.setattr(handlers, "time", SimpleNamespace(monotonic=lambda: self.now))
        monkeypatch.setattr(
            kopf, "event", lambda body, *, type, reason, message: self.events.append((self.now, reason, message))
        )

        async def check(rt: Any, body: dict[str, Any], trigger: str) -> float | None:
            assert trigger == "drift"
            self.checks.append(self.now)
            self.reconciler.last_observed["uid-1"] = self.now
            return None

        monkeypatch.setattr(handlers, "reconcile_and_write", check)

    def annotate(self, value: str | None) -> None:
        annotations = self.body["metadata"]["annotations"]
        if value is None:
            annotations.pop(DRIFT_INTERVAL_ANNOTATION, None)
        else:
            annotations[DRIFT_INTERVAL_ANNOTATION] = value

    async def run(self, until: float) -> None:
        harness = self

        class Stopped:
            def __bool__(self) -> bool:
                return harness.now >= until

            async def wait(self, seconds: float) -> None:
                assert seconds > 0
                target = harness.now + seconds
                for at in sorted(t for t in harness.script if harness.now < t <= target):
                    harness.now = at
                    harness.script.pop(at)()
                harness.now = min(target, until)
                harness.wakes.append(harness.now)

        await self.fn(stopped=Stopped(), body=self.body, uid="uid-1")


async def test_no_wait_is_longer_than_the_floor_the_first_one_included(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, {}, default=600)
    await h.run(until=1000)
    gaps = [b - a for a, b in pairwise([0.0, *h.wakes])]
    assert max(gaps) <= DRIFT_INTERVAL_FLOOR
    assert h.checks and 540 <= h.checks[0] <= 660  # the default interval, with its jitter


async def test_an_annotation_set_after_creation_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Created with the default (600 s); annotated 30 s at t=5: read by t=35, a drift check by 5 + 30 + 33."""
    h = Harness(monkeypatch, {}, default=600)
    h.script[5.0] = lambda: h.annotate("30")
    await h.run(until=200)
    assert h.checks and h.checks[0] <= 5 + 30 + 30 * 1.1
    gaps = [b - a for a, b in pairwise(h.checks)]
    assert gaps and all(27 <= g <= 33 for g in gaps)


async def test_a_new_llm_before_its_first_reconcile_also_rereads(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, {}, default=600, created_at=None)
    h.script[1.0] = lambda: h.annotate("40")
    await h.run(until=100)
    assert h.checks and h.checks[0] <= 1 + 30 + 40


async def test_a_clamped_value_checks_at_the_floor_and_warns_once_per_value(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ann("0.0001"))
    h.script[100.0] = lambda: h.annotate("0.5")  # another clamped value: one more Warning
    h.script[200.0] = lambda: h.annotate("60")  # a valid one: none
    h.script[300.0] = lambda: h.annotate("0.5")  # clamped again after a valid value: warned again
    await h.run(until=400)
    assert [(reason, "'0.0001'" in m or "'0.5'" in m) for _, reason, m in h.events] == [
        (DRIFT_INTERVAL_CLAMPED, True)
    ] * 3
    assert h.events[0][0] == 0.0 and 100 <= h.events[1][0] <= 130 and 300 <= h.events[2][0] <= 330
    first = [t for t in h.checks if t < 100]
    assert 2 <= len(first) <= 4, "clamped to 30 s: three checks or so in 100 s, not a million"
    assert all(b - a >= 27 for a, b in pairwise(h.checks))
