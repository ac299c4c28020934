"""The registry emulator and the operator as real processes, for the demo, the e2e tests and benchmarks.

Both are started with their console entry points (`python -m goodmem_emulator`,
`python -m goodmem_operator.main`), log to files, and are stopped by process id.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def _stop(proc: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class EmulatorProcess:
    """`python -m goodmem_emulator` on a free loopback port, with an operator key and an admin key (and more
    ordinary keys, each its own principal, when given)."""

    def __init__(
        self,
        log_path: Path,
        *,
        api_key: str = "demo-operator-key",
        admin_key: str = "demo-admin-key",
        more_keys: tuple[str, ...] = (),
    ) -> None:
        self.log_path = Path(log_path)
        self.api_key = api_key
        self.admin_key = admin_key
        self.more_keys = more_keys
        self.base_url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> EmulatorProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # Appended: a restarted emulator (a registry that came back) keeps the earlier process's log for leak scans.
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "goodmem_emulator",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--api-key",
                self.api_key,
                "--admin-key",
                self.admin_key,
                *(arg for key in self.more_keys for arg in ("--api-key", key)),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                self.base_url = match.group(1)
                return self
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"emulator did not start; see {self.log_path}")

    def stop(self) -> None:
        _stop(self.proc)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _admin(self, method: str, path: str, body: Any = None, *, api_key: str | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"x-api-key": api_key or self.admin_key, "content-type": "application/json"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def records(self) -> list[dict[str, Any]]:
        return list(self._admin("GET", "/_emulator/llms")["llms"])

    def record(self, llm_id: str) -> dict[str, Any] | None:
        return next((r for r in self.records() if r.get("llmId") == llm_id), None)

    def stats(self) -> dict[str, Any]:
        return dict(self._admin("GET", "/_emulator/stats"))

    def reset_stats(self) -> None:
        self._admin("POST", "/_emulator/stats/reset")

    def set_faults(self, **faults: Any) -> None:
        self._admin("PUT", "/_emulator/faults", faults)

    def get_faults(self) -> dict[str, Any]:
        return dict(self._admin("GET", "/_emulator/faults"))

    def clear_faults(self) -> None:
        self._admin("DELETE", "/_emulator/faults")

    def add_key(self, api_key: str, *, same_as: str | None = None, admin: bool | None = None) -> str:
        """Let `api_key` act as the principal of the known key `same_as` (a rotation), or as a new principal of
        its own; return its ownerId (POST /_emulator/keys; the key travels in the body, never in a URL)."""
        body: dict[str, Any] = {"key": api_key}
        if same_as is not None:
            body["sameAs"] = same_as
        if admin is not None:
            body["admin"] = admin
        return str(self._admin("POST", "/_emulator/keys", body)["ownerId"])

    def revoke_key(self, api_key: str) -> None:
        """Forget `api_key`: its next request is a 401; its principal and entries stay (DELETE /_emulator/keys)."""
        self._admin("DELETE", "/_emulator/keys", {"key": api_key})

    def principals(self) -> list[dict[str, Any]]:
        """Every principal holding a key: `{"ownerId", "admin", "keys": count}` (GET /_emulator/keys)."""
        return list(self._admin("GET", "/_emulator/keys")["principals"])

    def owner_id(self, api_key: str) -> str:
        """The ownerId of a key that is a principal of its own (given at start or added without `same_as`);
        a key added with `same_as` acts as that key's principal instead (what `add_key` returns)."""
        # The emulator's own rule, not a copy; imported here so that stack users that never ask do not load aiohttp.
        from goodmem_emulator import owner_id_for_key

        return owner_id_for_key(api_key)

    def admin_request(self, method: str, path: str, body: Any = None) -> Any:
        """A /v1 call with the admin key (to change entries behind the operator's back)."""
        return self._admin(method, path, body)

    def owner_request(self, method: str, path: str, body: Any = None) -> Any:
        """A /v1 call with the operator's own key (an entry made by hand by the same registry user)."""
        return self._admin(method, path, body, api_key=self.api_key)


class OperatorProcess:
    """`goodmem-operator` as a real process against a kubeconfig and a registry."""

    def __init__(
        self,
        log_path: Path,
        *,
        kubeconfig: Path,
        base_url: str,
        api_key: str,
        extra_args: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = Path(log_path)
        self.kubeconfig = kubeconfig
        self.base_url = base_url
        self.api_key = api_key
        self.extra_args = list(extra_args or [])
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    #: The log line that says the operator works (kopf has logged in; its watches open next).
    WORKING = b"Initial authentication has finished"
    #: The log line of a replica that stands by (leader election; goodmem_operator.leader).
    STANDING_BY = b"leader election: standing by"

    def start(self, timeout: float = 30.0, *, ready: bytes | None = WORKING) -> OperatorProcess:
        """Start it and wait for `ready` in its log (after this start); None: do not wait."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            KUBECONFIG=str(self.kubeconfig),
            GOODMEM_BASE_URL=self.base_url,
            GOODMEM_API_KEY=self.api_key,
            **self.extra_env,
        )
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        offset = log.tell()  # a restart appends to the same log: look for readiness after this point only
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "goodmem_operator.main", *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        if ready is None:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}; see {self.log_path}")
            if ready in self._log_bytes(offset):
                if ready == self.WORKING:
                    time.sleep(0.5)  # let the watches open
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"operator did not start within {timeout}s; see {self.log_path}")

    def stop(self) -> None:
        _stop(self.proc, timeout=15.0)

    def terminate(self) -> None:
        """SIGTERM, without waiting (a rolling upgrade's stop of the old pod)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _log_bytes(self, offset: int = 0) -> bytes:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
