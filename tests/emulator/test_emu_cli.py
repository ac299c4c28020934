"""``python -m goodmem_emulator`` as a process."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from .helpers import SECRET, api_key_credentials, llm_body

pytestmark = pytest.mark.integration

LINE = re.compile(r"^goodmem-emulator listening on (http://127\.0\.0\.1:(\d+))$")


def _spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "goodmem_emulator", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _read_line(proc: subprocess.Popen[str], timeout: float = 15.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "emulator printed nothing"
    return proc.stdout.readline().rstrip("\n")


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a hung emulator
        proc.kill()
        out, err = proc.communicate()
    return out, err


@pytest.fixture
def cli() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        _stop(proc)


def test_cli_serves_prints_one_line_and_logs_without_bodies(cli: list[subprocess.Popen[str]]) -> None:
    proc = _spawn("--api-key", "u1", "--admin-key", "root")
    cli.append(proc)
    m = LINE.match(_read_line(proc))
    assert m, "unexpected first stdout line"
    base_url = m.group(1)
    body = llm_body(credentials=api_key_credentials())
    with httpx.Client(base_url=base_url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        resp = http.post("/v1/llms", json=body, headers={"x-api-key": "u1"})
        assert resp.status_code == 201
        assert http.post("/v1/llms", json=body, headers={"x-api-key": "u1"}).status_code == 409
        assert http.get("/v1/llms", headers={"x-api-key": "nobody"}).status_code == 401
        assert http.get("/_emulator/stats", headers={"x-api-key": "root"}).json()["requests"]["POST /v1/llms"] == 2
    start = time.monotonic()
    out, err = _stop(proc)
    assert proc.returncode == 0 and time.monotonic() - start < 5
    assert out == ""  # exactly one line was printed, already consumed
    assert '"POST /v1/llms HTTP/1.1" 201' in err and '"POST /v1/llms HTTP/1.1" 409' in err
    assert SECRET not in err and "displayName" not in err


def test_cli_reads_keys_from_the_environment(cli: list[subprocess.Popen[str]]) -> None:
    proc = _spawn(
        "--api-key",
        "flag-key",
        env={"GOODMEM_EMULATOR_API_KEYS": "env-a, env-b", "GOODMEM_EMULATOR_ADMIN_KEYS": "env-root"},
    )
    cli.append(proc)
    m = LINE.match(_read_line(proc))
    assert m
    with httpx.Client(base_url=m.group(1), timeout=10) as http:
        for key in ("flag-key", "env-a", "env-b", "env-root"):
            assert http.get("/v1/llms", headers={"x-api-key": key}).status_code == 200, key
        assert http.get("/_emulator/stats", headers={"x-api-key": "env-a"}).status_code == 403
        assert http.get("/_emulator/stats", headers={"x-api-key": "env-root"}).status_code == 200
        assert http.get("/v1/llms", headers={"x-api-key": "other"}).status_code == 401


@pytest.mark.parametrize(
    ("flag", "named"), [((), True), (("--conflict-body", "named"), True), (("--conflict-body", "opaque"), False)]
)
def test_cli_conflict_body(cli: list[subprocess.Popen[str]], flag: tuple[str, ...], named: bool) -> None:
    proc = _spawn("--api-key", "u1", *flag)
    cli.append(proc)
    m = LINE.match(_read_line(proc))
    assert m
    with httpx.Client(base_url=m.group(1), timeout=10) as http:
        created = http.post("/v1/llms", json=llm_body(), headers={"x-api-key": "u1"})
        conflict = http.post("/v1/llms", json=llm_body(), headers={"x-api-key": "u1"})
    assert conflict.status_code == 409
    assert ("existingLlmId" in conflict.json()) is named
    assert (created.json()["llm"]["llmId"] in conflict.text) is named


def test_cli_refuses_an_unknown_conflict_body() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "goodmem_emulator", "--api-key", "k", "--conflict-body", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2 and "--conflict-body" in proc.stderr


def test_cli_without_any_key_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOODMEM_EMULATOR_")}
    proc = subprocess.run(
        [sys.executable, "-m", "goodmem_emulator", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == "" and "--api-key" in proc.stderr


def test_console_script_entry_point_is_main() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "goodmem-emulator"]
    from goodmem_emulator.__main__ import main

    assert ep.value == "goodmem_emulator.__main__:main" and ep.load() is main
