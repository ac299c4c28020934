"""Phase 8: connections (issue #15): many teams converging at once, each under its own key; one team's registry
down while another creates; the memory each connection costs.

1. `connection_namespaces` namespaces, each with a labelled key Secret (its own principal in the emulator) and a
   GoodMemConnection `default`; once all are Ready, `connection_llms` LLMs in each, applied at once (8 threads,
   interleaved across the namespaces). Alternating with the same LLMs in as many namespaces without a connection
   (the operator's own key), so the two are measured under the same load. Every entry's `ownerId` is checked.
2. Isolation: team-a's connection points at a second emulator process; while it answers 503 (outage), or slower
   than the connection's request timeout (timeouts), and team-a's LLMs converge and retry, team-b creates one LLM;
   against the same lone create with team-a's registry healthy and idle.
3. Memory: a fresh operator's RSS with no connection vs with `memory_connections` Ready connections (no LLMs).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from typing import Any

from bench.kube import LLMWatch, llm_body, secret_body
from bench.phases.base import PhaseBase
from bench.registry import RegistryAccessLog, delta, registry_summary
from bench.results import (
    ConnectionMemory,
    ConnectionRun,
    ConnectionsResult,
    IsolationMode,
    IsolationResult,
    MemoryPoint,
)
from bench.sizes import CONN_PLURAL, GROUP, VERSION, BenchError
from bench.stack import team_key
from goodmem_devcluster.stack import EmulatorProcess
from goodmem_emulator import owner_id_for_key

#: team-a's key on its own registry (the second emulator), and the request timeout its connection asks for.
TEAM_A_KEY = "bench-team-a-key"
TEAM_A_TIMEOUT_S = 2.0
CREDENTIALS = {"goodmem.ai/credentials": "true"}


def connection_body(name: str, base_url: str, secret: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GoodMemConnection",
        "metadata": {"name": name},
        "spec": {"baseUrl": base_url, "apiKeySecretRef": {"name": secret, "key": "api-key"}, **spec},
    }


def _ready(obj: dict[str, Any]) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


class ConnectionsPhase(PhaseBase):
    # -- connections on the API server --------------------------------------------------------------

    def _add_connections(self, ns: str, base_url: str, keys: dict[str, str], **spec: Any) -> None:
        """One labelled key Secret and one GoodMemConnection per entry of `keys` (connection name -> key)."""
        self.kube.create_secrets(
            ns, [secret_body(f"key-{name}", {"api-key": key}, CREDENTIALS) for name, key in keys.items()]
        )
        custom = self.kube.custom()
        for name in keys:
            custom.create_namespaced_custom_object(
                GROUP, VERSION, ns, CONN_PLURAL, connection_body(name, base_url, f"key-{name}", **spec)
            )

    def _connections(self, ns: str) -> list[dict[str, Any]]:
        return list(self.kube.custom().list_namespaced_custom_object(GROUP, VERSION, ns, CONN_PLURAL)["items"])

    def _wait_connections(self, wanted: dict[str, int], what: str) -> float:
        """Until each namespace of `wanted` has that many connections, all Ready; the monotonic time it was seen."""
        deadline = time.monotonic() + self.sizes.timeout
        while True:
            seen = {ns: sum(_ready(c) for c in self._connections(ns)) for ns in wanted}
            if seen == wanted:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {what}: Ready per namespace {seen}, wanted {wanted}")
            time.sleep(0.2)

    def _remove_connections(self, namespaces: list[str]) -> None:
        """Delete every connection of these namespaces (no LLM uses them any more) and their Secrets; wait."""
        for ns in namespaces:
            self.kube.custom().delete_collection_namespaced_custom_object(GROUP, VERSION, ns, CONN_PLURAL)
        deadline = time.monotonic() + self.sizes.timeout
        while any(self._connections(ns) for ns in namespaces):
            if time.monotonic() > deadline:
                raise BenchError(f"connections not gone: {[(ns, len(self._connections(ns))) for ns in namespaces]}")
            time.sleep(0.2)
        for ns in namespaces:
            self.kube.delete_all_secrets(ns)

    # -- the phase --------------------------------------------------------------------------------

    def connections(self) -> ConnectionsResult:
        s, stack = self.sizes, self.stack
        assert stack.emu is not None
        stack.start_operator("connections")
        teams = [self._namespace(f"conn{i:02d}") for i in range(s.connection_namespaces)]
        plain = [self._namespace(f"plain{i:02d}") for i in range(s.connection_namespaces)]
        keys = {ns: team_key(i) for i, ns in enumerate(teams)}
        watches = {ns: LLMWatch(self.kube, ns) for ns in teams + plain}
        try:
            t0 = time.monotonic()
            for ns in teams:
                self._add_connections(ns, stack.emu.base_url, {"default": keys[ns]})
            ready_s = self._wait_connections(dict.fromkeys(teams, 1), "the teams' connections") - t0
            self.say(f"   {len(teams)} connections Ready in {ready_s:.2f}s")
            runs: list[ConnectionRun] = []
            baseline: list[ConnectionRun] = []
            for k in range(s.connection_runs):
                runs.append(self._converge(k, teams, watches, keys))
                baseline.append(self._converge(k, plain, watches, None))
            isolation = self._isolation()
            self._remove_connections(teams)  # while an operator runs: it releases their finalizers
        finally:
            for w in watches.values():
                w.stop()
            stack.stop_operator()
        memory = self._connection_memory()
        return {
            "namespaces": s.connection_namespaces,
            "per_namespace": s.connection_llms,
            "connections_ready_s": ready_s,
            "runs": runs,
            "baseline": baseline,
            "converge_median_s": statistics.median(r["converge_s"] for r in runs),
            "baseline_median_s": statistics.median(r["converge_s"] for r in baseline) if baseline else None,
            "isolation": isolation,
            "memory": memory,
        }

    def _converge(
        self, k: int, namespaces: list[str], watches: dict[str, LLMWatch], keys: dict[str, str] | None
    ) -> ConnectionRun:
        """`connection_llms` LLMs in each namespace, applied at once; all Ready; owners checked; all deleted."""
        s, stack = self.sizes, self.stack
        assert stack.emu is not None
        names = [f"r{k + 1}-{i:04d}" for i in range(s.connection_llms)]
        items = [(ns, llm_body(ns, name)) for name in names for ns in namespaces]
        n = len(items)
        w = self._window()
        t0 = time.monotonic()
        apply_s = self.kube.create_llms_across(items)
        converge_s = max(watches[ns].wait_ready(names, s.timeout) for ns in namespaces) - t0
        self._settle()
        window = self._close(w)
        self.created += n
        records = {r.get("llmId"): r for r in stack.emu.records()}
        ok = wrong = 0
        for ns in namespaces:
            owner = owner_id_for_key(keys[ns] if keys else stack.emu.api_key)
            for llm_id in self.kube.llm_ids(ns).values():
                if (records.get(llm_id) or {}).get("ownerId") == owner:
                    ok += 1
                else:
                    wrong += 1
        dw = self._window()
        t1 = time.monotonic()
        for ns in namespaces:
            self.kube.delete_all_llms(ns)
        delete_s = max(watches[ns].wait_gone(names, s.timeout) for ns in namespaces) - t1
        self._settle()
        deleted = self._close(dw)
        self.deleted += n
        requests = sum(v for key, v in window["registry"].items() if key in ("POST", "GET", "LIST", "PUT", "DELETE"))
        how = "own connections" if keys else "operator's key"
        self.say(
            f"   run {k + 1} ({how}): {len(namespaces)} x {s.connection_llms} LLMs Ready in {converge_s:.2f}s "
            f"(applied in {apply_s:.2f}s); registry {window['registry']}; owners ok {ok}, wrong {wrong}; "
            f"deleted in {delete_s:.2f}s"
        )
        return {
            "with_connections": keys is not None,
            "n": n,
            "apply_s": apply_s,
            "converge_s": converge_s,
            "registry": window["registry"],
            "requests_per_create": requests / n,
            "owners_ok": ok,
            "owners_wrong": wrong,
            "cpu": window["cpu"],
            "delete_s": delete_s,
            "delete_registry": deleted["registry"],
        }

    # -- isolation ----------------------------------------------------------------------------------

    def _lone(self, watch: LLMWatch, ns: str, name: str) -> float:
        t0 = time.monotonic()
        self.kube.custom().create_namespaced_custom_object(GROUP, VERSION, ns, "llms", llm_body(ns, name))
        return watch.wait_ready([name], self.sizes.timeout) - t0

    def _isolation(self) -> IsolationResult:
        s, stack = self.sizes, self.stack
        assert stack.emu is not None
        second = EmulatorProcess(
            self.workdir / "emulator-team-a.log", api_key=TEAM_A_KEY, admin_key="bench-team-a-admin"
        ).start()
        a_log = RegistryAccessLog(second.log_path)
        a_ns, b_ns = self._namespace("team-a"), self._namespace("team-b")
        a_watch, b_watch = LLMWatch(self.kube, a_ns), LLMWatch(self.kube, b_ns)
        try:
            self._add_connections(
                a_ns, second.base_url, {"default": TEAM_A_KEY}, requestTimeoutSeconds=TEAM_A_TIMEOUT_S
            )
            self._add_connections(b_ns, stack.emu.base_url, {"default": team_key(1)})
            self._wait_connections({a_ns: 1, b_ns: 1}, "team-a's and team-b's connections")
            time.sleep(1.0)
            idle = []
            for i in range(s.isolation_runs):
                idle.append(self._lone(b_watch, b_ns, f"idle-{i}"))
                time.sleep(0.3)
            self.created += len(idle)
            self.say(
                f"   team-b's lone create, team-a's registry healthy and idle: {', '.join(f'{x:.2f}s' for x in idle)}"
            )
            modes: list[IsolationMode] = []
            faults: list[tuple[str, dict[str, Any]]] = [("outage", {"outage": True})]
            if s.isolation_timeouts:
                faults.append(("timeouts", {"latencyMs": int(TEAM_A_TIMEOUT_S * 1000 + 1500)}))
            for mode, fault in faults:
                modes.append(self._isolation_mode(mode, fault, second, a_log, a_ns, b_ns, a_watch, b_watch))
            b_names = list(b_watch.items)
            self.kube.delete_all_llms(b_ns)
            b_watch.wait_gone(b_names, s.timeout)
            self.deleted += len(b_names)
            a_names = list(a_watch.items)
            self.kube.delete_all_llms(a_ns)  # on team-a's registry: not counted in the bench emulator's totals
            a_watch.wait_gone(a_names, s.timeout)
            self._remove_connections([a_ns, b_ns])
        finally:
            a_watch.stop()
            b_watch.stop()
            second.stop()
        return {
            "a_llms": s.isolation_llms,
            "request_timeout_s": TEAM_A_TIMEOUT_S,
            "idle_s": idle,
            "idle_median_s": statistics.median(idle),
            "modes": modes,
        }

    def _isolation_mode(
        self,
        mode: str,
        fault: dict[str, Any],
        second: EmulatorProcess,
        a_log: RegistryAccessLog,
        a_ns: str,
        b_ns: str,
        a_watch: LLMWatch,
        b_watch: LLMWatch,
    ) -> IsolationMode:
        """team-a's registry faulty; per run, team-a applies `isolation_llms` more LLMs and, once a quarter of them
        have failed, team-b creates one; then team-a's registry heals and all of team-a's LLMs converge."""
        s = self.sizes
        a_before, b_window = a_log.counts(), self._window()
        second.set_faults(**fault)
        lone: list[float] = []
        failed_at: list[int] = []
        all_a: list[str] = []
        for k in range(s.isolation_runs):
            names = [f"{mode}-{k + 1}-{i:04d}" for i in range(s.isolation_llms)]
            all_a += names
            applied: dict[str, Any] = {}

            def apply(names: list[str] = names, applied: dict[str, Any] = applied) -> None:
                try:
                    self.kube.create_llms(a_ns, [llm_body(a_ns, x) for x in names])
                except BaseException as exc:
                    applied["error"] = exc

            applier = threading.Thread(target=apply, name=f"apply-{mode}", daemon=True)
            applier.start()
            trigger = max(1, len(names) // 4)
            a_watch.wait(
                lambda x, names=names, trigger=trigger: (
                    sum(1 for n in names if (i := x.items.get(n)) and i.failed) >= trigger
                ),
                s.timeout,
                f"{trigger} of team-a's LLMs failed",
            )
            failed_at.append(sum(1 for i in a_watch.items.values() if i.failed))
            lone.append(self._lone(b_watch, b_ns, f"{mode}-{k + 1}"))
            applier.join()
            if "error" in applied:
                raise applied["error"]
            time.sleep(0.3)
        self.created += len(lone)
        a_watch.wait(
            lambda x: all((i := x.items.get(n)) is not None and i.failed for n in all_a),
            s.timeout,
            "every LLM of team-a failed once",
        )
        reasons = Counter(str(a_watch.items[n].reason) for n in all_a)
        a_requests = delta(a_log.counts(), a_before)
        second.clear_faults()
        t0 = time.monotonic()
        recover_s = a_watch.wait_ready(all_a, s.timeout) - t0
        b_reg = self._close(b_window)["registry"]
        self.say(
            f"   {mode}: team-b's lone create {', '.join(f'{x:.2f}s' for x in lone)} while team-a's registry was "
            f"faulty (team-a failed: {failed_at}, reasons {dict(reasons)}); team-a Ready {recover_s:.1f}s after "
            "it healed"
        )
        return {
            "mode": mode,
            "faults": fault,
            "lone_s": lone,
            "median_s": statistics.median(lone),
            "a_failed_at_b_create": failed_at,
            "a_reasons": dict(reasons),
            "a_requests": registry_summary(a_requests),
            "b_registry": b_reg,
            "a_recover_s": recover_s,
        }

    # -- memory ------------------------------------------------------------------------------------

    def _fresh_operator_with(self, tag: str, n: int) -> MemoryPoint:
        """A fresh operator; once it has probed `n` connections (authenticated lists) and gone quiet, its RSS."""
        stack = self.stack
        before = stack.registry_counts()
        run = stack.start_operator(tag)
        deadline = time.monotonic() + self.sizes.timeout
        last, changed = -1, time.monotonic()
        while True:
            d = delta(stack.registry_counts(), before)
            total = sum(v for key, v in d.items() if not key.startswith("status "))
            if total != last:
                last, changed = total, time.monotonic()
            if d.get("GET /v1/llms", 0) >= n and time.monotonic() - changed >= self.sizes.quiet_s:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"fresh operator did not probe {n} connections: {d}")
            time.sleep(0.25)
        t = time.monotonic()
        time.sleep(self.sizes.sample_s)
        assert stack.sampler is not None
        return {
            "tag": tag,
            "llms": 0,
            "pid": run.pid,
            "rss_mb": round(stack.sampler.mean_kb(since=t) / 1024, 1),
            "hwm_mb": round(stack.operator_hwm_mb(), 1),
            "startup_s": round(t - run.started, 1),
        }

    def _connection_memory(self) -> ConnectionMemory:
        s, stack = self.sizes, self.stack
        assert stack.emu is not None
        n = s.memory_connections
        ns = self._namespace("connmem")
        try:
            before = self._fresh_operator_with("connmem-0", 0)
            t0 = time.monotonic()
            self._add_connections(ns, stack.emu.base_url, {f"c{i:03d}": team_key(i) for i in range(n)})
            ready_s = self._wait_connections({ns: n}, f"{n} connections") - t0
            self._settle()
            running = round(stack.operator_rss_mb(), 1)
            stack.stop_operator()
            after = self._fresh_operator_with(f"connmem-{n}", n)
            self._remove_connections([ns])
            stack.stop_operator()
            again = self._fresh_operator_with("connmem-0-again", 0)
        finally:
            stack.stop_operator()
        per_kb = (after["rss_mb"] - before["rss_mb"]) * 1024 / n
        self.say(
            f"   fresh operator RSS: {before['rss_mb']} MB with no connection, {after['rss_mb']} MB with {n} Ready "
            f"({per_kb:.0f} KB per connection), {again['rss_mb']} MB after they were deleted; {n} Ready in "
            f"{ready_s:.1f}s (running operator then {running} MB)"
        )
        return {
            "n": n,
            "ready_s": ready_s,
            "before": before,
            "after": after,
            "again": again,
            "running_rss_mb": running,
            "per_connection_kb": round(per_kb, 1),
        }
