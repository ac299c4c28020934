"""Process supervision: run named components, wait until each is ready, stop them by pid; the state directory
they run in; the stop at interpreter exit.

Nothing here knows etcd or kube-apiserver: a `Component` says what to run, where it logs and how to tell it is
ready (components.py builds them). A new process for the control plane is a new `Component` and its name in
the `Supervisor`'s start order.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._proc import pid_alive, process_start_time, terminate_pid
from .errors import ControlPlaneError
from .layout import STATE_FILE

__all__ = [
    "Component",
    "ExitHook",
    "ProcessRecord",
    "Supervisor",
    "http_probe",
    "prepare_state_dir",
    "read_state",
    "remove_state_dir",
    "tail",
    "write_state",
]

Probe = Callable[[], bool]


@dataclass(frozen=True)
class Component:
    """One process: its command line, the log its stdout and stderr go to, a readiness probe and how long to wait."""

    name: str
    argv: Sequence[str]
    log_path: Path
    ready: Probe
    timeout: float
    cwd: Path | None = None


@dataclass(frozen=True)
class ProcessRecord:
    """A started process: its pid and its /proc start time, which tells a reused pid apart."""

    pid: int
    start_time: int | None

    def alive(self) -> bool:
        return pid_alive(self.pid, self.start_time)


class Supervisor:
    """Starts, watches and stops the processes named in `order` (started in that order, stopped in reverse).

    It keeps the pid of each; after a change (a start or a stop) it calls `on_change`, so the owner can record
    the pids. With `detached=True` the processes get their own session and outlive this Python process.
    """

    def __init__(
        self,
        order: Sequence[str],
        *,
        detached: bool = False,
        stop_timeout: float = 15.0,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.order = tuple(order)
        self.detached = detached
        self.stop_timeout = stop_timeout
        self._on_change = on_change
        self._records: dict[str, ProcessRecord | None] = dict.fromkeys(self.order)
        self._popens: dict[str, subprocess.Popen[bytes] | None] = dict.fromkeys(self.order)
        #: seconds from process start to ready, per component, for its latest start
        self.startup_seconds: dict[str, float] = {}

    def _known(self, name: str) -> str:
        if name not in self._records:
            raise ValueError(f"unknown component {name!r}; this supervisor runs {list(self.order)}")
        return name

    # ------------------------------------------------------------------ queries
    def alive(self, name: str) -> bool:
        rec = self._records[self._known(name)]
        if rec is None:
            return False
        popen = self._popens[name]
        if popen is not None:
            return popen.poll() is None
        return rec.alive()

    def any_alive(self) -> bool:
        return any(self.alive(name) for name in self.order)

    def pid(self, name: str) -> int | None:
        rec = self._records[self._known(name)]
        return rec.pid if rec else None

    @property
    def pids(self) -> dict[str, int]:
        """Recorded pids (of processes started and not stopped since), by component name."""
        return {name: rec.pid for name, rec in self._records.items() if rec}

    def records(self) -> dict[str, dict[str, int | None] | None]:
        """What state.json records under "processes"."""
        return {
            name: ({"pid": rec.pid, "start_time": rec.start_time} if rec else None)
            for name, rec in self._records.items()
        }

    def adopt(self, records: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Take over processes started elsewhere (from `records()` of another supervisor, via state.json)."""
        for name, rec in records.items():
            self._records[self._known(name)] = ProcessRecord(rec["pid"], rec["start_time"]) if rec else None
            self._popens[name] = None

    # ---------------------------------------------------------------- lifecycle
    def start(self, component: Component) -> None:
        """Spawn `component` and wait until its probe says ready.

        Raises ControlPlaneError, with the last lines of its log, if it exits first or is not ready in time
        (then it is stopped).
        """
        name = self._known(component.name)
        if self.alive(name):
            raise ControlPlaneError(f"{name} already running")
        started = self._spawn(component)
        self._wait_ready(component, started)

    def stop(self, name: str) -> None:
        """SIGTERM, then SIGKILL after `stop_timeout`; a pid reused by another process is never signalled."""
        rec = self._records[self._known(name)]
        if rec is None:
            return
        terminate_pid(rec.pid, rec.start_time, timeout=self.stop_timeout, popen=self._popens[name])
        self._records[name] = None
        self._popens[name] = None
        self._on_change()

    def stop_all(self) -> None:
        for name in reversed(self.order):
            self.stop(name)

    def _spawn(self, c: Component) -> float:
        c.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(c.log_path, "ab") as log:
            log.write(f"\n===== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(c.argv)}\n".encode())
            log.flush()
            started = time.monotonic()
            popen = subprocess.Popen(
                list(c.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=c.cwd,
                start_new_session=self.detached,
                close_fds=True,
            )
        self._popens[c.name] = popen
        self._records[c.name] = ProcessRecord(popen.pid, process_start_time(popen.pid))
        self._on_change()
        return started

    def _wait_ready(self, c: Component, started: float) -> None:
        deadline = started + c.timeout
        while True:
            popen = self._popens[c.name]
            if popen is not None and popen.poll() is not None:
                raise ControlPlaneError(
                    f"{c.name} exited with code {popen.returncode} during startup; "
                    f"last lines of {c.log_path}:\n{tail(c.log_path)}"
                )
            if c.ready():
                self.startup_seconds[c.name] = time.monotonic() - started
                return
            if time.monotonic() > deadline:
                self.stop(c.name)
                raise ControlPlaneError(
                    f"{c.name} not ready after {c.timeout:.0f}s; last lines of {c.log_path}:\n{tail(c.log_path)}"
                )
            time.sleep(0.1)


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log (read from its last 64 KiB), or "(no log)"."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def http_probe(
    url: str,
    *,
    context: ssl.SSLContext | None = None,
    accept: Callable[[int, bytes], bool] = lambda status, body: status == 200,
    timeout: float = 5.0,
) -> Probe:
    """A readiness probe: GET `url` (never through a proxy) and `accept(status, body)`; errors mean not ready."""

    def probe() -> bool:
        handlers: list[Any] = [urllib.request.ProxyHandler({})]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        try:
            with urllib.request.build_opener(*handlers).open(url, timeout=timeout) as r:
                return accept(r.status, r.read())
        except (OSError, ValueError):
            return False

    return probe


# ------------------------------------------------------------------ state dir
def prepare_state_dir(requested: Path | None, order: Sequence[str]) -> Path:
    """A fresh temporary directory, or `requested`, made empty.

    A non-empty `requested` must hold a state.json whose processes (named in `order`) all are gone: that stale
    state is removed. Anything else is refused.
    """
    if requested is None:
        return Path(tempfile.mkdtemp(prefix="goodmem-devcluster-"))
    if requested.exists() and any(requested.iterdir()):
        if not (requested / STATE_FILE).exists():
            raise ControlPlaneError(f"{requested} exists, is not empty and holds no {STATE_FILE}; refusing to use it")
        other = Supervisor(order)
        other.adopt(read_state(requested)["processes"])
        if other.any_alive():
            raise ControlPlaneError(
                f"a control plane is already running from {requested} (pids {other.pids}); stop it first"
            )
        shutil.rmtree(requested)  # stale state from a control plane that died
    requested.mkdir(parents=True, exist_ok=True, mode=0o700)
    return requested


def remove_state_dir(path: Path | None) -> None:
    if path is not None and path.exists():
        shutil.rmtree(path, ignore_errors=True)


def read_state(state_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except FileNotFoundError:
        raise ControlPlaneError(f"no control plane state at {state_dir / STATE_FILE}") from None
    return state


def write_state(state_dir: Path, state: Mapping[str, Any]) -> None:
    """Write state.json atomically (a reader never sees half of it)."""
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


class ExitHook:
    """Calls `action` at interpreter exit while armed; a failure there is printed to stderr, not raised."""

    def __init__(self, action: Callable[[], None], what: str) -> None:
        self._action = action
        self._what = what
        self.armed = False

    def arm(self) -> None:
        if not self.armed:
            atexit.register(self._run)
            self.armed = True

    def disarm(self) -> None:
        if self.armed:
            atexit.unregister(self._run)
            self.armed = False

    def _run(self) -> None:
        try:
            self._action()
        except Exception as exc:  # pragma: no cover - best effort at exit
            print(f"goodmem-devcluster: {self._what} at exit failed: {exc}", file=sys.stderr)
