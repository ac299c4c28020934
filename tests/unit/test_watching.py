"""Which watch streams the operator opens (goodmem_operator.watching.choose): the decision table."""

from __future__ import annotations

import pytest

from goodmem_operator import config
from goodmem_operator.watching import ALL_NAMESPACES, CanI, Streams, choose

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
