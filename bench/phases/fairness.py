"""Phase 7: fair share, a lone create in namespace B while namespace A converges (issue #13 part 5)."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from bench.audit import operator_writes_in, what
from bench.kube import LLMWatch, llm_body
from bench.phases.base import PhaseBase
from bench.results import FairnessResult, FairnessRun, TimelineStep
from bench.sizes import GROUP, PLURAL, VERSION


class FairnessPhase(PhaseBase):
    def _lone_create(self, watch: LLMWatch, ns: str, name: str) -> float:
        """One LLM created by itself: seconds from the create request to the watch event that shows it Ready."""
        t0 = time.monotonic()
        self.kube.custom().create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, llm_body(ns, name))
        return watch.wait_ready([name], self.sizes.timeout) - t0

    def fairness(self) -> FairnessResult:
        """A lone create in namespace B while namespace A's `fairness` creates converge, against the same lone create
        on an otherwise idle operator (one operator at the defaults for all of it)."""
        s, stack = self.sizes, self.stack
        stack.start_operator("fairness")
        idle_ns = self._namespace("fair-idle")
        idle_watch = LLMWatch(self.kube, idle_ns)
        runs: list[FairnessRun] = []
        try:
            time.sleep(1.0)  # idle
            idle: list[float] = []
            for i in range(s.fairness_runs):
                idle.append(self._lone_create(idle_watch, idle_ns, f"lone-{i}"))
                time.sleep(0.3)
            self.created += len(idle)
            self.kube.delete_all_llms(idle_ns)
            idle_watch.wait_gone([f"lone-{i}" for i in range(s.fairness_runs)], s.timeout)
            self.deleted += len(idle)
            self.say(f"   lone create, idle operator: {', '.join(f'{x:.2f}s' for x in idle)}")
            for k in range(s.fairness_runs):
                runs.append(self._fairness_run(k))
            diagnostic = single_stream = None
            if s.fairness_diagnostic_rps:
                stack.start_operator("fairness-rps", ["--registry-rps", f"{s.fairness_diagnostic_rps:g}"])
                time.sleep(1.0)
                diagnostic = self._fairness_run(s.fairness_runs)
                diagnostic["rps"] = s.fairness_diagnostic_rps
            if s.fairness_single_stream:
                stack.start_operator("fairness-single-stream", ["--watch-streams", "cluster"])
                time.sleep(1.0)
                single_stream = self._fairness_run(s.fairness_runs + 1)
                single_stream["streams"] = "cluster"
        finally:
            idle_watch.stop()
            stack.stop_operator()
        loaded = [r["lone_s"] for r in runs]
        return {
            "n": s.fairness,
            "runs": runs,
            "idle_s": idle,
            "loaded_s": loaded,
            "diagnostic": diagnostic,
            "single_stream": single_stream,
            "idle_median_s": statistics.median(idle),
            "loaded_median_s": statistics.median(loaded),
            "delay_median_s": statistics.median(loaded) - statistics.median(idle),
        }

    def _lone_timeline(self, audit_offset: int, ns: str, t0_epoch: float) -> list[TimelineStep]:
        """Where B's create spent its time: each API-server write of the operator's on B's object (audit log: received
        and completed) and the registry POST (emulator), in seconds after the harness sent B's create."""
        from datetime import datetime

        stack = self.stack
        assert stack.cp is not None and stack.emu is not None
        out: list[TimelineStep] = []

        def rel(stamp: str) -> float:
            return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - t0_epoch, 3)

        for ev in operator_writes_in(stack.cp.audit_log_path, audit_offset, ns):
            out.append(
                {
                    "what": what(ev),
                    "received_s": rel(ev["requestReceivedTimestamp"]),
                    "done_s": rel(ev["stageTimestamp"]),
                }
            )
        since_ms = int(t0_epoch * 1000) - 1
        for e in stack.emu.stats()["log"]:
            body = e.get("body")
            if (
                e.get("method") == "POST"
                and e.get("ts", 0) >= since_ms
                and isinstance(body, dict)
                and f".{ns}." in str(body.get("endpointUrl", ""))
            ):
                out.append({"what": "registry POST", "received_s": None, "done_s": round(e["ts"] / 1000 - t0_epoch, 3)})
        return sorted(out, key=lambda x: x["done_s"])

    def _fairness_run(self, k: int) -> FairnessRun:
        s = self.sizes
        n = s.fairness
        a_ns, b_ns = self._namespace(f"fair-a{k + 1}"), self._namespace(f"fair-b{k + 1}")
        a_watch, b_watch = LLMWatch(self.kube, a_ns), LLMWatch(self.kube, b_ns)
        names = [f"bulk-{i:05d}" for i in range(n)]
        applied: dict[str, Any] = {}

        def apply_a() -> None:
            try:
                applied["s"] = self.kube.create_llms(a_ns, [llm_body(a_ns, x) for x in names])
            except BaseException as exc:
                applied["error"] = exc

        try:
            w = self._window()
            t0 = time.monotonic()
            applier = threading.Thread(target=apply_a, name="apply-a", daemon=True)
            applier.start()
            # B creates once A's convergence is in full swing: a quarter of A Ready, three quarters still to go.
            trigger = max(1, n // 4)
            a_watch.wait(
                lambda x: sum(i.ready for i in x.items.values()) >= trigger, s.timeout, f"{trigger} LLMs Ready"
            )
            a_ready_at_b_create = a_watch.ready_count()
            b_created_epoch = time.time()
            lone_s = self._lone_create(b_watch, b_ns, "lone")
            b_ready_at = b_watch.items["lone"].ready_at or 0.0
            a_ready_at_b_ready = a_watch.ready_count(at=b_ready_at)
            applier.join()
            if "error" in applied:
                raise applied["error"]
            a_converge_s = a_watch.wait_ready(names, s.timeout) - t0
            self._settle()
            timeline = self._lone_timeline(w["audit"], b_ns, b_created_epoch)
            window = self._close(w)
            self.created += n + 1
            out_delete = self._delete(a_watch, a_ns, names)
            self.kube.delete_all_llms(b_ns)
            b_watch.wait_gone(["lone"], s.timeout)
            self.deleted += 1
        finally:
            a_watch.stop()
            b_watch.stop()
        self.say(
            f"   run {k + 1}: lone create in B Ready in {lone_s:.2f}s while A's {n} converged "
            f"(A Ready: {a_ready_at_b_create} at B's create, {a_ready_at_b_ready} at B's Ready; "
            f"all of A in {a_converge_s:.1f}s)"
        )
        return {
            "lone_s": lone_s,
            "timeline": timeline,
            "a_ready_at_b_create": a_ready_at_b_create,
            "a_ready_at_b_ready": a_ready_at_b_ready,
            "a_converge_s": a_converge_s,
            "a_apply_s": applied.get("s"),
            "registry": window["registry"],
            "cpu": window["cpu"],
            "delete": out_delete,
        }
