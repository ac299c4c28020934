"""The sentinel leak scan, shared by every tier that plants a secret and looks for it afterwards.

A secret can stand in a text in more forms than its own: JSON-escaped (an echoed request body, a log of a
JSON document), base64 (a Kubernetes Secret's `data`, a Basic auth header, anything encoded on the way).
`sentinel_forms` lists them all, independently of the operator's own `redact` (a scan built on the code it
checks could not catch that code's bug); `scan` looks for each form in each place and counts only the bytes
it really looked at: the caller passes what the operator could have leaked into, never a view the emulator
has redacted itself (its record view's `credentials`, its request log bodies), which could not contain the
sentinel whatever the operator does.

The scan's own proof is tests/integration/test_leak_scan.py: with the operator's redaction switched off it
finds the sentinel in a condition, an Event and the log; with it on, nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def _base64_cores(raw: bytes, encode: Callable[[bytes], bytes]) -> list[str]:
    """The characters of `raw`'s base64 that depend on `raw` alone, at each of the three byte alignments it
    can have inside a longer encoded blob (so the sentinel is found wherever it stands in it, padded or not,
    followed by anything)."""
    cores = []
    for offset in range(3):
        encoded = encode(b"\0" * offset + raw).decode("ascii")
        start = -(-8 * offset // 6)  # the first character with no bit of the filler
        end = 8 * (offset + len(raw)) // 6  # the last character made only of `raw`'s bits
        if end > start:
            cores.append(encoded[start:end])
    return cores


def sentinel_forms(sentinel: str) -> dict[str, str]:
    """Form name -> text to look for: plain, JSON-escaped once, twice or three times (ASCII and UTF-8; an
    escaped form is not a substring of the twice-escaped one), base64 standard and URL-safe
    (with or without padding, at any alignment). A prefix of a secret's form is found in every longer secret
    that starts with it (`SENTINEL + "-v2"`)."""
    forms: dict[str, str] = {"plain": sentinel}
    for name, ascii_only in (("json", True), ("json-utf8", False)):
        escaped = sentinel
        for depth in (1, 2, 3):  # a message holding an echoed body, inside a JSON document, inside a log line
            escaped = json.dumps(escaped, ensure_ascii=ascii_only)[1:-1]
            if escaped not in forms.values():
                forms[name if depth == 1 else f"{name}x{depth}"] = escaped
    raw = sentinel.encode("utf-8")
    for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        for offset, core in enumerate(_base64_cores(raw, encode)):
            if core not in forms.values():
                forms[f"{name}@{offset}"] = core
    return forms


@dataclass
class LeakScan:
    """What a scan looked at and found: place -> names of the forms found there."""

    places: list[str]
    bytes_scanned: int
    leaks: dict[str, list[str]] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        return {
            "places": self.places,
            "bytes_scanned": self.bytes_scanned,
            "leaks_found": sum(len(forms) for forms in self.leaks.values()),
        }


def scan(places: Mapping[str, str | bytes], sentinel: str) -> LeakScan:
    """Look for every form of `sentinel` in every place (text or bytes, decoded leniently)."""
    forms = sentinel_forms(sentinel)
    leaks: dict[str, list[str]] = {}
    scanned = 0
    for place, content in places.items():
        raw = content if isinstance(content, bytes) else content.encode("utf-8", errors="surrogateescape")
        scanned += len(raw)
        text = raw.decode("utf-8", errors="replace")
        found = [name for name, form in forms.items() if form in text]
        if found:
            leaks[place] = found
    return LeakScan(places=list(places), bytes_scanned=scanned, leaks=leaks)


def assert_no_leaks(places: Mapping[str, str | bytes], sentinel: str) -> LeakScan:
    """`scan`, failing with the places and forms when the sentinel shows anywhere."""
    result = scan(places, sentinel)
    assert not result.leaks, f"the sentinel leaked (place: forms found): {result.leaks}"
    return result


def without_emulator_redactions(record: Mapping[str, Any]) -> dict[str, Any]:
    """An emulator record view (`/_emulator/llms`) minus the part the emulator redacts itself (credentials):
    what is left is what the operator sent and the registry stores as it came."""
    return {k: v for k, v in record.items() if k != "credentials"}
