"""Which watch streams the operator opens (goodmem_operator.watching.choose): the decision table; and which
namespaces keep theirs while they are being deleted (watching.NamespaceWatch, namespace_gone)."""

from __future__ import annotations

from typing import Any

import pytest

from goodmem_operator import _kopf, config
from goodmem_operator.watching import ALL_NAMESPACES, CanI, NamespaceWatch, Streams, choose, namespace_gone

pytestmark = pytest.mark.unit


def answers(**allowed: bool | None) -> tuple[list[tuple[str, str, str]], CanI]:
    """A can_i that answers from `allowed` (key: verb) and records every question."""
    asked: list[tuple[str, str, str]] = []

    def can_i(verb: str, group: str, resource: str) -> bool | None:
        asked.append((verb, group, resource))
        return allowed.get(verb, True)

    return asked, can_i


def test_every_namespace_gets_its_own_stream_when_namespaces_may_be_followed() -> None:
    asked, can_i = answers()
    scope = choose((), Streams.PER_NAMESPACE, can_i)
    assert (scope.clusterwide, scope.namespaces, scope.observe_namespaces) == (False, (ALL_NAMESPACES,), True)
    assert scope.fallback is None
    assert sorted(asked) == [("list", "", "namespaces"), ("watch", "", "namespaces")]
    assert "one stream per namespace" in scope.description


@pytest.mark.parametrize(
    ("allowed", "missing"),
    [
        ({"list": False}, "list namespaces"),
        ({"watch": False}, "watch namespaces"),
        ({"list": False, "watch": False}, "list namespaces or watch namespaces"),
    ],
)
def test_without_the_rights_one_cluster_wide_stream_and_the_reason(allowed: dict[str, bool], missing: str) -> None:
    _, can_i = answers(**allowed)
    scope = choose((), Streams.PER_NAMESPACE, can_i)
    assert (scope.clusterwide, scope.namespaces, scope.observe_namespaces) == (True, (), False)
    assert scope.fallback is not None and f"may not {missing}," in scope.fallback
    assert "--watch-streams cluster" in scope.fallback
    assert "one cluster-wide stream" in scope.description


def test_an_unanswered_question_keeps_the_configured_layout() -> None:
    _, can_i = answers(list=None, watch=None)
    scope = choose((), Streams.PER_NAMESPACE, can_i)
    assert (scope.clusterwide, scope.observe_namespaces, scope.fallback) == (False, True, None)


def test_cluster_streams_on_request_asks_nothing() -> None:
    asked, can_i = answers()
    scope = choose((), Streams.CLUSTER, can_i)
    assert (scope.clusterwide, scope.namespaces, scope.observe_namespaces, scope.fallback) == (True, (), False, None)
    assert asked == []


@pytest.mark.parametrize("streams", list(Streams))
def test_named_namespaces_are_watched_exactly_and_nothing_cluster_scoped_is_read(streams: Streams) -> None:
    asked, can_i = answers()
    scope = choose(("team-a", "team-b"), streams, can_i)
    assert (scope.clusterwide, scope.namespaces, scope.observe_namespaces) == (False, ("team-a", "team-b"), False)
    assert asked == []
    assert scope.description == "team-a, team-b"


def test_the_flag_and_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOODMEM_API_KEY", "k")
    monkeypatch.delenv("GOODMEM_WATCH_STREAMS", raising=False)
    assert config.parse([]).watch_streams is Streams.PER_NAMESPACE
    monkeypatch.setenv("GOODMEM_WATCH_STREAMS", "cluster")
    assert config.parse([]).watch_streams is Streams.CLUSTER
    assert config.parse(["--watch-streams", "per-namespace"]).watch_streams is Streams.PER_NAMESPACE
    with pytest.raises(SystemExit):
        config.parse(["--watch-streams", "sometimes"])


# -- namespaces being deleted: which ones keep their streams ------------------------------------------------------

#: kopf's own revision, kept before anything can replace it (main installs ours in kopf's module).
KOPF_REVISE = _kopf._observation.revise_namespaces

#: The namespace controller's conditions (kube-controller-manager 1.34, pkg/controller/namespace/deletion) while
#: LLMs with the operator's finalizer remain, and once the namespace is empty.
CONTENT_REMAINING = [
    ("NamespaceDeletionDiscoveryFailure", "False"),
    ("NamespaceDeletionGroupVersionParsingFailure", "False"),
    ("NamespaceDeletionContentFailure", "False"),
    ("NamespaceContentRemaining", "True"),
    ("NamespaceFinalizersRemaining", "True"),
]
EMPTIED = [(ctype, "False") for ctype, _ in CONTENT_REMAINING]


def namespace(name: str, *, deleting: bool = False, conditions: list[tuple[str, str]] | None = None) -> Any:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if deleting:
        body["metadata"]["deletionTimestamp"] = "2026-12-04T16:00:00Z"
        body["status"] = {"phase": "Terminating"}
    if conditions is not None:
        body["status"]["conditions"] = [
            {"type": ctype, "status": status, "reason": "r", "message": "m"} for ctype, status in conditions
        ]
    return body


def event(kind: str, body: Any) -> Any:
    return {"type": kind, "object": body}


def test_kopf_alone_never_serves_a_namespace_already_being_deleted_when_the_operator_starts() -> None:
    """Why the operator replaces kopf's rule: with kopf's, an operator that starts while a namespace with LLMs is
    being deleted opens no stream for it, so nothing ever releases those LLMs. If this starts failing, kopf has
    changed its rule: check whether `watching.NamespaceWatch` is still needed."""
    insights = _kopf.Insights()
    dying = namespace("dying", deleting=True, conditions=CONTENT_REMAINING)
    KOPF_REVISE(insights=insights, namespaces=[ALL_NAMESPACES], raw_bodies=[namespace("live"), dying])
    assert insights.namespaces == {"live"}
    KOPF_REVISE(insights=insights, namespaces=[ALL_NAMESPACES], raw_events=[event("MODIFIED", dying)])
    assert insights.namespaces == {"live"}, "nor when the namespace changes later"


def test_a_namespace_being_deleted_is_served_from_the_startup_listing_until_it_is_empty() -> None:
    insights, watch = _kopf.Insights(), NamespaceWatch()
    dying = namespace("dying", deleting=True, conditions=CONTENT_REMAINING)
    watch.revise(insights=insights, namespaces=[ALL_NAMESPACES], raw_bodies=[namespace("live"), dying])
    assert insights.namespaces == {"live", "dying"}
    assert watch.terminating("dying") and not watch.terminating("live")
    watch.revise(insights=insights, namespaces=[ALL_NAMESPACES], raw_events=[event("MODIFIED", dying)])
    assert insights.namespaces == {"live", "dying"}
    emptied = namespace("dying", deleting=True, conditions=EMPTIED)
    watch.revise(insights=insights, namespaces=[ALL_NAMESPACES], raw_events=[event("MODIFIED", emptied)])
    assert insights.namespaces == {"live"}, "nothing left in it: its streams stop"
    assert not watch.terminating("dying")


def test_a_namespace_keeps_its_streams_through_deletion_until_deleted() -> None:
    insights, watch = _kopf.Insights(), NamespaceWatch()
    watch.revise(insights=insights, namespaces=[ALL_NAMESPACES], raw_events=[event("ADDED", namespace("a"))])
    assert insights.namespaces == {"a"}
    for step in (
        namespace("a", deleting=True),  # marked, before the namespace controller's first pass
        namespace("a", deleting=True, conditions=CONTENT_REMAINING),
    ):
        watch.revise(insights=insights, namespaces=[ALL_NAMESPACES], raw_events=[event("MODIFIED", step)])
        assert insights.namespaces == {"a"} and watch.terminating("a")
    # DELETED ends it even if its last state still had a True condition (a finalizer removed by hand, say).
    gone = namespace("a", deleting=True, conditions=CONTENT_REMAINING)
    watch.revise(insights=insights, namespaces=[ALL_NAMESPACES], raw_events=[event("DELETED", gone)])
    assert insights.namespaces == set() and not watch.terminating("a")


def test_only_namespaces_matching_the_patterns_get_streams() -> None:
    insights, watch = _kopf.Insights(), NamespaceWatch()
    dying = namespace("team-b", deleting=True, conditions=CONTENT_REMAINING)
    watch.revise(insights=insights, namespaces=["team-*"], raw_bodies=[namespace("team-a"), namespace("x"), dying])
    assert insights.namespaces == {"team-a", "team-b"}


@pytest.mark.parametrize(
    ("event_type", "body", "gone"),
    [
        (None, namespace("n"), False),
        ("MODIFIED", namespace("n", deleting=True), False),
        ("MODIFIED", namespace("n", deleting=True, conditions=CONTENT_REMAINING), False),
        (
            "MODIFIED",
            namespace("n", deleting=True, conditions=[*EMPTIED[:-1], ("NamespaceDeletionContentFailure", "True")]),
            False,
        ),
        ("MODIFIED", namespace("n", deleting=True, conditions=EMPTIED), True),
        (None, namespace("n", deleting=True, conditions=EMPTIED), True),
        ("DELETED", namespace("n"), True),
    ],
)
def test_namespace_gone(event_type: str | None, body: Any, gone: bool) -> None:
    assert namespace_gone(event_type, body) is gone
