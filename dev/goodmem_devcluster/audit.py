"""Read the API server's audit log (JSON lines, one audit.k8s.io/v1 Event each)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["AUDIT_POLICY", "REVIEWS", "WRITE_VERBS", "count_writes_by_user", "is_write", "read_audit_events"]

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
#: A `create` on these asks a question and stores nothing (the operator asks SelfSubjectAccessReviews at startup).
REVIEWS = frozenset(
    {
        "selfsubjectaccessreviews",
        "selfsubjectrulesreviews",
        "subjectaccessreviews",
        "tokenreviews",
        "localsubjectaccessreviews",
    }
)


def is_write(ev: dict) -> bool:
    """Whether an audit event is a write: a write verb on anything but a review."""
    return ev.get("verb") in WRITE_VERBS and (ev.get("objectRef") or {}).get("resource") not in REVIEWS


#: Writes at Metadata level (who, what, when, response code; no bodies); nothing else.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
omitManagedFields: true
rules:
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
"""


def read_audit_events(path: Path | str) -> Iterator[dict]:
    """Events in the order written; a torn last line (being written) is skipped."""
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115 - opened here to tell a missing file apart; closed by `with`
    except FileNotFoundError:
        return
    with f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def count_writes_by_user(events: Iterable[dict], *, stage: str = "ResponseComplete") -> Counter:
    """Write requests per user name (one event per request at `stage`)."""
    counts: Counter = Counter()
    for ev in events:
        if ev.get("stage") == stage and is_write(ev):
            counts[ev.get("user", {}).get("username", "")] += 1
    return counts
