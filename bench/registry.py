"""Counting registry requests: the emulator's access log, read incrementally, and its per-route summary."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

_ACCESS = re.compile(
    r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) aiohttp\.access \S+ "(\w+) (/v1\S*) HTTP/[\d.]+" (\d{3}) '
)


class RegistryAccessLog:
    """Counts the emulator's /v1 requests from its access log (cheap to poll; `/_emulator/stats` copies its whole
    request log on every call).  Keys match the emulator's counters: 'POST /v1/llms', 'status GET /v1/llms/{id} 404'."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._counts: Counter[str] = Counter()
        self.entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def counts(self) -> Counter[str]:
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self._offset)
                    data = f.read()
            except FileNotFoundError:
                return Counter(self._counts)
            end = data.rfind(b"\n") + 1
            self._offset += end
            for line in data[:end].decode(errors="replace").splitlines():
                m = _ACCESS.match(line)
                if not m:
                    continue
                stamp, ms, method, path, status = m.groups()
                bare = path.split("?", 1)[0]
                route = "/v1/llms" if bare == "/v1/llms" else "/v1/llms/{id}" if bare.startswith("/v1/llms/") else bare
                key = f"{method} {route}"
                self._counts[key] += 1
                self._counts[f"status {key} {status}"] += 1
                ts = int(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) * 1000) + int(ms)
                self.entries.append({"method": method, "route": route, "path": bare, "status": int(status), "ts": ts})
            return Counter(self._counts)


def delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def registry_summary(d: dict[str, int]) -> dict[str, int]:
    return {
        "POST": d.get("POST /v1/llms", 0),
        "GET": d.get("GET /v1/llms/{id}", 0),
        "LIST": d.get("GET /v1/llms", 0),
        "PUT": d.get("PUT /v1/llms/{id}", 0),
        "DELETE": d.get("DELETE /v1/llms/{id}", 0),
        "GET 404": d.get("status GET /v1/llms/{id} 404", 0),  # the observe before a create: expected
        "errors": sum(
            n
            for k, n in d.items()
            if k.startswith("status ")
            and not k.rsplit(" ", 1)[1].startswith("2")
            and k != "status GET /v1/llms/{id} 404"
        ),
    }
