"""Which API key acts as which principal: pure, thread-safe, no HTTP.

A principal (an owner id, admin or not) may hold several keys, as a real registry user does while rotating
one: the new key is added as the same principal, the old one revoked later, and entries stay with the
principal, not with a key. A key given at start (or added without ``same_as``) is a principal of its own,
whose id is derived from the key (:func:`owner_id_for_key`).

No error message, repr or summary here ever holds a key's value: keys are secrets.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ._store import Principal, StoreError, owner_id_for_key
from ._validation import ValidationError

#: The longest key accepted at runtime (an HTTP header of 8 KB is a common server limit).
MAX_KEY_LENGTH = 4096


class UnknownKey(StoreError):
    status = 404
    code = "NOT_FOUND"


class KeyConflict(StoreError):
    status = 409
    code = "ALREADY_EXISTS"


class LastAdminKey(StoreError):
    status = 409
    code = "FAILED_PRECONDITION"


def check_key(value: Any, field: str) -> str:
    """A key as an ``x-api-key`` header can carry it; the error names the field, never the value."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "must be a non-empty string")
    if len(value) > MAX_KEY_LENGTH:
        raise ValidationError(field, f"must be at most {MAX_KEY_LENGTH} characters")
    if value != value.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F or ord(c) > 0x7E for c in value):
        raise ValidationError(field, "must be printable ASCII without leading or trailing whitespace")
    return value


class KeyRing:
    """API key -> :class:`Principal`; keys can be added (as a new or an existing principal) and revoked."""

    def __init__(self, api_keys: Iterable[str] = (), admin_keys: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, Principal] = {}
        for key in api_keys:
            self._by_key[key] = Principal(owner_id_for_key(key), is_admin=False)
        for key in admin_keys:  # an admin key listed twice (or also as an ordinary key) stays admin
            self._by_key[key] = Principal(owner_id_for_key(key), is_admin=True)

    def principal(self, key: str) -> Principal | None:
        """The principal ``key`` acts as, or None for an unknown (or revoked) key."""
        with self._lock:
            return self._by_key.get(key)

    def add(self, key: str, *, same_as: str | None = None, admin: bool | None = None) -> Principal:
        """Let ``key`` act as the principal of ``same_as`` (a known key), or, without it, as a principal of its
        own (derived from ``key``; ``admin`` says whether it is an admin). Adding a key again as the principal it
        already acts as changes nothing; as another principal it is a :class:`KeyConflict`."""
        check_key(key, "key")
        if same_as is not None:
            check_key(same_as, "sameAs")
            if admin is not None:
                raise ValidationError("admin", "cannot be combined with sameAs: the key acts as that principal")
        with self._lock:
            if same_as is not None:
                target = self._by_key.get(same_as)
                if target is None:
                    raise ValidationError("sameAs", "is not a known key")
            else:
                owner = owner_id_for_key(key)
                # A principal that already holds keys keeps its admin flag (a principal is one thing).
                existing = next((p for p in self._by_key.values() if p.id == owner), None)
                target = existing or Principal(owner, is_admin=bool(admin))
                if admin is not None and target.is_admin != admin:
                    raise KeyConflict("this principal exists with another admin flag")
            current = self._by_key.get(key)
            if current is not None and current != target:
                raise KeyConflict("this key already acts as another principal")
            self._by_key[key] = target
            return target

    def revoke(self, key: str) -> Principal:
        """Forget ``key`` (the next request with it is a 401); its principal and entries stay. The last admin key
        cannot be revoked (the test hooks would be out of reach): :class:`LastAdminKey`."""
        check_key(key, "key")
        with self._lock:
            principal = self._by_key.get(key)
            if principal is None:
                raise UnknownKey("no such key")
            if principal.is_admin and sum(p.is_admin for p in self._by_key.values()) == 1:
                raise LastAdminKey("this is the last admin key: revoking it would lock out the test hooks")
            del self._by_key[key]
            return principal

    def key_count(self, principal: Principal) -> int:
        with self._lock:
            return sum(p == principal for p in self._by_key.values())

    def principals(self) -> list[dict[str, Any]]:
        """Every principal that holds a key: ``{"ownerId", "admin", "keys": count}``, by ownerId (no key values)."""
        with self._lock:
            counts: dict[Principal, int] = {}
            for p in self._by_key.values():
                counts[p] = counts.get(p, 0) + 1
        return [
            {"ownerId": p.id, "admin": p.is_admin, "keys": n} for p, n in sorted(counts.items(), key=lambda i: i[0].id)
        ]

    def __repr__(self) -> str:  # never the keys
        with self._lock:
            return f"<KeyRing {len(self._by_key)} keys>"
