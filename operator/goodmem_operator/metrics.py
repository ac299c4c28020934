"""Prometheus metrics (prometheus-client), on a registry of their own.

| name | type | labels |
|---|---|---|
| goodmem_operator_reconcile_total | counter | trigger (create, update, resume, drift, secret),
|                                  |         | result (success, noop, error, permanent, paused) |
| goodmem_operator_reconcile_duration_seconds | histogram | trigger |
| goodmem_operator_registry_requests_total | counter | verb (create, get, list, update, delete),
|                                          |         | status (HTTP code, timeout, network) |
| goodmem_operator_registry_request_duration_seconds | histogram | verb |
| goodmem_operator_drift_corrections_total | counter | |
| goodmem_operator_llms | gauge | ready (True, False, Unknown) |
| goodmem_operator_leader | gauge | | 1 while this replica works (holds the Lease, or runs without leader election)
| goodmem_operator_credentials_rotation_seconds | histogram | | from the Secret event that brought a new key
|                                                |           | | to the registry's answer to the PUT carrying it |
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from goodmem_operator.conditions import READY, find

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.reconcile_total = Counter(
            "goodmem_operator_reconcile", "Reconciles by trigger and result.", ["trigger", "result"], registry=r
        )
        self.reconcile_seconds = Histogram(
            "goodmem_operator_reconcile_duration_seconds",
            "Reconcile duration.",
            ["trigger"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.registry_total = Counter(
            "goodmem_operator_registry_requests",
            "Registry requests by verb and status.",
            ["verb", "status"],
            registry=r,
        )
        self.registry_seconds = Histogram(
            "goodmem_operator_registry_request_duration_seconds",
            "Registry request latency.",
            ["verb"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.drift_total = Counter(
            "goodmem_operator_drift_corrections", "Drift corrections (PUTs made by the drift check).", registry=r
        )
        self.rotation_seconds = Histogram(
            "goodmem_operator_credentials_rotation_seconds",
            "From the Secret event that brought a new key to the registry's answer to the PUT that carried it.",
            buckets=_BUCKETS,
            registry=r,
        )
        self.llms = Gauge("goodmem_operator_llms", "LLM resources by Ready status.", ["ready"], registry=r)
        self.leader = Gauge(
            "goodmem_operator_leader",
            "1 while this replica works: it holds the leader-election Lease, or runs without leader election.",
            registry=r,
        )
        self._ready: dict[str, str] = {}
        for state in ("True", "False", "Unknown"):
            self.llms.labels(state).set(0)

    def registry_request(self, verb: str, status: str, seconds: float) -> None:
        self.registry_total.labels(verb, status).inc()
        self.registry_seconds.labels(verb).observe(seconds)

    def credentials_rotated(self, seconds: float) -> None:
        self.rotation_seconds.observe(seconds)

    def reconciled(self, uid: str, trigger: str, outcome: Any, seconds: float) -> None:
        self.reconcile_total.labels(trigger, outcome.result).inc()
        self.reconcile_seconds.labels(trigger).observe(seconds)
        if outcome.drift_corrected:
            self.drift_total.inc()
        ready = find(outcome.status.get("conditions"), READY)
        if ready is not None:
            self._set_ready(uid, str(ready.get("status", "Unknown")))

    def forget(self, uid: str) -> None:
        self._set_ready(uid, None)

    def _set_ready(self, uid: str, state: str | None) -> None:
        """Move one LLM between the gauge's Ready states: O(1), not a recount of every LLM."""
        before = self._ready.pop(uid, None)
        if state is not None:
            self._ready[uid] = state
        if before != state:
            if before is not None:
                self.llms.labels(before).dec()
            if state is not None:
                self.llms.labels(state).inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
