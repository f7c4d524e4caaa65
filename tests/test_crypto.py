"""Key rings, AES-GCM sealing, recovery-code digests and password hashes (gateway/crypto.py)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys

import pytest

from gateway.crypto import (
    KEY_BYTES,
    KeyRing,
    Sealer,
    hash_password,
    is_password_hash,
    new_key_line,
    new_recovery_code,
    normalize_recovery_code,
    parse_keys,
    recovery_digest,
    same,
    verify_password,
)
from gateway.errors import KeyProblem, SealBroken


def key_text(key_id: str, key: bytes) -> str:
    return f"{key_id}:{base64.urlsafe_b64encode(key).decode().rstrip('=')}"


def ring_of(*key_ids: str) -> KeyRing:
    return parse_keys("\n".join(new_key_line(k) for k in key_ids))


# -- key rings --------------------------------------------------------------------------------


def test_new_key_line_parses_back_to_a_32_byte_key_under_its_id() -> None:
    line = new_key_line("k1")

    ring = parse_keys(line)

    assert ring.current[0] == "k1"
    assert len(ring.current[1]) == KEY_BYTES
    assert "=" not in line


def test_new_key_lines_are_random() -> None:
    assert new_key_line("k1") != new_key_line("k1")


@pytest.mark.parametrize("key_id", ["", "has space", "a:b", "x" * 33, "ключ"])
def test_new_key_line_refuses_an_unusable_key_id(key_id: str) -> None:
    with pytest.raises(KeyProblem, match="key id"):
        new_key_line(key_id)


def test_first_key_is_current_and_every_key_is_found_by_id() -> None:
    old, new = os.urandom(32), os.urandom(32)

    ring = parse_keys(f"{key_text('new', new)}\n{key_text('old', old)}\n")

    assert ring.current == ("new", new)
    assert ring.get("new") == new
    assert ring.get("old") == old
    assert ring.get("other") is None


@pytest.mark.parametrize("separator", ["\n", " ", ",", ", ", "\r\n", "\t"])
def test_keys_may_be_separated_by_newlines_spaces_or_commas(separator: str) -> None:
    a, b = os.urandom(32), os.urandom(32)

    ring = parse_keys(separator.join([key_text("a", a), key_text("b", b)]))

    assert ring.keys == (("a", a), ("b", b))


def test_comments_and_blank_lines_are_ignored() -> None:
    key = os.urandom(32)
    text = f"# rotated 2025-01-01\n\n{key_text('k2', key)}  # current\n# k1:retired\n"

    assert parse_keys(text).keys == (("k2", key),)


def test_padded_and_standard_base64_keys_are_read() -> None:
    key = bytes(range(251, 256)) + bytes(27)  # encodes with + and / in standard base64
    standard = base64.b64encode(key).decode()

    assert parse_keys(f"std:{standard}").current == ("std", key)
    assert parse_keys(f"url:{base64.urlsafe_b64encode(key).decode()}").current == ("url", key)


def test_keys_longer_than_32_bytes_are_accepted() -> None:
    key = os.urandom(64)

    assert parse_keys(key_text("long", key)).current == ("long", key)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("# only a comment\n\n", "holds no key"),
        ("no-colon-here", "entry 1 must look like id:base64key"),
        (":" + "A" * 43, "entry 1 must look like id:base64key"),
        ("bad id!:" + "A" * 43, "entry 1 must look like id:base64key"),
        # A fixed first key: a random one would give the case a new test id each run.
        ("a:" + "A" * 43 + " x", "entry 2 must look like id:base64key"),
        ("k1:" + "A" * 42, "key 'k1' has 31 bytes; at least 32 needed"),
        ("k1:", "key 'k1' has 0 bytes; at least 32 needed"),
        ("k1:" + "A" * 45, "key 'k1' is not base64"),
        ("k1:" + "é" * 44, "key 'k1' is not base64"),
        ("k1:" + "*" * 44, "key 'k1' is not base64"),
    ],
)
def test_unusable_key_text_is_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(KeyProblem) as caught:
        parse_keys(text)

    assert str(caught.value) == message


def test_a_key_with_stray_characters_is_refused_not_silently_trimmed() -> None:
    line = new_key_line("k1")

    with pytest.raises(KeyProblem, match="not base64"):
        parse_keys(line + "!*")


def test_the_same_key_id_twice_is_refused() -> None:
    with pytest.raises(KeyProblem, match="key id 'k1' appears twice"):
        parse_keys(f"{new_key_line('k1')}\n{new_key_line('k1')}")


def test_key_errors_never_quote_key_material() -> None:
    short = base64.urlsafe_b64encode(b"sixteen byte key").decode()

    with pytest.raises(KeyProblem) as caught:
        parse_keys(f"k1:{short}")

    assert short not in str(caught.value)


def test_a_key_ring_repr_names_its_keys_but_shows_no_key_material() -> None:
    key = os.urandom(32)
    ring = parse_keys(key_text("k1", key))

    shown = repr(ring)

    assert "k1" in shown
    assert repr(key) not in shown
    assert key_text("k1", key).split(":")[1] not in shown


# -- sealing ----------------------------------------------------------------------------------


def test_sealed_value_opens_to_the_plaintext() -> None:
    sealer = Sealer(ring_of("k1"))

    sealed = sealer.seal(b"JBSWY3DPEHPK3PXP", "totp")

    assert sealer.unseal(sealed, "totp") == b"JBSWY3DPEHPK3PXP"
    assert b"JBSWY3DPEHPK3PXP" not in sealed


def test_empty_plaintext_seals_and_opens() -> None:
    sealer = Sealer(ring_of("k1"))

    assert sealer.unseal(sealer.seal(b"", "p"), "p") == b""


def test_sealed_value_names_the_current_key() -> None:
    sealer = Sealer(ring_of("new", "old"))

    sealed = sealer.seal(b"x", "p")

    assert sealed.startswith(b"new\x00")
    assert sealer.key_id(sealed) == "new"


def test_sealing_twice_gives_different_ciphertexts() -> None:
    sealer = Sealer(ring_of("k1"))

    assert sealer.seal(b"same", "p") != sealer.seal(b"same", "p")


def test_value_sealed_for_one_purpose_does_not_open_for_another() -> None:
    sealer = Sealer(ring_of("k1"))
    sealed = sealer.seal(b"secret", "totp\x00alice\x00a1")

    with pytest.raises(SealBroken):
        sealer.unseal(sealed, "totp\x00mallory\x00a1")


@pytest.mark.parametrize("position", [4, 10, 20, -1, -17])
def test_a_flipped_byte_anywhere_after_the_key_id_breaks_the_seal(position: int) -> None:
    sealer = Sealer(ring_of("k1"))
    sealed = bytearray(sealer.seal(b"held cookies", "held"))

    sealed[position] ^= 0x01

    with pytest.raises(SealBroken):
        sealer.unseal(bytes(sealed), "held")


@pytest.mark.parametrize("keep", [0, 2, 3, 4, 10, 16, 30, 31])
def test_truncated_sealed_value_is_refused(keep: int) -> None:
    sealer = Sealer(ring_of("k1"))
    sealed = sealer.seal(b"x", "p")  # 3 + 12 + 1 + 16 = 32 bytes

    with pytest.raises(SealBroken):
        sealer.unseal(sealed[:keep], "p")


def test_value_without_a_key_id_separator_is_refused() -> None:
    with pytest.raises(SealBroken, match="unknown key"):
        Sealer(ring_of("k1")).unseal(os.urandom(64).replace(b"\x00", b"\x01"), "p")


def test_value_sealed_under_the_old_key_opens_after_rotation() -> None:
    old_line, new_line = new_key_line("old"), new_key_line("new")
    sealed = Sealer(parse_keys(old_line)).seal(b"secret", "totp")

    rotated = Sealer(parse_keys(f"{new_line}\n{old_line}"))

    assert rotated.unseal(sealed, "totp") == b"secret"
    assert rotated.key_id(rotated.seal(b"secret", "totp")) == "new"


def test_value_sealed_under_a_key_no_longer_in_the_ring_is_refused() -> None:
    sealed = Sealer(ring_of("retired")).seal(b"secret", "totp")

    with pytest.raises(SealBroken, match="unknown key"):
        Sealer(ring_of("new", "old")).unseal(sealed, "totp")


def test_value_sealed_under_another_key_with_the_same_id_is_refused() -> None:
    sealed = Sealer(ring_of("k1")).seal(b"secret", "totp")

    with pytest.raises(SealBroken, match="tampered"):
        Sealer(ring_of("k1")).unseal(sealed, "totp")


def test_relabelling_a_sealed_value_with_another_key_id_does_not_open_it() -> None:
    line_a, line_b = new_key_line("a"), new_key_line("b")
    sealer = Sealer(parse_keys(f"{line_a}\n{line_b}"))
    sealed = sealer.seal(b"secret", "p")

    relabelled = b"b" + sealed[1:]

    with pytest.raises(SealBroken):
        sealer.unseal(relabelled, "p")


# -- recovery codes ---------------------------------------------------------------------------


def test_recovery_code_is_two_groups_of_five_unambiguous_symbols() -> None:
    for _ in range(200):
        code = new_recovery_code()
        assert re.fullmatch(r"[a-hjkmnp-z2-9]{5}-[a-hjkmnp-z2-9]{5}", code), code
        assert not set(code) & set("01ilo")


def test_recovery_codes_are_random() -> None:
    assert len({new_recovery_code() for _ in range(100)}) == 100


@pytest.mark.parametrize(
    "typed", ["abcde-fghjk", "ABCDE-FGHJK", " abcde fghjk ", "abcdefghjk", "AbCdE--FgHjK\n"]
)
def test_recovery_code_is_normalised_to_lower_case_symbols_only(typed: str) -> None:
    assert normalize_recovery_code(typed) == "abcdefghjk"


def test_recovery_digest_ignores_case_spaces_and_dashes() -> None:
    assert recovery_digest("alice", "abcde-fghjk") == recovery_digest("alice", " ABCDE FGHJK ")


def test_recovery_digest_is_a_sha256_salted_by_user() -> None:
    digest = recovery_digest("alice", "abcde-fghjk")

    assert len(digest) == 32
    assert digest != recovery_digest("bob", "abcde-fghjk")
    assert digest != recovery_digest("alice", "abcde-fghjm")


def test_recovery_digest_does_not_contain_the_code() -> None:
    assert b"abcdefghjk" not in recovery_digest("alice", "abcde-fghjk")


# -- constant-time comparison ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("123456", "123456", True),
        ("123456", "123457", False),
        ("123456", "12345", False),
        (b"\x00\xff", b"\x00\xff", True),
        (b"\x00\xff", b"\x00\xfe", False),
        ("token", b"token", True),
        ("", "", True),
        ("ü", "ü", True),
        ("ü", "u", False),
    ],
)
def test_same_compares_text_and_bytes(a: str | bytes, b: str | bytes, equal: bool) -> None:
    assert same(a, b) is equal


# -- passwords --------------------------------------------------------------------------------


def test_password_hash_verifies_the_password_it_was_made_from() -> None:
    stored = hash_password("correct horse")

    assert is_password_hash(stored)
    assert verify_password(stored, "correct horse") is True
    assert verify_password(stored, "correct horsE") is False
    assert verify_password(stored, "") is False


def test_password_hashes_are_salted() -> None:
    assert hash_password("same") != hash_password("same")


def test_unknown_user_never_verifies_even_with_an_empty_password() -> None:
    assert verify_password(None, "") is False
    assert verify_password(None, "anything") is False


@pytest.mark.parametrize("stored", ["", "plaintext", "$argon2id$garbage", "$2b$12$bcryptish"])
def test_a_stored_value_that_is_not_an_argon2_hash_never_verifies(stored: str) -> None:
    assert verify_password(stored, stored) is False


@pytest.mark.parametrize(
    ("text", "is_hash"), [("$argon2id$v=19$m=65536,t=3,p=2$x$y", True), ("$argon2i$x", False)]
)
def test_is_password_hash_recognises_argon2id(text: str, is_hash: bool) -> None:
    assert is_password_hash(text) is is_hash


def test_the_gateway_and_its_cli_load_neither_cryptography_nor_argon2_until_used() -> None:
    """A gateway without sign-in never seals nor hashes: their native libraries (about 7 MB
    of a worker's memory) are loaded at the first seal or password, not with the code."""
    code = (
        "import sys, gateway.cli.main, gateway.web.app, gateway.web.server\n"
        "print(*(name in sys.modules for name in ('cryptography', 'argon2')))\n"
        "from gateway.crypto import Sealer, parse_keys, verify_password\n"
        "sealer = Sealer(parse_keys('k:' + 'A' * 43))\n"
        "assert sealer.unseal(sealer.seal(b'x', 'p'), 'p') == b'x'\n"
        "assert verify_password(None, 'x') is False\n"
        "print(*(name in sys.modules for name in ('cryptography', 'argon2')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False", "True", "True"]
