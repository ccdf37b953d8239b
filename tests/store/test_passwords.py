"""The stored password format is verifiable, salted, and never the password itself."""

from __future__ import annotations

from scimjit.store.passwords import hash_password, verify_password


def test_hash_verifies_only_the_right_password_and_is_salted():
    stored = hash_password("t1meMa$heen")
    assert stored.startswith("scrypt$") and "t1meMa$heen" not in stored
    assert verify_password("t1meMa$heen", stored)
    assert not verify_password("wrong", stored)
    assert hash_password("t1meMa$heen") != stored
    assert not verify_password("t1meMa$heen", "plain-text")
