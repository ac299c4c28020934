"""Plan before apply (issue #17): the difference a reconcile already computed, shown instead of thrown away.

The LLM client's `diff` (api/mapping.py) gives, in every reconcile, the update body that would converge an entry
(`Observation.update`). `pending_changes` renders it, with the entry it was computed against, as
`status.pendingChanges`: one field path per change with the registry's value (`old`) and the spec's (`new`);
labels, capability flags and sampling parameters key by key. `create_plan` renders a whole create request the
same way (a dry run of an entry that does not exist yet). Credentials are never shown: the registry does not
return them and the spec's come from a Secret, so a credentials change is `{"path": "credentials", "hidden": true}`
and nothing else. A long value (a large clientConfig) is shown as its size and a digest, and the list is bounded
(`PENDING_CHANGES_MAX`), so the status stays small.

Also the names of the two annotations that drive plans and requests (read by engine.Resource).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from goodmem_operator.api.mapping import CAPABILITY_FLAGS
from goodmem_operator.api.types import PENDING_CHANGES_MAX

#: `"true"`: plan (create, update of these fields, delete) into status and an Event; never write to the registry.
DRY_RUN_ANNOTATION = "goodmem.ai/dry-run"
#: Any new value: observe and converge now, whatever the drift interval, a pending backoff or the permanent-error
#: gate; status.lastHandledReconcileAt records the last value handled (the convention Crossplane v2.3 adopted).
RECONCILE_REQUESTED_ANNOTATION = "goodmem.ai/reconcile-requested-at"

VALUE_MAX = 256  # characters of JSON: a longer value is shown as its size and digest
HIDDEN = {"path": "credentials", "hidden": True}

PendingChanges = list[dict[str, Any]]


def _shown(value: Any) -> Any:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    if len(text) <= VALUE_MAX:
        return value
    return f"<{len(text)} bytes of JSON, sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}>"


def _change(path: str, old: Any, new: Any) -> dict[str, Any]:
    """One entry; `old`/`new` left out when absent (the status schema has no nulls)."""
    out: dict[str, Any] = {"path": path}
    if old is not None:
        out["old"] = _shown(old)
    if new is not None:
        out["new"] = _shown(new)
    return out


def _by_key(prefix: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> PendingChanges:
    return [
        _change(f"{prefix}.{key}", old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def _present(value: Any) -> dict[str, Any]:
    """A sampling-parameter object without unset members (as mapping.diff compares them)."""
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if v is not None and v != []}


def pending_changes(update: Mapping[str, Any], entry: Mapping[str, Any]) -> PendingChanges:
    """`status.pendingChanges` of an update body (mapping.diff, plus `credentials` when they would be sent)
    against the entry it was computed from; sorted by path, bounded."""
    out: PendingChanges = []
    for key, value in update.items():
        if key == "credentials":
            out.append(dict(HIDDEN))
        elif key in ("replaceLabels", "labels"):
            out += _by_key("labels", dict(entry.get("labels") or {}), dict(value or {}))
        elif key == "capabilities":
            have = entry.get("capabilities") if isinstance(entry.get("capabilities"), Mapping) else None
            for flag in CAPABILITY_FLAGS:
                new = bool((value or {}).get(flag))
                old = None if have is None else bool(have.get(flag))
                if old != new:
                    out.append(_change(f"capabilities.{flag}", old, new))
        elif key == "defaultSamplingParams":
            out += _by_key(key, _present(entry.get(key)), _present(value))
        else:
            out.append(_change(key, entry.get(key), value))
    return _bounded(sorted(out, key=lambda c: str(c["path"])))


def create_plan(request: Mapping[str, Any]) -> PendingChanges:
    """What a create would write: every field of the request as a change from nothing."""
    return pending_changes(request, {})


def _bounded(changes: PendingChanges) -> PendingChanges:
    if len(changes) <= PENDING_CHANGES_MAX:
        return changes
    kept = changes[: PENDING_CHANGES_MAX - 1]
    return [*kept, {"path": f"(and {len(changes) - len(kept)} more fields)"}]


def summary(changes: PendingChanges, limit: int = 12) -> str:
    """The paths, for a condition message or an Event: `description, labels.team`."""
    paths = [str(c["path"]) for c in changes]
    if len(paths) > limit:
        paths = [*paths[:limit], f"and {len(paths) - limit} more"]
    return ", ".join(paths)
