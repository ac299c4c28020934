"""Which watch streams the operator opens: one per namespace (the default), or one for the whole cluster.

kopf reads a watch stream in order, one event after another. With one cluster-wide stream per kind, a namespace
that applies 2,000 LLMs puts 8,000 events (creations, finalizers, status) ahead of another namespace's lone create,
and that create waited for all of them: 15.8 s end to end on two cores (BENCHMARKS.md, fair share). With one stream
per namespace, each namespace's events arrive on a connection of their own and kopf serves them as they come.

Opening a stream per namespace means following namespaces as they come and go (kopf's namespace observation), which
needs `list` and `watch` on namespaces. Without those rights kopf would fall back to the namespaces named exactly,
which for "every namespace" is none: a silent outage. So the operator asks the API server first (a
SelfSubjectAccessReview, which every authenticated identity may make and which leaves no 403 behind) and, without
the rights, falls back to one cluster-wide stream and says so in its log.

A namespace being deleted keeps its streams until nothing is left in it (`namespace_gone`): its LLMs hold it
until the operator has released them, and only the namespace's own stream brings their deletion to the operator.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from goodmem_operator._kopf import Insights, NamespaceName, NamespacePattern, match_namespace

log = logging.getLogger("goodmem_operator.watching")

ALL_NAMESPACES = "*"  # kopf's namespace glob for every namespace


class Streams(enum.StrEnum):
    PER_NAMESPACE = "per-namespace"
    CLUSTER = "cluster"


#: The rights a stream per namespace needs beyond the cluster-wide install: (verb, group, resource).
NAMESPACE_RIGHTS = (("list", "", "namespaces"), ("watch", "", "namespaces"))

#: Asks the API server whether the operator's identity may do `verb` on the cluster-scoped `group/resource`:
#: True or False, or None when it could not be asked (the API server unreachable, say).
CanI = Callable[[str, str, str], bool | None]


@dataclass(frozen=True)
class WatchScope:
    """What `kopf.run` gets: `clusterwide`, `namespaces`, and whether kopf observes namespaces (its scanning)."""

    clusterwide: bool
    namespaces: tuple[str, ...]
    observe_namespaces: bool
    fallback: str | None = None  # why a stream per namespace was asked for but not used

    @property
    def description(self) -> str:
        if self.namespaces and self.namespaces != (ALL_NAMESPACES,):
            return ", ".join(self.namespaces)
        if self.clusterwide:
            return "all namespaces (one cluster-wide stream)"
        return "all namespaces (one stream per namespace)"


def choose(namespaces: tuple[str, ...], streams: Streams, can_i: CanI) -> WatchScope:
    """The scope for the configured namespaces (empty: all) and stream layout.

    Named namespaces: exactly those, each its own stream, nothing else read (as kopf does with `--namespace`).
    All namespaces, per namespace: kopf's `*` glob with namespace observation, if the identity may list and watch
    namespaces; otherwise (an older ClusterRole, say) one cluster-wide stream, with the reason. If the API server
    cannot be asked, the configured layout stands: kopf retries the API server as it does for every stream.
    """
    if namespaces:
        return WatchScope(clusterwide=False, namespaces=namespaces, observe_namespaces=False)
    if streams is Streams.CLUSTER:
        return WatchScope(clusterwide=True, namespaces=(), observe_namespaces=False)
    missing = [
        f"{verb} {resource}" for verb, group, resource in NAMESPACE_RIGHTS if can_i(verb, group, resource) is False
    ]
    if missing:
        reason = (
            f"the operator's identity may not {' or '.join(missing)}, which one watch stream per namespace needs: "
            "watching every namespace through one cluster-wide stream instead, so a namespace with many LLMs "
            "delays the others' (grant the rule in deploy/'s ClusterRole, or set --watch-streams cluster)"
        )
        return WatchScope(clusterwide=True, namespaces=(), observe_namespaces=False, fallback=reason)
    return WatchScope(clusterwide=False, namespaces=(ALL_NAMESPACES,), observe_namespaces=True)


def kube_can_i(verb: str, group: str, resource: str) -> bool | None:
    """A SelfSubjectAccessReview through the `kubernetes` client, with the credentials kopf logs in with
    (in-cluster, else the kubeconfig). None when the question could not be asked."""
    import kubernetes

    try:
        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped client
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]  # untyped client
        with kubernetes.client.ApiClient() as api:
            review = kubernetes.client.V1SelfSubjectAccessReview(
                spec=kubernetes.client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=kubernetes.client.V1ResourceAttributes(
                        verb=verb, group=group, resource=resource
                    )
                )
            )
            answer = kubernetes.client.AuthorizationV1Api(api).create_self_subject_access_review(
                review, _request_timeout=10
            )
            return answer.status is not None and bool(answer.status.allowed)
    except Exception as exc:  # any failure to ask means "unknown", never a crash at startup
        log.warning("could not ask the API server whether the operator may %s %s: %s", verb, resource, type(exc))
        return None


# -- namespaces being deleted ------------------------------------------------------------------------------------


def namespace_gone(event_type: str | None, namespace: Mapping[str, Any]) -> bool:
    """Whether a namespace's watch streams may stop: it was DELETED, or it is marked for deletion and the namespace
    controller's conditions (written on its first pass over the namespace) are all False, which says that nothing is
    left in it. A namespace marked for deletion with no conditions yet, or with one True (content remaining,
    finalizers remaining, a failure), is still served.

    Why not kopf's own rule: kopf 1.45 keeps a Terminating namespace with a True condition only if it already had
    its streams, and never adds one. An operator that starts (or restarts) while a namespace with LLMs is being
    deleted would then never see those LLMs, never release them, and the namespace would stay Terminating for good
    (tests/unit/test_watching.py shows kopf's rule doing that; tests/e2e/test_namespace_deletion.py the outcome).
    """
    if event_type == "DELETED":
        return True
    marked = bool((namespace.get("metadata") or {}).get("deletionTimestamp"))
    conditions = (namespace.get("status") or {}).get("conditions") or []
    return marked and bool(conditions) and not any(c.get("status") == "True" for c in conditions)


class NamespaceWatch:
    """kopf's namespace revision with `namespace_gone` as the rule (main installs `revise` into kopf through
    `_kopf.replace_namespace_revision`), and the namespaces it has seen being deleted (`terminating`)."""

    def __init__(self) -> None:
        self._terminating: set[str] = set()

    def terminating(self, namespace: str) -> bool:
        """Whether `namespace` is being deleted: the API server then refuses new objects in it, Events included."""
        return namespace in self._terminating

    def revise(
        self,
        *,
        insights: Insights,
        namespaces: Collection[NamespacePattern],
        raw_events: Collection[kopf.RawEvent] = (),
        raw_bodies: Collection[kopf.RawBody] = (),
    ) -> None:
        """A listed (`raw_bodies`) or changed (`raw_events`) namespace that matches the watched patterns has streams
        unless it is gone; a gone one loses them."""
        changes: list[tuple[str | None, Mapping[str, Any]]] = [(e["type"], e["object"]) for e in raw_events]
        changes += [(None, body) for body in raw_bodies]
        for event_type, body in changes:
            name = NamespaceName(body["metadata"]["name"])
            gone = namespace_gone(event_type, body)
            if gone or not (body.get("metadata") or {}).get("deletionTimestamp"):
                self._terminating.discard(name)
            else:
                self._terminating.add(name)
            if gone:
                insights.namespaces.discard(name)
            elif any(match_namespace(name, pattern) for pattern in namespaces):
                insights.namespaces.add(name)
