"""The `second_emulator` fixture (tests/conftest.py): a second registry process beside `emulator`, for issue #15's
"team-a's registry down while team-b's works". Shown here: the two share nothing (process, port, keys, entries), a
fault on one leaves the other answering, and the fixture hands each test a running registry without faults.

The pairs below run in file order (pytest's default): the second of each pair sees what the first left behind."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from goodmem_devcluster.stack import EmulatorProcess

pytestmark = pytest.mark.e2e

BODY = {
    "displayName": "second registry",
    "providerType": "OPENAI",
    "endpointUrl": "https://second.example.test/v1",
    "modelIdentifier": "m",
}


def call(emu: EmulatorProcess, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    """A /v1 call with `key`: (status, parsed body); no proxy (loopback)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        emu.base_url + path, data=data, method=method, headers={"x-api-key": key, "content-type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_the_second_registry_shares_nothing_with_the_first(
    emulator: EmulatorProcess, second_emulator: EmulatorProcess
) -> None:
    assert second_emulator.pid != emulator.pid and second_emulator.base_url != emulator.base_url
    team_b = "e2e-team-b-key-second-registry"
    owner = second_emulator.add_key(team_b)
    status, made = call(second_emulator, "POST", "/v1/llms", team_b, BODY)
    assert status == 201 and made["llm"]["ownerId"] == owner
    assert call(emulator, "GET", "/v1/llms", team_b)[0] == 401, "a key of one registry means nothing to the other"
    assert emulator.record(made["llm"]["llmId"]) is None
    assert second_emulator.record(made["llm"]["llmId"]) is not None


def test_an_outage_of_the_second_leaves_the_first_answering(
    emulator: EmulatorProcess, second_emulator: EmulatorProcess
) -> None:
    second_emulator.set_faults(outage=True)  # left on: the fixture clears it
    assert call(second_emulator, "GET", "/v1/llms", second_emulator.api_key)[0] == 503
    assert call(emulator, "GET", "/v1/llms", emulator.api_key)[0] == 200


def test_the_next_test_gets_the_second_registry_without_faults(second_emulator: EmulatorProcess) -> None:
    assert second_emulator.get_faults()["outage"] is False
    assert call(second_emulator, "GET", "/v1/llms", second_emulator.api_key)[0] == 200


def test_a_stopped_second_registry_refuses_connections(
    emulator: EmulatorProcess, second_emulator: EmulatorProcess
) -> None:
    url = second_emulator.base_url
    second_emulator.stop()  # a registry that is gone, not one that answers 503
    with pytest.raises(urllib.error.URLError):
        call(second_emulator, "GET", "/v1/llms", second_emulator.api_key)
    assert call(emulator, "GET", "/v1/llms", emulator.api_key)[0] == 200
    assert second_emulator.base_url == url


def test_the_next_test_gets_the_second_registry_running_again(second_emulator: EmulatorProcess) -> None:
    assert second_emulator.proc is not None and second_emulator.proc.poll() is None
    assert call(second_emulator, "GET", "/v1/llms", second_emulator.api_key)[0] == 200
