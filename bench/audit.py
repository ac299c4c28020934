"""Counting the operator's API-server requests from the audit log (our own policy: Metadata level, no bodies)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from goodmem_devcluster.audit import WRITE_VERBS, is_write

OPERATOR_USER = "goodmem-bench-operator"
READ_VERBS = ("get", "list", "watch")

#: Writes by everyone, reads by the operator's user; Metadata level (no bodies).
AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
omitManagedFields: true
rules:
  - level: Metadata
    users: ["{OPERATOR_USER}"]
    verbs: ["get", "list", "watch"]
  - level: Metadata
    verbs: [{", ".join(f'"{v}"' for v in WRITE_VERBS)}]
  - level: None
"""


def events(path: Path, offset: int) -> Iterator[dict[str, Any]]:
    """The audit events written at or after byte `offset` of the log (lines that do not parse are skipped)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    for line in data.splitlines():
        try:
            yield json.loads(line)
        except ValueError:
            continue


def what(ev: dict[str, Any]) -> str:
    """'verb resource[/subresource]' of one event."""
    ref = ev.get("objectRef") or {}
    return f"{ev.get('verb')} {ref.get('resource', '?')}" + (f"/{ref['subresource']}" if ref.get("subresource") else "")


def count_operator_requests(path: Path, offset: int) -> dict[str, Counter[str]]:
    """Requests by the operator's user since `offset`: writes and reads per 'verb resource[/sub]', and errors."""
    writes: Counter[str] = Counter()
    reads: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for ev in events(path, offset):
        if ev.get("user", {}).get("username") != OPERATOR_USER:
            continue
        verb, stage = ev.get("verb"), ev.get("stage")
        key = what(ev)
        if is_write(ev) and stage == "ResponseComplete":
            writes[key] += 1
            if (ev.get("responseStatus") or {}).get("code", 200) >= 400:
                failed[f"{key} {ev['responseStatus']['code']}"] += 1
        elif (verb == "watch" and stage == "ResponseStarted") or (
            verb in ("get", "list") and stage == "ResponseComplete"
        ):
            reads[key] += 1
    return {"writes": writes, "reads": reads, "failed": failed}


def operator_writes_in(path: Path, offset: int, namespace: str) -> Iterator[dict[str, Any]]:
    """The operator's completed writes on objects of `namespace` since `offset`."""
    for ev in events(path, offset):
        ref = ev.get("objectRef") or {}
        if (
            ev.get("stage") == "ResponseComplete"
            and ref.get("namespace") == namespace
            and ev.get("user", {}).get("username") == OPERATOR_USER
            and ev.get("verb") in WRITE_VERBS
        ):
            yield ev
