"""Phase 2: calls per change over the whole run (registry minus the floor; the operator's API writes)."""

from __future__ import annotations

from collections import Counter

from bench.phases.base import PhaseBase
from bench.registry import delta, registry_summary
from bench.results import CallsResult


class CallsPhase(PhaseBase):
    def _calls_summary(self) -> CallsResult:
        """Whole run: the emulator's counters minus the floor's; the operator's writes in the whole audit log."""
        registry_total = Counter(delta(self.stack.registry_counts(), self.floor_registry))
        api_writes_total = self.stack.audit_since(0)["writes"]
        reg = registry_summary(dict(registry_total))
        runs = self.results["convergence"]["runs"]
        create_writes = Counter()
        for r in runs:
            create_writes.update(r["create"]["api_writes"])
        n = sum(r["n"] for r in runs)
        lat = self.results["latency"]
        return {
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "rotated": self.rotated,
            "registry_total": reg,
            "registry_raw": dict(registry_total),
            "api_writes_total": dict(api_writes_total),
            "api_writes_per_create_at_scale": sum(create_writes.values()) / n if n else 0.0,
            "api_writes_per_create_breakdown": {k: v / n for k, v in sorted(create_writes.items())},
            "api_writes_per_create_idle": sum(lat["api_writes"].values()) / lat["n"],
            "api_writes_per_create_idle_breakdown": {k: v / lat["n"] for k, v in sorted(lat["api_writes"].items())},
        }
