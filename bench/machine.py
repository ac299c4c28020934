"""The machine and its processes, from /proc: CPU seconds, RSS, load; what was measured (commit, versions)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench.sizes import ROOT
from goodmem_devcluster.gobuild import ETCD_VERSION, KUBERNETES_VERSION

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------------- /proc


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (kB) of a live process; {} if it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        return {}
    return out


def proc_cpu_seconds(pid: int | None, *, children: bool = False) -> float:
    if not pid:
        return 0.0
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (waited-for children: kubectl)
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine (all cores) since boot."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def loadavg() -> tuple[float, float, float]:
    a, b, c = Path("/proc/loadavg").read_text().split()[:3]
    return float(a), float(b), float(c)


def source_state() -> dict[str, Any]:
    """The commit measured, and whether the operator's sources differed from it (uncommitted edits)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "operator" / "goodmem_operator").rglob("*.py")):
        digest.update(path.read_bytes())
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "operator_sha256": digest.hexdigest()[:16],
        "dirty": [line[3:] for line in git("status", "--porcelain", "--", "operator", "pyproject.toml").splitlines()],
    }


def machine_facts() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    import kopf

    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "kopf": getattr(kopf, "__version__", "?"),
        "kubernetes": KUBERNETES_VERSION,
        "etcd": ETCD_VERSION,
    }


class RssSampler:
    """Samples VmRSS of one pid every `interval` seconds in a thread; keeps the max and the samples."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (monotonic, kB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_status(self.pid).get("VmRSS")
            if rss is not None:
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(self.interval)

    def max_kb(self, since: float = 0.0) -> int:
        return max((kb for t, kb in self.samples if t >= since), default=0)

    def mean_kb(self, since: float = 0.0) -> float:
        values = [kb for t, kb in self.samples if t >= since]
        return statistics.fmean(values) if values else 0.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
