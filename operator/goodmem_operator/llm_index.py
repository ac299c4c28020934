"""Which LLMs use which Secret, and the latest body of each LLM: our own maps, fed by LLM watch events.

A Secret event must find the LLMs that use the Secret (and only those) and reconcile them from their
latest bodies. kopf's `@kopf.index` could keep both maps, but an operator with any index waits, at
startup, until every indexed object of the initial listing is indexed, and kopf evaluates that
readiness gate once per object over all objects: quadratic in the number of LLMs (237 s at 100 % CPU
before the first registry request with 5,000 LLMs), and every per-object worker of every resource
(each unrelated Secret's too) waits in it, which is where memory grew with unrelated Secrets
(bench/ANALYSIS.md findings 1 and 2). These maps are updated by an `@kopf.on.event` handler on LLMs,
which kopf does not gate. No gate is needed: an LLM's own reconciles run in the same per-object
worker after its event is indexed, and they read the Secret themselves, so a Secret event that comes
before its users are indexed has nothing to tell them.

Only Secrets of the LLM's own namespace are indexed: a cross-namespace reference is refused by the
reconcile, so no event of another namespace's Secret may ever reach that LLM.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

SecretKey = tuple[str, str]  # (namespace, name)


def secret_of(spec: Any, namespace: str) -> SecretKey | None:
    """The Secret an LLM spec reads through `credentials.apiKey.secretKeyRef`, if in its own namespace."""
    ref = (((spec or {}).get("credentials") or {}).get("apiKey") or {}).get("secretKeyRef") or {}
    if not ref.get("name"):
        return None
    key = (ref.get("namespace") or namespace, ref["name"])
    return key if key[0] == namespace else None


def snapshot(body: Any) -> dict[str, Any]:
    """A plain copy of what a reconcile needs of an LLM body (no managedFields, no kopf views)."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {
            k: meta.get(k)
            for k in ("name", "namespace", "uid", "generation", "annotations", "resourceVersion", "deletionTimestamp")
        },
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


class LLMIndex:
    """LLM bodies by (namespace, name) and LLM names by the Secret they use."""

    def __init__(self) -> None:
        self._bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self._secret: dict[tuple[str, str], SecretKey] = {}  # LLM -> its Secret
        self._users: dict[SecretKey, set[str]] = {}  # Secret -> LLM names (same namespace)

    def __len__(self) -> int:
        return len(self._bodies)

    def observe(self, body: Any, *, deleted: bool) -> SecretKey | None:
        """Record an LLM's latest body (or its deletion).  Returns the Secret it no longer uses when no
        other LLM uses that Secret either (the caller drops it from its cache), else None."""
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        llm = (namespace, name)
        new = None if deleted else secret_of(body.get("spec"), namespace)
        old = self._secret.get(llm)
        if deleted:
            self._bodies.pop(llm, None)
        else:
            self._bodies[llm] = snapshot(body)
        if old == new:
            return None
        if new is None:
            self._secret.pop(llm, None)
        else:
            self._secret[llm] = new
            self._users.setdefault(new, set()).add(name)
        if old is not None:
            users = self._users.get(old)
            if users is not None:
                users.discard(name)
                if not users:
                    del self._users[old]
                    return old
        return None

    def users(self, namespace: str, secret: str) -> list[str]:
        """Names of the LLMs in `namespace` that use Secret `secret`, sorted."""
        return sorted(self._users.get((namespace, secret), ()))

    def referenced(self, namespace: str, secret: str) -> bool:
        return (namespace, secret) in self._users

    def body(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The latest body seen of an LLM (a plain dict), or None when it is unknown or gone."""
        return self._bodies.get((namespace, name))

    def items(self) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
        """Every LLM's (namespace, name) and latest body."""
        return iter(list(self._bodies.items()))
