"""Fault injection settings (pure, thread-safe)."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ._validation import ValidationError

# camelCase wire name -> attribute name; snake_case attribute names are accepted too.
_FIELDS = {
    "latencyMs": "latency_ms",
    "errorRate": "error_rate",
    "errorStatus": "error_status",
    "errorMethods": "error_methods",
    "rateLimit": "rate_limit",
    "outage": "outage",
    "echoRequest": "echo_request",
    "dropResponseAfterCommit": "drop_response_after_commit",
    "seed": "seed",
}
_ATTR_TO_WIRE = {v: k for k, v in _FIELDS.items()}
_METHODS = ("GET", "POST", "PUT", "DELETE")


@dataclass
class FaultConfig:
    latency_ms: int = 0
    error_rate: float = 0.0
    error_status: int = 503
    error_methods: list[str] | None = None  # errorRate applies to these methods only; None: to all
    rate_limit: dict[str, Any] | None = None  # {"retryAfter": seconds}
    outage: bool = False
    echo_request: bool = False
    drop_response_after_commit: int = 0
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {_ATTR_TO_WIRE[k]: v for k, v in asdict(self).items()}

    @property
    def retry_after_header(self) -> str | None:
        if self.rate_limit is None:
            return None
        return str(math.ceil(self.rate_limit["retryAfter"]))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# C901/PLW2901 excepted: one branch per fault of the wire format, each normalising `value` in place; a table of
# validators would hide the format this function documents.
def parse_fault_config(body: Any) -> FaultConfig:  # noqa: C901
    """Validate a fault document (camelCase or snake_case keys); omitted keys take defaults."""
    if not isinstance(body, Mapping):
        raise ValidationError("body", "must be a JSON object")
    cfg = FaultConfig()
    for key, value in body.items():
        attr = _FIELDS.get(key) or (key if key in _ATTR_TO_WIRE else None)
        if attr is None:
            raise ValidationError(key, "unknown fault")
        if value is None and attr in ("rate_limit", "seed", "error_methods"):
            setattr(cfg, attr, None)
            continue
        if attr in ("latency_ms", "drop_response_after_commit"):
            if not _is_int(value) or value < 0:
                raise ValidationError(_ATTR_TO_WIRE[attr], "must be a non-negative integer")
        elif attr == "error_rate":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValidationError("errorRate", "must be a number between 0 and 1")
            value = float(value)  # noqa: PLW2901
        elif attr == "error_status":
            if not _is_int(value) or not 300 <= value <= 599:
                raise ValidationError("errorStatus", "must be an HTTP redirect or error status (300..599)")
        elif attr == "error_methods":
            if (
                not isinstance(value, list)
                or not value
                or any(not isinstance(m, str) or m.upper() not in _METHODS for m in value)
            ):
                raise ValidationError("errorMethods", f"must be a non-empty list of {', '.join(_METHODS)} or null")
            value = sorted({m.upper() for m in value})  # noqa: PLW2901
        elif attr == "rate_limit":
            if not isinstance(value, Mapping) or set(value) - {"retryAfter", "retry_after"}:
                raise ValidationError("rateLimit", 'must be {"retryAfter": seconds} or null')
            ra = value.get("retryAfter", value.get("retry_after", 1))
            if isinstance(ra, bool) or not isinstance(ra, (int, float)) or not math.isfinite(ra) or ra < 0:
                raise ValidationError("rateLimit.retryAfter", "must be a non-negative number")
            value = {"retryAfter": ra}  # noqa: PLW2901
        elif attr in ("outage", "echo_request"):
            if not isinstance(value, bool):
                raise ValidationError(_ATTR_TO_WIRE[attr], "must be a boolean")
        elif attr == "seed" and not _is_int(value):
            raise ValidationError("seed", "must be an integer")
        setattr(cfg, attr, value)
    return cfg


class Faults:
    """The current fault configuration plus its mutable counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cfg = FaultConfig()
        self._rng = random.Random()

    def set(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the whole configuration (omitted keys reset to their defaults)."""
        cfg = parse_fault_config(body)
        with self._lock:
            self._cfg = cfg
            self._rng = random.Random(cfg.seed)
            return cfg.to_json()

    def clear(self) -> None:
        with self._lock:
            self._cfg = FaultConfig()
            self._rng = random.Random()

    def get(self) -> dict[str, Any]:
        with self._lock:
            return self._cfg.to_json()

    def snapshot(self) -> FaultConfig:
        with self._lock:
            return FaultConfig(**asdict(self._cfg))

    def roll_error(self, method: str = "GET") -> bool:
        """Whether this request gets the injected error (requests of other methods than `errorMethods`
        never do, and draw nothing from the seeded generator)."""
        with self._lock:
            rate = self._cfg.error_rate
            methods = self._cfg.error_methods
            if methods is not None and method.upper() not in methods:
                return False
            return rate > 0 and self._rng.random() < rate

    def take_drop(self) -> bool:
        """Consume one pending dropped response; True if this response must be dropped."""
        with self._lock:
            if self._cfg.drop_response_after_commit > 0:
                self._cfg.drop_response_after_commit -= 1
                return True
            return False
