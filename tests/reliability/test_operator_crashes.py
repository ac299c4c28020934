"""Issue #8 part 2: SIGKILL the operator at random moments of mixed create/update/delete traffic.

Each round: registry latency (0-300 ms, so requests are in flight), traffic from a background thread,
a SIGKILL at a random moment, more traffic while the operator is down (sometimes a Secret rotation
too), a restart, and then the registry must equal the desired state exactly. The session operator is
left running at the end (a round that fails still restarts it).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from goodmem_devcluster import ControlPlane
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess

from .support import (
    FULL,
    Api,
    Traffic,
    converge,
    is_ready_at_generation,
    leak_scan,
    seed_for,
    sized,
    write_summary,
)

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]


def test_sigkill_rounds_converge_exactly(api: Api, namespace: str, operator: OperatorProcess,
                                         emulator: EmulatorProcess, control_plane: ControlPlane) -> None:
    seed = seed_for("operator-crashes")
    rng = random.Random(seed ^ 0x5EED)
    rounds = sized(3, 20)
    traffic = Traffic(api, namespace, seed=seed, weights=(0.4, 0.4, 0.2), min_live=4)
    traffic.rotate_secret()
    figures: dict[str, Any] = {"seed": seed, "rounds": [], "full_size": FULL}
    pids = []
    try:
        for n in range(rounds):
            latency = rng.choice([0, 100, 300])
            kill_after = round(rng.uniform(0.1, 2.5), 2)
            ops_before, ops_while_down = rng.randint(4, 10), rng.randint(0, 4)
            rotate = rng.random() < 0.3
            emulator.set_faults(latencyMs=latency)
            emulator.reset_stats()
            stop = threading.Event()
            worker = threading.Thread(target=traffic.run, args=(ops_before, 2.5, stop), daemon=True)
            started = time.monotonic()
            worker.start()
            time.sleep(kill_after)
            pids.append(operator.pid)
            operator.kill()  # SIGKILL: no cleanup, requests and patches cut wherever they are
            killed_at = time.monotonic() - started
            unfinished = [o["metadata"]["name"] for o in api.llms(namespace)
                          if o["metadata"].get("deletionTimestamp") or not is_ready_at_generation(o)]
            worker.join(timeout=30)
            traffic.run(ops_while_down, 0.5)
            if rotate:
                traffic.rotate_secret()
            emulator.clear_faults()
            t0 = time.monotonic()
            operator.start()
            restart_s = time.monotonic() - t0
            result = converge(api, emulator, traffic, timeout=sized(90, 180), alive=lambda: operator.proc.poll() is None)
            requests = Counter(f"{e['method']} {e['status']}" for e in emulator.stats()["log"])
            figures["rounds"].append({
                "round": n + 1, "latency_ms": latency, "killed_after_s": round(killed_at, 2),
                "ops_before_kill": ops_before, "llms_unfinished_at_kill": len(unfinished), "ops_while_down": ops_while_down, "secret_rotated_while_down": rotate,
                "restart_s": round(restart_s, 1), **result, "registry_requests": dict(sorted(requests.items())),
            })
            print(f"[operator-crashes] round {n + 1}/{rounds}: {figures['rounds'][-1]}")
    finally:
        emulator.clear_faults()
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()
    assert len(set(pids)) == rounds, "every round killed a fresh operator process"
    figures["rounds_run"] = rounds
    figures["operations"] = dict(traffic.counts)
    figures["objects_checked_total"] = sum(r["objects_checked"] for r in figures["rounds"])
    figures["max_converged_after_s"] = max(r["converged_after_s"] for r in figures["rounds"])
    figures.update(leak_scan(operator=operator, emulator=emulator, api=api, control_plane=control_plane,
                             namespaces=[namespace]))
    write_summary("operator-crashes", figures)
