"""The operator's runner: the event loop it hands to kopf."""

from __future__ import annotations

import sys

import pytest

from goodmem_operator import main

pytestmark = pytest.mark.unit


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not a dependency on Windows")
def test_the_operator_runs_on_uvloop_where_it_is_installed() -> None:
    import uvloop

    loop = main.event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        assert loop is not None
        loop.close()


def test_without_uvloop_kopf_gets_no_loop_and_uses_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now raises ImportError
    assert main.event_loop() is None


@pytest.mark.parametrize(("argv", "replaced"), [([], True), (["--namespace", "team-a"], False)])
def test_kopf_follows_namespaces_with_the_operators_rule_when_it_observes_them(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], replaced: bool
) -> None:
    """Watching every namespace (kopf's namespace observation), a namespace being deleted keeps its streams until its
    LLMs are released (watching.NamespaceWatch); with named namespaces kopf observes none, and nothing changes."""
    import kopf

    from goodmem_operator import _kopf, watching

    observation = _kopf._observation
    monkeypatch.setattr(observation, "revise_namespaces", observation.revise_namespaces)  # restored afterwards
    monkeypatch.setenv("GOODMEM_API_KEY", "k")
    monkeypatch.setattr(main, "kube_can_i", lambda verb, group, resource: True)
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    runs: list[dict[str, object]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: runs.append(kwargs))
    main.main(argv)
    assert len(runs) == 1
    assert isinstance(getattr(observation.revise_namespaces, "__self__", None), watching.NamespaceWatch) is replaced


@pytest.mark.parametrize(("argv", "elected"), [([], False), (["--leader-election"], True)])
def test_leader_election_decides_how_kopf_runs(monkeypatch: pytest.MonkeyPatch, argv: list[str], elected: bool) -> None:
    """Without leader election kopf runs at once (and the replica shows as working); with it, kopf runs only inside
    the election (main.run_elected), with the same options."""
    import kopf

    from goodmem_operator import _kopf

    observation = _kopf._observation
    monkeypatch.setattr(observation, "revise_namespaces", observation.revise_namespaces)  # restored afterwards
    monkeypatch.setenv("GOODMEM_API_KEY", "k")
    monkeypatch.setattr(main, "kube_can_i", lambda verb, group, resource: True)
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    runs: list[dict[str, object]] = []
    elections: list[dict[str, object]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: runs.append(kwargs))
    monkeypatch.setattr(main, "run_elected", lambda cfg, metrics, options: elections.append(options))
    main.main(argv)
    assert (len(runs), len(elections)) == ((0, 1) if elected else (1, 0))
    options = (elections or runs)[0]
    assert options["standalone"] is True, "never kopf's peering"


class _Elected(Exception):
    """Stops main.run where the election would begin."""


@pytest.mark.parametrize("argv", [[], ["--leader-election"]])
def test_kopf_gets_an_identity_without_asking_the_user_database(
    monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """The image runs as uid 65532, which has no /etc/passwd entry under containerd, CRI-O or Docker: kopf's default
    identity (getpass.getuser()) raises KeyError there, and the container exited at once on a real kubelet. The
    operator names its own identity: the pod name plus a suffix, also the Lease's candidate with leader election."""
    import getpass

    import kopf
    from kopf._core.engines import peering

    from goodmem_operator import _kopf

    def no_such_user() -> str:
        raise KeyError("getpwuid(): uid not found: 65532")

    monkeypatch.setattr(getpass, "getuser", no_such_user)
    with pytest.raises(KeyError):  # what kopf does without an identity, where the uid has no passwd entry
        peering.detect_own_id(manual=False)

    observation = _kopf._observation
    monkeypatch.setattr(observation, "revise_namespaces", observation.revise_namespaces)  # restored afterwards
    monkeypatch.setenv("GOODMEM_API_KEY", "k")
    monkeypatch.setenv("GOODMEM_POD_NAME", "goodmem-operator-7d89-swt2t")
    monkeypatch.setattr(main, "kube_can_i", lambda verb, group, resource: True)
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    runs: list[dict[str, object]] = []
    monkeypatch.setattr(kopf, "run", lambda **kwargs: runs.append(kwargs))
    candidates: list[str] = []

    def elector(cfg: object, metrics: object, own_identity: str) -> None:
        candidates.append(own_identity)
        raise _Elected

    monkeypatch.setattr(main, "elector", elector)
    if argv:
        with pytest.raises(_Elected):
            main.main(argv)
        assert not runs
        assert candidates[0].startswith("goodmem-operator-7d89-swt2t_")
    else:
        main.main(argv)
        assert not candidates
        assert str(runs[0]["identity"]).startswith("goodmem-operator-7d89-swt2t_")
