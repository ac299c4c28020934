"""Kubernetes-style conditions (type, status, reason, message, lastTransitionTime, observedGeneration)."""

from __future__ import annotations

import datetime as dt
from typing import Any

READY = "Ready"
SYNCED = "Synced"
STALLED = "Stalled"  # only while a permanent error waits for a spec or Secret change


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def condition(
    ctype: str, status: bool | str, reason: str, message: str, generation: int | None, previous: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """A condition; lastTransitionTime is kept from `previous` unless the status flips."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    before = next((c for c in previous or [] if c.get("type") == ctype), None)
    stamp = before.get("lastTransitionTime") if before and before.get("status") == status_text else None
    return {
        "type": ctype,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": stamp or now(),
        "observedGeneration": generation,
    }


def get(conditions: list[dict[str, Any]] | None, ctype: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == ctype), None)


def same(a: list[dict[str, Any]] | None, b: list[dict[str, Any]] | None) -> bool:
    """Equal but for lastTransitionTime (which `condition` keeps stable anyway)."""

    def strip(cs: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return sorted(({k: v for k, v in c.items() if k != "lastTransitionTime"} for c in cs or []), key=lambda c: c["type"])

    return strip(a) == strip(b)
