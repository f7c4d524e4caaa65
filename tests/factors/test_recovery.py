"""Recovery-code sets (gateway/factors/recovery.py): ten fresh codes, kept only as digests."""

from __future__ import annotations

import re

import pytest

from gateway.crypto import recovery_digest
from gateway.factors import recovery

CODE = re.compile(r"^[a-hjkmnp-z2-9]{5}-[a-hjkmnp-z2-9]{5}$")


def test_a_new_set_holds_ten_distinct_well_formed_codes() -> None:
    codes = recovery.new_codes()

    assert len(codes) == recovery.COUNT == 10
    assert len(set(codes)) == 10
    assert all(CODE.match(code) for code in codes)


def test_a_new_set_is_sorted_for_display() -> None:
    codes = recovery.new_codes()

    assert codes == sorted(codes)


def test_two_sets_share_no_code() -> None:
    assert not set(recovery.new_codes()) & set(recovery.new_codes())


def test_digests_are_one_per_code_in_order_and_salted_by_user() -> None:
    codes = recovery.new_codes()

    found = recovery.digests("alice", codes)

    assert found == [recovery_digest("alice", code) for code in codes]
    assert len(set(found)) == 10
    assert not set(found) & set(recovery.digests("bob", codes))


def test_digests_never_hold_the_codes_themselves() -> None:
    codes = recovery.new_codes()

    joined = b"".join(recovery.digests("alice", codes))

    for code in codes:
        assert code.replace("-", "").encode() not in joined
        assert code.encode() not in joined


def test_a_code_typed_in_capitals_without_its_dash_has_the_stored_digest() -> None:
    code = recovery.new_codes()[0]

    typed = code.upper().replace("-", " ")

    assert recovery_digest("alice", typed) in recovery.digests("alice", [code])


@pytest.mark.parametrize(
    "text", ["abcde-fghjk", "ABCDEFGHJK", " abcde fghjk ", "abc-de-fgh-jk", "abcde\tfghjk\n"]
)
def test_ten_symbols_however_spaced_look_like_a_recovery_code(text: str) -> None:
    assert recovery.looks_like_code(text) is True


@pytest.mark.parametrize(
    "text", ["", "abcde-fghj", "abcde-fghjkm", "123456", "--- ---", "abcdefghjkabcdefghjk"]
)
def test_other_lengths_do_not_look_like_a_recovery_code(text: str) -> None:
    assert recovery.looks_like_code(text) is False


def test_a_six_digit_totp_code_is_never_taken_for_a_recovery_code() -> None:
    assert recovery.looks_like_code("123 456") is False
