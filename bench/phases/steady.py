"""Phase 3: steady state, a fresh operator with a short drift interval over Ready LLMs."""

from __future__ import annotations

import time
from collections import Counter
from typing import cast

from bench.kube import LLMWatch
from bench.phases.base import PhaseBase
from bench.results import SteadyResult
from bench.sizes import BenchError


class SteadyStatePhase(PhaseBase):
    def _steady_state(self, watch: LLMWatch, ns: str, names: list[str]) -> SteadyResult:
        """A fresh operator with a short drift interval; from its start until every LLM had `drift_cycles` checks."""
        s, stack = self.sizes, self.stack
        ids = {x: watch.items[x].llm_id for x in names}
        if not all(ids.values()):
            raise BenchError("some LLMs carry no status.llmId")
        w = self._window()
        since_ms = time.time_ns() // 1_000_000
        stack.start_operator("drift", ["--drift-interval", f"{s.drift_interval:g}"])
        wanted = 1 + s.drift_cycles  # the resume pass at start, then the drift cycles
        deadline = time.monotonic() + s.timeout + s.drift_interval * (s.drift_cycles + 1)
        resumed: tuple[float, int] | None = None  # operator CPU and GETs when every LLM had its first check
        while True:
            per_id = Counter(
                e["path"].rsplit("/", 1)[1]
                for e in stack.registry_log(since_ms)
                if e["method"] == "GET" and e["route"] == "/v1/llms/{id}"
            )
            if resumed is None and all(per_id[i] >= 1 for i in ids.values()):
                resumed = (stack.operator_cpu_seconds(), sum(per_id.values()))
            if all(per_id[i] >= wanted for i in ids.values()):
                break
            if time.monotonic() > deadline:
                raise BenchError(
                    f"drift cycles did not complete: min GETs per LLM {min(per_id[i] for i in ids.values())}"
                )
            time.sleep(min(1.0, s.drift_interval / 4))
        elapsed = time.monotonic() - w["t"]
        assert resumed is not None
        drift_cpu = stack.operator_cpu_seconds() - resumed[0]
        drift_checks = sum(per_id.values()) - resumed[1]
        out = cast(SteadyResult, self._close(w))
        out.update(
            n=len(names),
            drift_interval=s.drift_interval,
            cycles=s.drift_cycles,
            window_s=elapsed,
            checks_per_llm_min=min(per_id[i] for i in ids.values()),
            drift_checks=drift_checks,
            drift_cpu_s=round(drift_cpu, 2),
            rss_mb=round(stack.operator_rss_mb(), 1),
        )
        reg = out["registry"]
        self.say(
            f"   steady state: {reg['GET']} GETs, writes {reg['POST'] + reg['PUT'] + reg['DELETE']}, "
            f"api writes {sum(out['api_writes'].values())}, api reads {sum(out['api_reads'].values())}"
        )
        return out
