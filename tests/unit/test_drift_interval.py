"""The drift-interval annotation (issue #13 part 5): a floor of 30 s, a Warning Event once per clamped value, and a
change honoured at once (kopf's update handler reconciles, and the next drift check counts from there), on a new LLM
too. The drift checks are keys in the requeue, on a fake clock: no wall-clock assertion."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import kopf
import pytest

from goodmem_operator.handlers import (
    DRIFT_INTERVAL_ANNOTATION,
    DRIFT_INTERVAL_CLAMPED,
    DRIFT_INTERVAL_FLOOR,
    DriftInterval,
    Memo,
    Runtime,
    build_registry,
    drift_clamped_message,
    drift_interval_of,
)
from goodmem_operator.reconcile import Outcome

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


# -- the drift checks in the requeue, on a fake clock --------------------------------------------------


class FakeReconciler:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness

    async def reconcile(self, obj: Any, *, trigger: str) -> Outcome:
        if trigger == "drift":
            self.harness.checks.append(self.harness.now)
        return Outcome(status={})  # in sync: nothing to write, no retry


KEY = ("ns", "llm")


class Harness:
    """The real handlers and requeue on a fake clock. kopf is played by hand: its create handler at t=0 (or at
    `created_at`), and its update handler whenever `script` (fake time -> action) changes the annotations."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        annotations: dict[str, str],
        *,
        default: float = 600.0,
        created_at: float = 0.0,
    ) -> None:
        self.now = 0.0
        self.created_at = created_at
        self.checks: list[float] = []
        self.events: list[tuple[float, str, str]] = []
        self.body: dict[str, Any] = {
            "metadata": {"namespace": "ns", "name": "llm", "uid": "uid-1", "annotations": dict(annotations)}
        }
        self.script: dict[float, Any] = {}
        self.rt = Runtime(
            reconciler=FakeReconciler(self),  # type: ignore[arg-type]
            secret_cache=None,  # type: ignore[arg-type]
            status_writer=None,
            drift_interval=default,
            clock=lambda: self.now,
        )
        self.rt.index.observe(self.body, deleted=False)
        # One function for create, resume and update (kopf registers it once per cause).
        self.reconcile_llm = next(h.fn for h in build_registry()._changing.get_all_handlers() if h.id == "reconcile")
        monkeypatch.setattr(
            kopf, "event", lambda body, *, type, reason, message: self.events.append((self.now, reason, message))
        )

    def annotate(self, value: str | None) -> None:
        annotations = self.body["metadata"]["annotations"]
        if value is None:
            annotations.pop(DRIFT_INTERVAL_ANNOTATION, None)
        else:
            annotations[DRIFT_INTERVAL_ANNOTATION] = value

    async def kopf_calls(self, reason: str) -> None:
        """What kopf does on a creation and on every change of the annotations: the reconcile handler, at once."""
        self.rt.index.observe(self.body, deleted=False)  # the LLM's watch event comes first
        await self.reconcile_llm(body=self.body, patch=kopf.Patch(), reason=reason, memo=Memo(runtime=self.rt))

    async def run(self, until: float) -> None:
        """From one due time or scripted change to the next, until `until`."""
        queue = self.rt.requeue
        created = False
        while True:
            pending = queue.pending(KEY)
            times = [t for t in self.script if t > self.now]
            if not created:
                times.append(self.created_at)
            if pending is not None:
                times.append(self.now + pending[1])
            target = min(times, default=until)
            if target > until:
                break
            self.now = target
            if not created and target >= self.created_at:
                created = True
                await self.kopf_calls("create")
            if target in self.script:
                self.script.pop(target)()
                await self.kopf_calls("update")
            queue.wake()
            await queue.idle()
            if target == until:
                break
        await queue.aclose()


async def test_the_interval_counts_from_the_last_reconcile_of_any_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, {}, default=600)
    await h.run(until=1000)
    assert h.checks and 540 <= h.checks[0] <= 660  # the default interval, with its jitter
    again = Harness(monkeypatch, {}, default=600)
    again.script[300.0] = lambda: None  # any reconcile (here kopf's; a Secret's does the same) restarts the wait
    await again.run(until=1000)
    assert again.checks == [300 + h.checks[0]], "one interval after the reconcile at t=300, not after creation"


async def test_an_annotation_set_after_creation_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Created with the default (600 s); annotated 30 s at t=5: read by t=35, a drift check by 5 + 30 + 33."""
    h = Harness(monkeypatch, {}, default=600)
    h.script[5.0] = lambda: h.annotate("30")
    await h.run(until=200)
    assert h.checks and h.checks[0] <= 5 + 30 + 30 * 1.1
    assert h.checks[0] <= 5 + 30 * 1.1, "kopf's update handler reads it at once: the interval counts from t=5"
    gaps = [b - a for a, b in pairwise(h.checks)]
    assert gaps and all(27 <= g <= 33 for g in gaps)


async def test_a_new_llm_is_checked_on_its_annotation_from_the_first_check(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, ann("40"), default=600, created_at=1.0)
    await h.run(until=100)
    assert h.checks and h.checks[0] <= 1 + 30 + 40
    assert h.checks[0] <= 1 + 40 * 1.1


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
