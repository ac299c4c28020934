"""Issue #8 part 2: SIGKILL the operator at random moments of mixed create/update/delete traffic.

Each round: registry latency (0-300 ms, so requests are in flight), traffic from a background thread,
a SIGKILL at a random moment, more traffic while the operator is down (sometimes a Secret rotation
too), a restart, and then the registry must equal the desired state exactly. The session operator is
left running at the end (a round that fails still restarts it).

The first round is not left to chance: the registry holds every request HELD_MS and the kill lands as
soon as the emulator's inFlight gauge shows a POST. The gauge is read again once the process is gone
(nothing can send a POST then): a create still in flight was received before the kill and had no answer
when it landed, and the log names the creates answered after it. Every round records the same figures.
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

HELD_MS = 1500  # the first round's registry latency: creates are certainly in flight at its kill
LATENCIES_MS = (0, 100, 300)
KILL_WINDOW_S = (0.1, 2.5)
OPS_BEFORE_KILL = (4, 10)  # over TRAFFIC_S, from a background thread
TRAFFIC_S = 2.5
OPS_WHILE_DOWN = (0, 4)
ROTATE_WHILE_DOWN = 0.3  # the share of rounds with a Secret rotation while the operator is down


def test_sigkill_rounds_converge_exactly(
    api: Api, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess, control_plane: ControlPlane
) -> None:
    seed = seed_for("operator-crashes")
    rng = random.Random(seed ^ 0x5EED)
    rounds = sized(3, 20)
    traffic = Traffic(api, namespace, seed=seed, weights=(0.4, 0.4, 0.2), min_live=4)
    traffic.rotate_secret()
    figures: dict[str, Any] = {"seed": seed, "rounds": [], "full_size": FULL}
    pids = []
    try:
        for n in range(rounds):
            held = n == 0  # kill while a create is provably in flight
            latency = HELD_MS if held else rng.choice(LATENCIES_MS)
            kill_after = round(rng.uniform(*KILL_WINDOW_S), 2)
            ops_before, ops_while_down = rng.randint(*OPS_BEFORE_KILL), rng.randint(*OPS_WHILE_DOWN)
            rotate = rng.random() < ROTATE_WHILE_DOWN
            emulator.set_faults(latencyMs=latency)
            emulator.reset_stats()
            stop = threading.Event()
            worker = threading.Thread(target=traffic.run, args=(ops_before, TRAFFIC_S, stop), daemon=True)
            started = time.monotonic()
            worker.start()
            if held:
                deadline = time.monotonic() + 30
                while emulator.stats()["inFlight"]["POST /v1/llms"] < 1:
                    assert time.monotonic() < deadline, "no create reached the registry"
                    time.sleep(0.05)
            else:
                time.sleep(kill_after)
            pids.append(operator.pid)
            operator.kill()  # SIGKILL: no cleanup, requests and patches cut wherever they are
            killed_ms = time.time() * 1000
            killed_at = time.monotonic() - started
            in_flight = emulator.stats()["inFlight"]  # the operator is gone: all of these predate the kill
            unfinished = [
                o["metadata"]["name"]
                for o in api.llms(namespace)
                if o["metadata"].get("deletionTimestamp") or not is_ready_at_generation(o)
            ]
            worker.join(timeout=30)
            deadline = time.monotonic() + 10
            while sum(emulator.stats()["inFlight"].values()) and time.monotonic() < deadline:
                time.sleep(0.05)  # the held requests are processed, answered to nobody
            names = {f"LLM {name}" for name in traffic.uids}
            answered_to_nobody = sorted(
                e["body"]["displayName"]
                for e in emulator.stats()["log"]
                if e["method"] == "POST" and e["ts"] > killed_ms and (e["body"] or {}).get("displayName") in names
            )
            if held:
                assert in_flight["POST /v1/llms"] >= 1, f"no create in flight when the kill landed: {in_flight}"
                assert answered_to_nobody, (
                    "no create of this traffic was received before the kill and answered after it"
                )
            traffic.run(ops_while_down, 0.5)
            if rotate:
                traffic.rotate_secret()
            emulator.clear_faults()
            t0 = time.monotonic()
            operator.start()
            restart_s = time.monotonic() - t0
            result = converge(
                api, emulator, traffic, timeout=sized(90, 180), alive=lambda: operator.proc.poll() is None
            )
            requests = Counter(f"{e['method']} {e['status']}" for e in emulator.stats()["log"])
            figures["rounds"].append(
                {
                    "round": n + 1,
                    "latency_ms": latency,
                    "killed_after_s": round(killed_at, 2),
                    "kill": "when a create was in flight" if held else "at a random moment",
                    "creates_in_flight_at_kill": in_flight["POST /v1/llms"],
                    "requests_in_flight_at_kill": sum(in_flight.values()),
                    "creates_answered_after_kill": len(answered_to_nobody),
                    "ops_before_kill": ops_before,
                    "llms_unfinished_at_kill": len(unfinished),
                    "ops_while_down": ops_while_down,
                    "secret_rotated_while_down": rotate,
                    "restart_s": round(restart_s, 1),
                    **result,
                    "registry_requests": dict(sorted(requests.items())),
                }
            )
            print(f"[operator-crashes] round {n + 1}/{rounds}: {figures['rounds'][-1]}")
    finally:
        emulator.clear_faults()
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()
    assert len(set(pids)) == rounds, "every round killed a fresh operator process"
    figures["rounds_run"] = rounds
    figures["parameters"] = {
        "held_round_latency_ms": HELD_MS,
        "latencies_ms": list(LATENCIES_MS),
        "kill_window_s": list(KILL_WINDOW_S),
        "ops_before_kill": list(OPS_BEFORE_KILL),
        "traffic_s": TRAFFIC_S,
        "ops_while_down": list(OPS_WHILE_DOWN),
        "rotation_while_down_probability": ROTATE_WHILE_DOWN,
    }
    figures["rounds_with_a_create_in_flight_at_kill"] = sum(
        1 for r in figures["rounds"] if r["creates_in_flight_at_kill"]
    )
    figures["operations"] = dict(traffic.counts)
    figures["objects_checked_total"] = sum(r["objects_checked"] for r in figures["rounds"])
    figures["max_converged_after_s"] = max(r["converged_after_s"] for r in figures["rounds"])
    figures.update(
        leak_scan(operator=operator, emulator=emulator, api=api, control_plane=control_plane, namespaces=[namespace])
    )
    write_summary("operator-crashes", figures)
