"""What every phase shares: the stack, the results so far, the counting windows, update and delete of a set of LLMs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

from bench.kube import Kube, LLMWatch, _suffix
from bench.machine import loadavg, machine_facts, source_state
from bench.registry import delta, registry_summary
from bench.results import DeleteResult, PhaseTime, Results, UpdateResult, Window
from bench.sizes import BenchError, Sizes
from bench.stack import Stack, cpu_delta


class PhaseBase:
    """The state of one bench run and the helpers its phases share (each phase is a mixin of this class)."""

    def __init__(
        self, sizes: Sizes, workdir: Path, log: Callable[[str], None] = print, profile_dir: Path | None = None
    ) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.say = log
        self.profile_dir = profile_dir
        self.stack = Stack(sizes, workdir, log)
        self.results = cast(
            Results,
            {
                "sizes": asdict(sizes),
                "machine": machine_facts(),
                "source": source_state(),
                "phases_s": {},
            },
        )
        self.floor_registry: Counter[str] = Counter()  # the floor's requests, kept out of the operator's totals
        self.created = self.updated = self.deleted = self.rotated = 0

    # -- helpers ----------------------------------------------------------------------------------

    @property
    def kube(self) -> Kube:
        assert self.stack.kube is not None
        return self.stack.kube

    def _window(self) -> dict[str, Any]:
        return {
            "registry": self.stack.registry_counts(),
            "audit": self.stack.audit_mark(),
            "cpu": self.stack.cpu_snapshot(),
            "t": time.monotonic(),
        }

    def _close(self, w: dict[str, Any], *, count: bool = True) -> Window:
        reg = delta(self.stack.registry_counts(), w["registry"])
        audit = self.stack.audit_since(w["audit"])
        cpu = cpu_delta(w["cpu"], self.stack.cpu_snapshot(), time.monotonic() - w["t"])
        if not count:
            self.floor_registry.update(reg)
        return {
            "registry": registry_summary(reg),
            "registry_raw": reg,
            "api_writes": dict(audit["writes"]),
            "api_reads": dict(audit["reads"]),
            "api_failed": dict(audit["failed"]),
            "cpu": cpu,
        }

    def _wait_registry_quiet(self, min_gets: int, before: Counter[str]) -> None:
        """Until the operator has made at least `min_gets` GETs since `before` and then nothing for `quiet_s`."""
        quiet = self.sizes.quiet_s
        deadline = time.monotonic() + self.sizes.timeout
        last_total, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            now = self.stack.registry_counts()
            d = delta(now, before)
            total = sum(v for k, v in d.items() if not k.startswith("status "))
            if total != last_total:
                last_total, last_change = total, time.monotonic()
            if d.get("GET /v1/llms/{id}", 0) >= min_gets and time.monotonic() - last_change >= quiet:
                return
            time.sleep(0.25)
        raise BenchError(f"registry not quiet after {min_gets} GETs: {delta(self.stack.registry_counts(), before)}")

    def _settle(self, seconds: float | None = None) -> None:
        time.sleep(self.sizes.settle_s if seconds is None else seconds)

    def _namespace(self, prefix: str) -> str:
        return self.kube.create_namespace(f"{prefix}-{_suffix()}")

    def _timed(self, name: str, fn: Callable[[], Any]) -> Any:
        started = time.monotonic()
        load_before = loadavg()
        self.say(f"== {name} (load {load_before[0]:.2f})")
        try:
            return fn()
        finally:
            self.results["phases_s"][name] = PhaseTime(
                {
                    "wall_s": round(time.monotonic() - started, 1),
                    "load_before": load_before,
                    "load_after": loadavg(),
                }
            )

    def _update(self, watch: LLMWatch, ns: str, names: list[str]) -> UpdateResult:
        w = self._window()
        t0 = time.monotonic()
        apply_s = self.kube.patch_llm_specs(ns, names, {"description": "updated by the benchmark"})
        last = watch.wait_ready(names, self.sizes.timeout, generation=2)
        converge_s = last - t0
        self._settle()
        out = cast(UpdateResult, self._close(w))
        out.update(apply_s=apply_s, converge_s=converge_s, n=len(names))
        self.updated += len(names)
        self.say(f"   {len(names)} spec updates converged in {converge_s:.2f}s; registry {out['registry']}")
        return out

    def _delete(self, watch: LLMWatch, ns: str, names: list[str]) -> DeleteResult:
        w = self._window()
        t0 = time.monotonic()
        self.kube.delete_all_llms(ns)
        last = watch.wait_gone(names, self.sizes.timeout)
        gone_s = last - t0
        self._settle()
        out = cast(DeleteResult, self._close(w))
        out.update(gone_s=gone_s, n=len(names))
        self.deleted += len(names)
        self.say(f"   {len(names)} deleted (finalizers released) in {gone_s:.2f}s; registry {out['registry']}")
        return out

    # -- profiling (optional; py-spy must be installed in the venv) ----------------------------------

    def _start_profiler(self, tag: str) -> subprocess.Popen[bytes] | None:
        if self.profile_dir is None or self.stack.op is None:
            return None
        exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if exe is None:
            self.say("   (py-spy not found: no profile)")
            return None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.profile_dir / f"operator-{tag}.collapsed"
        proc = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(self.stack.op.pid),
                "--rate",
                "100",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        proc.output_path = out  # type: ignore[attr-defined]
        time.sleep(0.5)
        return proc

    def _stop_profiler(self, proc: subprocess.Popen[bytes]) -> str:
        import signal

        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return str(proc.output_path)  # type: ignore[attr-defined]
