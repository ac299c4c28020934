"""Phase 6: memory of a fresh operator as LLMs (and unrelated Secrets) grow."""

from __future__ import annotations

import math
import time
import uuid

from bench.kube import LLMWatch, llm_body, secret_body
from bench.phases.base import PhaseBase
from bench.results import MemoryPoint, MemoryResult, NamespacesResult, SecretsResult


class MemoryPhase(PhaseBase):
    def _fresh_operator_rss(self, tag: str, n_llms: int) -> MemoryPoint:
        """Restart the operator; after its resume pass over `n_llms` LLMs and a quiet spell, its RSS and peak."""
        stack = self.stack
        before = stack.registry_counts()
        run = stack.start_operator(tag)
        if n_llms:
            self._wait_registry_quiet(n_llms, before)
        else:
            time.sleep(self.sizes.quiet_s)
        t = time.monotonic()
        time.sleep(self.sizes.sample_s)
        assert stack.sampler is not None
        return {
            "tag": tag,
            "llms": n_llms,
            "pid": run.pid,
            "rss_mb": round(stack.sampler.mean_kb(since=t) / 1024, 1),
            "hwm_mb": round(stack.operator_hwm_mb(), 1),
            "startup_s": round(t - run.started, 1),
        }

    def memory(self) -> MemoryResult:
        s, stack = self.sizes, self.stack
        ns = self._namespace("mem")
        points: list[MemoryPoint] = []
        out: MemoryResult = {"points": points}
        watch = LLMWatch(self.kube, ns)
        try:
            point = self._fresh_operator_rss("mem-0", 0)
            point["secrets"] = 0
            points.append(point)
            have = 0
            for target in s.memory_llms:
                names = [f"mem-{i:05d}" for i in range(have, target)]
                w = self._window()
                t0 = time.monotonic()
                self.kube.create_llms(ns, [llm_body(ns, x) for x in names])
                last = watch.wait_ready(names, s.timeout)
                self._settle()
                conv = self._close(w)
                self.created += len(names)
                have = target
                converging = stack.stop_operator()
                point = self._fresh_operator_rss(f"mem-{target}", target)
                point.update(
                    secrets=0,
                    added=len(names),
                    converge_s=round(last - t0, 2),
                    converging_hwm_mb=round(converging.hwm_mb, 1) if converging else None,
                    registry=conv["registry"],
                )
                points.append(point)
                self.say(
                    f"   {target} LLMs: fresh operator RSS {point['rss_mb']} MB, peak {point['hwm_mb']} MB "
                    f"(the one that converged the last {len(names)}: peak {point['converging_hwm_mb']} MB)"
                )
                if target == s.memory_secrets_at:
                    out["secrets"] = self._unrelated_secrets(target)
                    points.append(out["secrets"]["fresh"])
            if s.memory_namespaces:
                out["namespaces"] = self._empty_namespaces(have, points[-1])
        finally:
            watch.stop()
            stack.stop_operator()
        return out

    def _unrelated_secrets(self, n_llms: int) -> SecretsResult:
        """Add unrelated Secrets while the operator runs, then restart it with them in place; then remove them."""
        s, stack = self.sizes, self.stack
        per_ns = 1000
        namespaces = [self._namespace("noise") for _ in range(max(1, math.ceil(s.unrelated_secrets / per_ns)))]
        w = self._window()
        t0 = time.monotonic()
        made = 0
        for ns in namespaces:
            count = min(per_ns, s.unrelated_secrets - made)
            # Not labelled goodmem.ai/credentials=true, like a cluster's other Secrets: the operator's Secret watch
            # selects them away server-side. (Before that selector, every one of them reached the operator.)
            bodies = [
                secret_body(f"noise-{i:05d}", {"token": uuid.uuid4().hex, "user": f"svc-{i}"}, {"app": "unrelated"})
                for i in range(count)
            ]
            self.kube.create_secrets(ns, bodies)
            made += count
        create_s = time.monotonic() - t0
        self._settle()
        churn = self._close(w)
        running_hwm = round(stack.operator_hwm_mb(), 1)
        running_rss = round(stack.operator_rss_mb(), 1)
        stack.stop_operator()
        fresh = self._fresh_operator_rss(f"mem-{n_llms}-secrets", n_llms)
        fresh.update(secrets=made)
        churn_calls = sum(churn["registry_raw"].get(k, 0) for k in churn["registry_raw"] if not k.startswith("status "))
        self.say(
            f"   {n_llms} LLMs + {made} unrelated Secrets: fresh operator RSS {fresh['rss_mb']} MB, peak "
            f"{fresh['hwm_mb']} MB; while they were created: RSS {running_rss} MB, peak {running_hwm} MB; "
            f"registry calls during the Secret churn {churn_calls}"
        )
        for ns in namespaces:  # the fresh operator keeps running: it sees them go, and converges the next step
            self.kube.delete_all_secrets(ns)
        return {
            "n": made,
            "create_s": round(create_s, 1),
            "churn_registry": churn["registry"],
            "churn_api_writes": churn["api_writes"],
            "running_rss_mb": running_rss,
            "running_hwm_mb": running_hwm,
            "fresh": fresh,
        }

    def _empty_namespaces(self, n_llms: int, before: MemoryPoint) -> NamespacesResult:
        """Empty namespaces added (last: the dev cluster never finishes deleting a namespace), then a fresh operator:
        what each watched namespace costs it (a stream per namespace: an LLM watch and a labelled-Secret watch)."""
        n = self.sizes.memory_namespaces
        for _ in range(n):
            self._namespace("empty")
        self.stack.stop_operator()
        after = self._fresh_operator_rss(f"mem-{n_llms}-namespaces", n_llms)
        per_ns = (after["rss_mb"] - before["rss_mb"]) * 1024 / n
        self.say(
            f"   {n_llms} LLMs + {n} more (empty) namespaces: fresh operator RSS {after['rss_mb']} MB "
            f"(before {before['rss_mb']} MB: {per_ns:.0f} KB per namespace), started in {after['startup_s']} s "
            f"(before {before['startup_s']} s)"
        )
        return {"n": n, "llms": n_llms, "before": before, "after": after, "per_namespace_kb": round(per_ns, 1)}
