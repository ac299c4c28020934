"""Ports and process helpers (Linux)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

__all__ = ["free_ports", "pid_alive", "port_is_listening", "process_start_time", "terminate_pid"]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports the kernel considers free on `host` right now.

    All sockets are held open until every port is picked, so the ports are
    distinct; another process may still grab one before it is used (retry then).
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_is_listening(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces/parens: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), to detect pid reuse."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """True if `pid` runs and is not a zombie (and, if given, has this start time)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def terminate_pid(pid: int, start_time: int | None = None, *, timeout: float = 15.0, popen=None) -> None:
    """SIGTERM `pid`, wait up to `timeout`, then SIGKILL and wait. Reaps it if it is our child."""
    if not pid_alive(pid, start_time):
        if popen is not None:
            popen.poll()
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_gone(pid, start_time, timeout, popen):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if not _wait_gone(pid, start_time, 10.0, popen):
        raise RuntimeError(f"process {pid} survived SIGKILL")


def _wait_gone(pid: int, start_time: int | None, timeout: float, popen) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if popen is not None:
            if popen.poll() is not None:
                return True
        elif not pid_alive(pid, start_time):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
