"""The key ring (pure): several keys per principal, keys added and revoked at runtime, never a key in a message."""

from __future__ import annotations

from typing import Any

import pytest

from goodmem_emulator import Principal, owner_id_for_key
from goodmem_emulator._keys import MAX_KEY_LENGTH, KeyConflict, KeyRing, LastAdminKey, UnknownKey
from goodmem_emulator._store import StoreError
from goodmem_emulator._validation import ValidationError

pytestmark = pytest.mark.unit

OLD = "team-a-key-OLD-5f3e"
NEW = "team-a-key-NEW-9c1d"
ROOT = "root-key-7a7a"


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(api_keys=[OLD, "team-b-key"], admin_keys=[ROOT])


def test_keys_given_at_start_are_principals_of_their_own(ring: KeyRing) -> None:
    assert ring.principal(OLD) == Principal(owner_id_for_key(OLD), is_admin=False)
    assert ring.principal("team-b-key") == Principal(owner_id_for_key("team-b-key"))
    assert ring.principal(ROOT) == Principal(owner_id_for_key(ROOT), is_admin=True)
    assert ring.principal("never-given") is None
    # A key listed as ordinary and as admin is an admin.
    assert KeyRing(api_keys=["k"], admin_keys=["k"]).principal("k") == Principal(owner_id_for_key("k"), True)


def test_a_key_added_same_as_another_acts_as_its_principal_and_outlives_it(ring: KeyRing) -> None:
    team_a = ring.principal(OLD)
    assert ring.add(NEW, same_as=OLD) == team_a
    assert ring.principal(NEW) == ring.principal(OLD) == team_a
    assert team_a is not None and ring.key_count(team_a) == 2

    assert ring.revoke(OLD) == team_a
    assert ring.principal(OLD) is None
    assert ring.principal(NEW) == team_a, "the principal lives on in its other key"
    assert ring.key_count(team_a) == 1


def test_a_key_added_same_as_an_admin_key_is_an_admin(ring: KeyRing) -> None:
    assert ring.add("root-2", same_as=ROOT) == Principal(owner_id_for_key(ROOT), is_admin=True)


def test_a_key_added_alone_is_a_new_principal_admin_only_when_asked(ring: KeyRing) -> None:
    assert ring.add("fresh") == Principal(owner_id_for_key("fresh"), is_admin=False)
    assert ring.add("fresh-admin", admin=True) == Principal(owner_id_for_key("fresh-admin"), is_admin=True)
    assert ring.principal("fresh") != ring.principal(OLD)


def test_adding_a_key_again_as_the_same_principal_changes_nothing(ring: KeyRing) -> None:
    ring.add(NEW, same_as=OLD)
    assert ring.add(NEW, same_as=OLD) == ring.principal(OLD)
    assert ring.add(OLD) == ring.principal(OLD)  # a start key re-added as itself
    assert ring.key_count(Principal(owner_id_for_key(OLD))) == 2


def test_a_key_cannot_change_principal(ring: KeyRing) -> None:
    ring.add(NEW, same_as=OLD)
    with pytest.raises(KeyConflict) as exc:
        ring.add(NEW, same_as="team-b-key")
    assert exc.value.status == 409
    assert ring.principal(NEW) == ring.principal(OLD), "the refused add changed nothing"
    with pytest.raises(KeyConflict):
        ring.add(OLD, admin=True)  # the principal exists, not as an admin


def test_same_as_must_name_a_known_key_and_excludes_admin(ring: KeyRing) -> None:
    with pytest.raises(ValidationError) as exc:
        ring.add(NEW, same_as="nobody-has-this-key")
    assert exc.value.field == "sameAs"
    with pytest.raises(ValidationError) as exc:
        ring.add(NEW, same_as=OLD, admin=True)
    assert exc.value.field == "admin"
    assert ring.principal(NEW) is None


def test_a_revoked_key_can_no_longer_be_the_same_as_of_another(ring: KeyRing) -> None:
    ring.add(NEW, same_as=OLD)
    ring.revoke(OLD)
    with pytest.raises(ValidationError):
        ring.add("third", same_as=OLD)
    assert ring.add("third", same_as=NEW) == Principal(owner_id_for_key(OLD))


def test_revoking_an_unknown_key_is_not_found(ring: KeyRing) -> None:
    with pytest.raises(UnknownKey) as exc:
        ring.revoke("nobody-has-this-key")
    assert exc.value.status == 404


def test_the_last_admin_key_cannot_be_revoked(ring: KeyRing) -> None:
    with pytest.raises(LastAdminKey) as exc:
        ring.revoke(ROOT)
    assert exc.value.status == 409
    assert ring.principal(ROOT) is not None
    ring.add("root-2", same_as=ROOT)
    ring.revoke(ROOT)  # another admin key is left
    assert ring.principal(ROOT) is None
    with pytest.raises(LastAdminKey):
        ring.revoke("root-2")


def test_principals_are_summarised_without_keys(ring: KeyRing) -> None:
    ring.add(NEW, same_as=OLD)
    summary = ring.principals()
    assert summary == sorted(
        [
            {"ownerId": owner_id_for_key(OLD), "admin": False, "keys": 2},
            {"ownerId": owner_id_for_key("team-b-key"), "admin": False, "keys": 1},
            {"ownerId": owner_id_for_key(ROOT), "admin": True, "keys": 1},
        ],
        key=lambda p: p["ownerId"],
    )
    for key in (OLD, NEW, ROOT, "team-b-key"):
        assert key not in repr(summary) and key not in repr(ring)


@pytest.mark.parametrize(
    "bad",
    ["", " lead-space", "trail-space ", "new\nline", "tab\there", "nul\x00", "del\x7f", "é-non-ascii", 42, None],
)
def test_malformed_keys_are_refused_without_echoing_them(ring: KeyRing, bad: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        ring.add(bad)
    assert exc.value.field == "key"
    if isinstance(bad, str) and bad:
        assert bad not in str(exc.value)
    if bad is not None:  # same_as=None means "a principal of its own"
        with pytest.raises(ValidationError) as exc:
            ring.add("fine", same_as=bad)
        assert exc.value.field == "sameAs"
        assert ring.principal("fine") is None


def test_a_key_may_be_long_but_not_endless(ring: KeyRing) -> None:
    ring.add("k" * MAX_KEY_LENGTH)
    with pytest.raises(ValidationError):
        ring.add("k" * (MAX_KEY_LENGTH + 1))


def test_no_error_of_the_ring_names_a_key(ring: KeyRing) -> None:
    errors: list[Exception] = []
    for call in (
        lambda: ring.add(NEW, same_as="secret-unknown-key"),
        lambda: ring.add(OLD, same_as=ROOT),
        lambda: ring.revoke("secret-unknown-key"),
        lambda: ring.revoke(ROOT),
    ):
        with pytest.raises((ValidationError, StoreError)) as exc:
            call()
        errors.append(exc.value)
    text = " ".join(f"{e!s} {e!r} {getattr(e, 'message', '')}" for e in errors)
    for key in (NEW, OLD, ROOT, "secret-unknown-key"):
        assert key not in text
