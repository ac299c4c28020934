"""Issue #8 part 3: stop and start kube-apiserver (and etcd) under the running operator.

The session's control plane is restarted in place (same ports, certificates and etcd data) and always
left running, whatever happens. Two variants:

- operator running: it sees the API server go, retries its watches, and reconnects when it is back;
  changes made as soon as the API server answers again are picked up;
- operator away (SIGSTOP for the whole restart, SIGCONT after the changes): the changes are certainly
  made while it is not watching, so they can only reach it through the re-list kopf does when its old
  resourceVersion is gone (410) -- a create, an update, a delete and a Secret rotation that must also
  reach the LLMs nothing else touched.

Then changes made later must be picked up too (no zombie watch), and the operator process must be the
same one (it neither died nor needed a restart).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from goodmem_devcluster import ControlPlane
from goodmem_devcluster.controlplane import ControlPlaneError
from goodmem_devcluster.stack import EmulatorProcess, OperatorProcess

from .support import FULL, Api, Traffic, converge, leak_scan, seed_for, sized, write_summary

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]


def _ensure_running(cp: ControlPlane) -> None:
    """Start etcd and kube-apiserver if they are not running (the session's control plane must survive)."""
    for start in (cp.start_etcd, cp.start_apiserver):
        try:
            start()
        except ControlPlaneError as exc:
            if "already running" not in str(exc):
                raise


def _retrying(action: Any, timeout: float = 30.0) -> Any:
    """The first calls after a restart may meet a pooled connection the old API server closed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_watches_reconnect_after_apiserver_and_etcd_restarts(
    api: Api, namespace: str, operator: OperatorProcess, emulator: EmulatorProcess, control_plane: ControlPlane
) -> None:
    seed = seed_for("apiserver-restart")
    down_s = sized(3, 20)
    # (what is stopped, etcd too, operator away, kube-apiserver SIGKILLed rather than stopped with SIGTERM)
    plan = sized(
        [("kube-apiserver", False, False, False), ("kube-apiserver (SIGKILL) + etcd", True, True, True)],
        [
            ("kube-apiserver", False, False, False),
            ("kube-apiserver + etcd", True, False, False),
            ("kube-apiserver (SIGKILL)", False, True, True),
            ("kube-apiserver (SIGKILL) + etcd", True, True, True),
            ("kube-apiserver (SIGKILL) + etcd", True, False, True),
            ("kube-apiserver + etcd", True, True, False),
        ],
    )
    traffic = Traffic(api, namespace, seed=seed, weights=(0.4, 0.4, 0.2), min_live=4)
    traffic.rotate_secret()
    traffic.run(6, 0)
    converge(api, emulator, traffic, timeout=60)
    pid = operator.pid
    figures: dict[str, Any] = {"seed": seed, "down_s": down_s, "restarts": [], "full_size": FULL}
    for what, with_etcd, operator_away, crash in plan:
        stopped_at = time.monotonic()
        try:
            if operator_away:
                os.kill(operator.pid, signal.SIGSTOP)
            if crash and control_plane.apiserver_pid:
                os.kill(control_plane.apiserver_pid, signal.SIGKILL)
            control_plane.stop_apiserver()  # SIGTERM (SIGKILL after 15 s); reaps a killed one
            stop_s = time.monotonic() - stopped_at
            if with_etcd:
                control_plane.stop_etcd()
            time.sleep(down_s)
        finally:
            _ensure_running(control_plane)
        up_at = time.monotonic()
        try:
            # One change of each kind, at once (while the watches reconnect, or while the operator is away);
            # the Secret rotation must also reach the LLMs nothing else touched.
            before = dict(traffic.counts)
            for kind in ("create", "update", "delete"):
                _retrying(lambda kind=kind: traffic.op(kind))
            _retrying(traffic.rotate_secret)
            changes_at = time.monotonic() - up_at
            changes = {k: v - before.get(k, 0) for k, v in traffic.counts.items() if v != before.get(k, 0)}
        finally:
            if operator_away:
                os.kill(operator.pid, signal.SIGCONT)
        result = converge(api, emulator, traffic, timeout=120, alive=lambda: operator.proc.poll() is None)
        picked_up = time.monotonic() - up_at
        # A little later: the watches are live (no zombie).
        time.sleep(2)
        t0 = time.monotonic()
        traffic.run(4, 0)
        later = converge(api, emulator, traffic, timeout=60, alive=lambda: operator.proc.poll() is None)
        figures["restarts"].append(
            {
                "stopped": what,
                "operator": "away (SIGSTOP)" if operator_away else "running",
                "apiserver_stop_s": round(stop_s, 1),
                "down_s": round(up_at - stopped_at, 1),
                "apiserver_start_s": round(control_plane.startup_seconds.get("kube-apiserver", 0), 1),
                "changes_made_s_after_ready": round(changes_at, 1),
                "changes": changes,
                "picked_up_s_after_ready": round(picked_up, 1),
                "later_changes_picked_up_s": round(time.monotonic() - t0, 1),
                "objects_checked": result["objects_checked"] + later["objects_checked"],
            }
        )
        print(f"[apiserver-restart] {figures['restarts'][-1]}")
    assert operator.pid == pid and operator.proc.poll() is None, "the same operator process kept running"
    figures["restarts_run"] = len(plan)
    figures["operations"] = dict(traffic.counts)
    figures.update(
        leak_scan(operator=operator, emulator=emulator, api=api, control_plane=control_plane, namespaces=[namespace])
    )
    write_summary("apiserver-restart", figures)
