"""pytest helpers: skip (or fail, under CI: GOODMEM_REQUIRE_E2E=1 or CI=true) when no control plane can be built
or no container engine runs.

from goodmem_devcluster.testing import require_control_plane, control_plane_session, require_container_engine
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .controlplane import ControlPlane
from .gobuild import GoUnavailable, binaries, build, build_tool, find_go, tool_path
from .image import Engine, EngineUnavailable, find_engine

__all__ = [
    "REQUIRE_ENV",
    "build_visibly",
    "control_plane_session",
    "e2e_required",
    "require_container_engine",
    "require_control_plane",
    "require_tool",
    "unavailable_reason",
]

REQUIRE_ENV = "GOODMEM_REQUIRE_E2E"


def e2e_required() -> bool:
    """Whether a missing prerequisite of the e2e tier fails rather than skips: GOODMEM_REQUIRE_E2E=1 (.ci/run sets
    it) or CI=true (what CI services set)."""
    return os.environ.get(REQUIRE_ENV) == "1" or os.environ.get("CI") == "true"


def unavailable_reason(*, controller_manager: bool = False) -> str | None:
    """None if the binaries (kube-controller-manager too, if asked) are cached or Go can build them; else why not."""
    if binaries().all_present(controller_manager=controller_manager):
        return None
    try:
        find_go()
    except GoUnavailable as exc:
        return str(exc)
    return None


def require_control_plane(*, controller_manager: bool = False) -> None:
    """Skip the calling test/fixture loudly if no control plane can be had; fail instead if GOODMEM_REQUIRE_E2E=1."""
    import pytest

    reason = unavailable_reason(controller_manager=controller_manager)
    if reason is None:
        return
    banner = "!" * 20
    if e2e_required():
        pytest.fail(f"{banner} E2E REQUIRED ({REQUIRE_ENV}=1 or CI=true) BUT NO CONTROL PLANE: {reason}", pytrace=False)
    pytest.skip(f"{banner} E2E SKIPPED, NO CONTROL PLANE (set {REQUIRE_ENV}=1 to make this fail): {reason}")


@contextlib.contextmanager
def _capture_disabled(pytestconfig: Any) -> Iterator[None]:
    capman = pytestconfig.pluginmanager.getplugin("capturemanager") if pytestconfig is not None else None
    if capman is None:
        yield
        return
    with capman.global_and_fixture_disabled():
        yield


def build_visibly(pytestconfig: Any = None, *, controller_manager: bool = False) -> None:
    """build() with pytest's output capture off, so a cold build's progress shows on the terminal."""
    if binaries().all_present(controller_manager=controller_manager):
        return
    with _capture_disabled(pytestconfig):
        build(controller_manager=controller_manager)


@contextlib.contextmanager
def control_plane_session(pytestconfig: Any = None, **kwargs: Any) -> Iterator[ControlPlane]:
    """require_control_plane(), build visibly, start a ControlPlane(**kwargs), stop it afterwards.

    `controller_manager=True` (passed on to ControlPlane) also builds and runs kube-controller-manager.
    """
    controller_manager = bool(kwargs.get("controller_manager", False))
    require_control_plane(controller_manager=controller_manager)
    build_visibly(pytestconfig, controller_manager=controller_manager)
    cp = ControlPlane(**kwargs)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


def require_tool(name: str, pytestconfig: Any = None) -> Path:
    """The cached tool `name` (gobuild.TOOLS: kstatus, helm), built visibly if missing.

    Skips loudly when it must be built and there is no Go; fails instead under GOODMEM_REQUIRE_E2E=1.
    """
    import pytest

    path = tool_path(name)
    if path.is_file() and os.access(path, os.X_OK):
        return path
    try:
        find_go()
    except GoUnavailable as exc:
        banner = "!" * 20
        if e2e_required():
            pytest.fail(
                f"{banner} {name} REQUIRED ({REQUIRE_ENV}=1 or CI=true) BUT IT CANNOT BE BUILT: {exc}", pytrace=False
            )
        pytest.skip(
            f"{banner} {name.upper()} SKIPPED, NO GO TO BUILD IT (set {REQUIRE_ENV}=1 to make this fail): {exc}"
        )
    with _capture_disabled(pytestconfig):
        return build_tool(name)


def require_container_engine() -> Engine:
    """The container engine (podman, else a running Docker); skips loudly without one, fails under CI."""
    import pytest

    try:
        return find_engine()
    except EngineUnavailable as exc:
        banner = "!" * 20
        if e2e_required():
            pytest.fail(f"{banner} A CONTAINER ENGINE IS REQUIRED ({REQUIRE_ENV}=1 or CI=true): {exc}", pytrace=False)
        pytest.skip(f"{banner} IMAGE E2E SKIPPED (set {REQUIRE_ENV}=1 to make this fail): {exc}")
