"""Request counters and a bounded request log (pure, thread-safe)."""

from __future__ import annotations

import collections
import copy
import threading
from typing import Any

ROUTES: tuple[str, ...] = (
    "POST /v1/llms",
    "GET /v1/llms",
    "GET /v1/llms/{id}",
    "PUT /v1/llms/{id}",
    "DELETE /v1/llms/{id}",
)
LOG_LIMIT = 10_000


class Stats:
    def __init__(self, log_limit: int = LOG_LIMIT) -> None:
        self._lock = threading.Lock()
        self._log_limit = log_limit
        # A gauge, not a counter: reset() leaves it alone (a request in flight is still in flight).
        self._in_flight: collections.Counter[str] = collections.Counter()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._requests: collections.Counter[str] = collections.Counter({r: 0 for r in ROUTES})
            self._by_status: collections.Counter[str] = collections.Counter()
            self._log: collections.deque[dict[str, Any]] = collections.deque(maxlen=self._log_limit)

    def started(self, method: str, route: str) -> None:
        """A request was received (before any fault or handler): in flight until `finished`."""
        with self._lock:
            self._in_flight[f"{method} {route}"] += 1

    def finished(self, method: str, route: str) -> None:
        """Its answer is ready (or it failed, or was dropped): no longer in flight."""
        key = f"{method} {route}"
        with self._lock:
            self._in_flight[key] -= 1
            if self._in_flight[key] <= 0:
                del self._in_flight[key]

    def record(
        self,
        *,
        method: str,
        route: str,
        path: str,
        status: int | str,
        body: Any,
        ts: int,
    ) -> None:
        """Count one request.  ``status`` is the HTTP status, or ``"dropped"``."""
        key = f"{method} {route}"
        with self._lock:
            self._requests[key] += 1
            self._by_status[f"{key} {status}"] += 1
            self._log.append({"method": method, "route": route, "path": path, "status": status, "body": body, "ts": ts})

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self._requests),
                "byStatus": dict(self._by_status),
                "inFlight": {**{r: 0 for r in ROUTES}, **self._in_flight},
                "log": copy.deepcopy(list(self._log)),
            }
