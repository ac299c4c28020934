"""Phase 1 (and 2, 3 at its last run): the floor, convergence of N creates, update, delete."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from typing import Any, cast

import httpx

from bench.kube import LLMWatch, floor_body, llm_body
from bench.phases.steady import SteadyStatePhase
from bench.results import ConvergenceRun, ConvergenceSummary, CreateWindow, Floor
from bench.sizes import BenchError


async def _floor(base_url: str, api_key: str, bodies: list[dict[str, Any]], concurrency: int) -> Floor:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base_url, headers={"x-api-key": api_key}, limits=limits, timeout=30.0, trust_env=False
    ) as client:

        async def call(method: str, path: str, body: Any = None) -> int:
            async with sem:
                response = await client.request(method, path, json=body)
                return response.status_code

        started = time.monotonic()
        codes = await asyncio.gather(*(call("POST", "/v1/llms", b) for b in bodies))
        create_s = time.monotonic() - started
        if any(c != 201 for c in codes):
            raise BenchError(f"floor creates answered {Counter(codes)}")
        started = time.monotonic()
        codes = await asyncio.gather(*(call("DELETE", f"/v1/llms/{b['llmId']}") for b in bodies))
        delete_s = time.monotonic() - started
        if any(c != 204 for c in codes):
            raise BenchError(f"floor deletes answered {Counter(codes)}")
    return {"create_s": create_s, "delete_s": delete_s}


def run_floor(base_url: str, api_key: str, bodies: list[dict[str, Any]], concurrency: int) -> Floor:
    """A bare async httpx client: the same creates (then their deletes) at the same concurrency, nothing else."""
    return asyncio.run(_floor(base_url, api_key, bodies, concurrency))


class ConvergencePhase(SteadyStatePhase):
    # -- 1, 2, 3: convergence, update, steady state, delete --------------------------------------

    def convergence_run(self, k: int, *, last: bool, rps: float | None = None) -> ConvergenceRun:
        s, stack = self.sizes, self.stack
        assert stack.emu is not None
        n = s.convergence
        tag = f"conv{k + 1}" if rps is None else f"conv-rps{rps:g}"
        ns = self._namespace(tag)
        names = [f"llm-{i:05d}" for i in range(n)]
        out = cast(ConvergenceRun, {"namespace": ns, "n": n})

        # The floor: the same creates from a bare client at the same concurrency (kept out of the operator's counts).
        floor_w = self._window()
        out["floor"] = run_floor(
            stack.emu.base_url, stack.emu.api_key, [floor_body(ns, x) for x in names], s.registry_concurrency
        )
        self._close(floor_w, count=False)
        self.say(
            f"   floor: {n} creates in {out['floor']['create_s']:.2f}s, deletes in {out['floor']['delete_s']:.2f}s"
        )

        op = stack.start_operator(tag, [] if rps is None else ["--registry-rps", f"{rps:g}"])
        watch = LLMWatch(self.kube, ns)
        profiler = self._start_profiler(tag) if k == 0 or rps is not None else None
        try:
            w = self._window()
            t0 = time.monotonic()
            out["apply_s"] = self.kube.create_llms(ns, [llm_body(ns, x) for x in names])
            last_ready = watch.wait_ready(names, s.timeout)
            out["converge_s"] = last_ready - t0
            if profiler is not None:
                out["profile"] = self._stop_profiler(profiler)
            self._settle()
            out["create"] = cast(CreateWindow, self._close(w))
            out["create"]["rss_max_mb"] = round(stack.sampler.max_kb() / 1024, 1) if stack.sampler else 0
            out["create"]["hwm_mb"] = round(stack.operator_hwm_mb(), 1)
            self.created += n
            self.say(
                f"   {n} Ready in {out['converge_s']:.2f}s (applied in {out['apply_s']:.2f}s); "
                f"registry {out['create']['registry']}; api writes {sum(out['create']['api_writes'].values())}"
            )

            if last:
                out["update"] = self._update(watch, ns, names)
                stack.stop_operator()
                out["steady"] = self._steady_state(watch, ns, names)  # its own operator, short drift interval
                before = stack.registry_counts()
                stack.start_operator(f"{tag}-delete")  # back to the defaults; its resume pass ends before deleting
                self._wait_registry_quiet(n, before)
            out["delete"] = self._delete(watch, ns, names)
        finally:
            if profiler is not None and profiler.poll() is None:
                self._stop_profiler(profiler)
            watch.stop()
            run = stack.stop_operator()
        out["operator_pid"] = op.pid
        out["operator_hwm_mb"] = round(run.hwm_mb, 1) if run else None
        return out

    @staticmethod
    def _convergence_summary(runs: list[ConvergenceRun]) -> ConvergenceSummary:
        conv = [r["converge_s"] for r in runs]
        floor = [r["floor"]["create_s"] for r in runs]
        ratios = [r["converge_s"] / r["floor"]["create_s"] for r in runs]
        return {
            "runs": runs,
            "converge_s": conv,
            "floor_s": floor,
            "ratios": ratios,
            "converge_median_s": statistics.median(conv),
            "floor_median_s": statistics.median(floor),
            "ratio_median": statistics.median(ratios),
        }
