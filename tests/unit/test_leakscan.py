"""The shared sentinel leak scan (tests/leakscan.py) finds every form a secret can take, and counts honestly."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import SENTINEL
from tests.leakscan import assert_no_leaks, scan, sentinel_forms, without_emulator_redactions

pytestmark = pytest.mark.unit

# Bytes whose base64 has '+' and '/' (so the URL-safe form differs), and a quote and a non-ASCII letter.
AWKWARD = 'k\xfb\xff"é-SECRET>>>???'


def _encodings(secret: str) -> dict[str, str]:
    raw = secret.encode()
    out = {}
    for prefix in (b"", b"x", b"xy"):  # every alignment inside a longer blob
        for name, encode in (("std", base64.b64encode), ("url", base64.urlsafe_b64encode)):
            blob = encode(prefix + raw + b"-v2 and more").decode()
            out[f"{name} after {len(prefix)} bytes"] = blob
            out[f"{name} alone, unpadded, after {len(prefix)}"] = encode(prefix + raw).decode().rstrip("=")
    return out


@pytest.mark.parametrize("secret", [SENTINEL, AWKWARD])
def test_every_form_is_found(secret: str) -> None:
    places = {
        "plain": f"x {secret}-v2 y",
        "json": json.dumps({"k": secret + "-v2"}),
        "json-utf8": json.dumps({"k": secret}, ensure_ascii=False),
        "json twice": json.dumps({"message": json.dumps({"k": secret})}),
        "json three times": json.dumps({"log": json.dumps({"message": json.dumps({"k": secret})})}),
        "secret data": json.dumps({"data": {"api-key": base64.b64encode((secret + "-v2").encode()).decode()}}),
        **_encodings(secret),
    }
    result = scan(places, secret)
    assert set(result.leaks) == set(places), set(places) - set(result.leaks)


def test_the_sentinel_has_distinct_escaped_forms() -> None:
    forms = sentinel_forms(SENTINEL)
    assert forms["json"] != forms["plain"], "the sentinel needs a character JSON escapes"
    assert forms["plain"] not in json.dumps(SENTINEL)[1:-1] and forms["json"] not in json.dumps(json.dumps(SENTINEL))


def test_nothing_is_found_where_the_secret_is_not() -> None:
    places = {
        "redacted": json.dumps({"k": "<redacted>", "message": "request body as received: <redacted>"}),
        "a neighbour": "SENTINEL-e2e-7c1d",  # a prefix is not the secret
        "another key": base64.b64encode(b"another key entirely").decode(),
    }
    assert scan(places, SENTINEL).leaks == {}
    assert_no_leaks(places, SENTINEL)


def test_assert_no_leaks_names_place_and_form() -> None:
    with pytest.raises(AssertionError, match=r"'events': \['json'\]"):
        assert_no_leaks({"log": "fine", "events": json.dumps(SENTINEL)}, SENTINEL)


def test_bytes_scanned_counts_what_was_scanned_only() -> None:
    places = {"a": "é" * 10, "b": b"\xff" * 7}
    assert scan(places, SENTINEL).bytes_scanned == 20 + 7
    record = {"llmId": "x", "labels": {"a": "b"}, "credentials": {"apiKey": {"inlineSecret": "<redacted>"}}}
    assert without_emulator_redactions(record) == {"llmId": "x", "labels": {"a": "b"}}
