"""Phase 5: latency of one create on an idle operator."""

from __future__ import annotations

import statistics
import time
from typing import cast

from bench.kube import LLMWatch, llm_body, percentile
from bench.phases.base import PhaseBase
from bench.results import LatencyResult
from bench.sizes import GROUP, PLURAL, VERSION


class LatencyPhase(PhaseBase):
    def latency(self) -> LatencyResult:
        s, stack = self.sizes, self.stack
        ns = self._namespace("lat")
        if stack.op is None:
            stack.start_operator("latency")
        watch = LLMWatch(self.kube, ns)
        samples: list[float] = []
        names: list[str] = []
        try:
            time.sleep(1.0)  # idle
            w = self._window()
            custom = self.kube.custom()
            for i in range(s.latency_samples):
                name = f"lat-{i:03d}"
                names.append(name)
                t0 = time.monotonic()
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, llm_body(ns, name))
                samples.append(watch.wait_ready([name], 60.0) - t0)
                time.sleep(0.3)  # let the operator go idle again (trailing Events, status echoes)
            self._settle()
            out = cast(LatencyResult, self._close(w))
            self.created += len(names)
            out_delete = self._delete(watch, ns, names)
        finally:
            watch.stop()
            stack.stop_operator()
        out.update(
            samples_s=samples,
            p50_s=statistics.median(samples),
            p95_s=percentile(samples, 95),
            min_s=min(samples),
            max_s=max(samples),
            n=len(samples),
            delete=out_delete,
        )
        self.say(
            f"   latency over {len(samples)} samples: p50 {out['p50_s'] * 1000:.0f} ms, "
            f"p95 {out['p95_s'] * 1000:.0f} ms"
        )
        return out
