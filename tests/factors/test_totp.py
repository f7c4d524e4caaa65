"""TOTP arithmetic (gateway/factors/totp.py) against RFC 6238 Appendix B and an independent
HMAC computation; replay guards live in gateway.signin.regulation and are tested there."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from gateway.factors import totp

SEED_SHA1 = b"12345678901234567890"
SEED_SHA256 = b"12345678901234567890123456789012"
SEED_SHA512 = b"1234567890123456789012345678901234567890123456789012345678901234"
SEEDS = {"sha1": SEED_SHA1, "sha256": SEED_SHA256, "sha512": SEED_SHA512}

# RFC 6238 Appendix B: (time, TOTP) for each mode, 8 digits, X = 30, T0 = 0.
RFC6238 = [
    (59, "sha1", "94287082"),
    (59, "sha256", "46119246"),
    (59, "sha512", "90693936"),
    (1111111109, "sha1", "07081804"),
    (1111111109, "sha256", "68084774"),
    (1111111109, "sha512", "25091201"),
    (1111111111, "sha1", "14050471"),
    (1111111111, "sha256", "67062674"),
    (1111111111, "sha512", "99943326"),
    (1234567890, "sha1", "89005924"),
    (1234567890, "sha256", "91819424"),
    (1234567890, "sha512", "93441116"),
    (2000000000, "sha1", "69279037"),
    (2000000000, "sha256", "90698825"),
    (2000000000, "sha512", "38618901"),
    (20000000000, "sha1", "65353130"),
    (20000000000, "sha256", "77737706"),
    (20000000000, "sha512", "47863826"),
]

# RFC 4226 Appendix D: HOTP-SHA1, 6 digits, counters 0-9.
RFC4226 = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]  # fmt: skip

SECRET = base64.b32encode(SEED_SHA1).decode()
NOW = 1_800_000_015.0  # 15 s into a step


def b32(seed: bytes) -> str:
    return base64.b32encode(seed).decode()


def reference_code(secret: str, step: int) -> str:
    """RFC 4226 §5.3 written out with hmac, independent of pyotp."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**6:06d}"


def test_rfc_seeds_base32_encode_to_the_published_values() -> None:
    assert b32(SEED_SHA1) == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    assert b32(SEED_SHA256) == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA===="
    assert b32(SEED_SHA512) == (
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNA="
    )


@pytest.mark.parametrize(("when", "digest", "expected"), RFC6238)
def test_code_matches_rfc6238_appendix_b(when: int, digest: str, expected: str) -> None:
    step = totp.counter(when)

    assert totp.code_at(b32(SEEDS[digest]), step, digits=8, digest=digest) == expected


@pytest.mark.parametrize(
    ("when", "step"),
    [(59, 0x1), (1111111109, 0x23523EC), (1111111111, 0x23523ED), (1234567890, 0x273EF07),
     (2000000000, 0x3F940AA), (20000000000, 0x27BC86AA)],
)  # fmt: skip
def test_counter_matches_the_rfc6238_time_steps(when: int, step: int) -> None:
    assert totp.counter(when) == step
    assert totp.counter(float(when)) == step


@pytest.mark.parametrize(("count", "expected"), list(enumerate(RFC4226)))
def test_six_digit_code_matches_rfc4226_appendix_d(count: int, expected: str) -> None:
    assert totp.code_at(SECRET, count) == expected


def test_six_digit_code_is_the_last_six_digits_of_the_eight_digit_one() -> None:
    for when, digest, eight in RFC6238:
        six = totp.code_at(b32(SEEDS[digest]), totp.counter(when), digest=digest)
        assert six == eight[-6:]


def test_unpadded_base32_secret_gives_the_same_codes() -> None:
    padded = b32(SEED_SHA256)

    assert totp.code_at(padded.rstrip("="), 1, digits=8, digest="sha256") == "46119246"


def test_code_at_agrees_with_an_independent_hmac_computation() -> None:
    secret = totp.new_secret()

    for step in range(60_000_000, 60_000_050):
        assert totp.code_at(secret, step) == reference_code(secret, step)


# -- which step a code is ---------------------------------------------------------------------


def test_the_current_code_matches_the_current_step() -> None:
    step = totp.counter(NOW)

    assert totp.matching_step(SECRET, reference_code(SECRET, step), NOW) == step


@pytest.mark.parametrize("offset", [-1, 1])
def test_a_code_one_step_either_side_is_accepted_for_clock_drift(offset: int) -> None:
    step = totp.counter(NOW) + offset

    assert totp.matching_step(SECRET, reference_code(SECRET, step), NOW) == step


@pytest.mark.parametrize("offset", [-2, 2, -3, 3, -100])
def test_a_code_two_or_more_steps_away_is_refused(offset: int) -> None:
    code = reference_code(SECRET, totp.counter(NOW) + offset)
    near = {reference_code(SECRET, totp.counter(NOW) + d) for d in (-1, 0, 1)}
    assert code not in near  # the refusal below is about time, not a chance collision

    assert totp.matching_step(SECRET, code, NOW) is None


def test_drift_zero_accepts_only_the_current_step() -> None:
    step = totp.counter(NOW)

    assert totp.matching_step(SECRET, reference_code(SECRET, step), NOW, drift=0) == step
    assert totp.matching_step(SECRET, reference_code(SECRET, step + 1), NOW, drift=0) is None
    assert totp.matching_step(SECRET, reference_code(SECRET, step - 1), NOW, drift=0) is None


def test_the_step_boundary_is_a_multiple_of_thirty_seconds() -> None:
    start = 1_800_000_000.0  # divisible by 30
    code = reference_code(SECRET, totp.counter(start))

    assert totp.matching_step(SECRET, code, start + 29.999, drift=0) == totp.counter(start)
    assert totp.matching_step(SECRET, code, start + 30.0, drift=0) is None
    assert totp.matching_step(SECRET, code, start - 0.001, drift=0) is None


def test_a_code_is_accepted_for_at_most_three_steps_of_wall_time() -> None:
    step = totp.counter(NOW)
    code = reference_code(SECRET, step)
    accepted = [
        t
        for t in range((step - 3) * 30, (step + 4) * 30)
        if totp.matching_step(SECRET, code, float(t)) == step
    ]

    assert accepted == list(range((step - 1) * 30, (step + 2) * 30))


@pytest.mark.parametrize("spacing", [" {a} {b} ", "{a} {b}", " {a}{b}\n", "\t{a}{b}"])
def test_spaces_around_and_inside_a_code_are_ignored(spacing: str) -> None:
    code = reference_code(SECRET, totp.counter(NOW))

    typed = spacing.format(a=code[:3], b=code[3:])

    assert totp.matching_step(SECRET, typed, NOW) == totp.counter(NOW)


@pytest.mark.parametrize(
    "code",
    [
        "",
        "12345",
        "1234567",
        "12345678",
        "12a456",
        "12-456",
        "+12345",
        "-12345",
        "12.456",
        "１２３４５６",  # fullwidth digits: isdigit() but not ASCII
        "١٢٣٤٥٦",  # Arabic-Indic digits
        "²²²²²²",  # superscripts
        "12345\x00",
    ],
)
def test_a_code_that_is_not_six_ascii_digits_is_refused(code: str) -> None:
    assert totp.matching_step(SECRET, code, NOW) is None


def test_the_eight_digit_code_of_the_current_step_is_refused() -> None:
    eight = totp.code_at(SECRET, totp.counter(NOW), digits=8)

    assert totp.matching_step(SECRET, eight, NOW) is None


def test_a_code_for_another_secret_is_refused() -> None:
    other = totp.new_secret()
    code = reference_code(other, totp.counter(NOW))
    assert code not in {reference_code(SECRET, totp.counter(NOW) + d) for d in (-1, 0, 1)}

    assert totp.matching_step(SECRET, code, NOW) is None


# -- new secrets and how they are shown -------------------------------------------------------


def test_new_secret_is_160_bits_of_base32_without_padding() -> None:
    secret = totp.new_secret()

    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert len(base64.b32decode(secret)) == 20


def test_new_secrets_are_random() -> None:
    assert len({totp.new_secret() for _ in range(50)}) == 50


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ"),
        ("ABCDEF", "ABCD EF"),
        ("ABCD", "ABCD"),
        ("", ""),
    ],
)
def test_grouped_splits_a_secret_into_groups_of_four(secret: str, shown: str) -> None:
    assert totp.grouped(secret) == shown


def test_a_grouped_secret_still_decodes_to_the_same_key() -> None:
    secret = totp.new_secret()

    assert totp.grouped(secret).replace(" ", "") == secret


def test_provisioning_uri_names_the_secret_issuer_and_parameters() -> None:
    uri = totp.provisioning_uri(SECRET, "alice@example.com", "Acme CRM")

    parts = urlsplit(uri)
    query = parse_qs(parts.query, strict_parsing=True)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    assert parts.path == "/Acme%20CRM%3Aalice@example.com"
    assert unquote(parts.path[1:]) == "Acme CRM:alice@example.com"
    assert query == {
        "secret": [SECRET],
        "issuer": ["Acme CRM"],
        "algorithm": ["SHA1"],
        "digits": ["6"],
        "period": ["30"],
    }


def test_provisioning_uri_escapes_characters_that_would_change_its_meaning() -> None:
    uri = totp.provisioning_uri(SECRET, "bob?x=1&secret=AAAA#frag", "A&B/C?D#E")

    parts = urlsplit(uri)
    query = parse_qs(parts.query, strict_parsing=True)
    assert parts.fragment == ""
    assert "/" not in parts.path[1:]
    assert unquote(parts.path[1:]) == "A&B/C?D#E:bob?x=1&secret=AAAA#frag"
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["A&B/C?D#E"]
    assert set(query) == {"secret", "issuer", "algorithm", "digits", "period"}


def test_provisioning_uri_percent_encodes_non_ascii_names_as_utf8() -> None:
    uri = totp.provisioning_uri(SECRET, "jürgen", "Société")

    assert uri.isascii()
    assert "Soci%C3%A9t%C3%A9%3Aj%C3%BCrgen" in uri
    assert parse_qs(urlsplit(uri).query)["issuer"] == ["Société"]


def test_qr_svg_is_an_inline_svg_with_an_escaped_title() -> None:
    svg = totp.qr_svg(totp.provisioning_uri(SECRET, "alice", "Acme"), "<b>Acme & co</b>")

    assert svg.startswith("<svg ")
    assert svg.rstrip().endswith("</svg>")
    assert "<title>&lt;b&gt;Acme &amp; co&lt;/b&gt;</title>" in svg
    assert "<?xml" not in svg
    assert "<script" not in svg
    assert SECRET not in svg  # the secret is drawn, not written


def test_qr_svg_differs_for_different_secrets() -> None:
    a = totp.qr_svg(totp.provisioning_uri(totp.new_secret(), "alice", "Acme"), "QR")
    b = totp.qr_svg(totp.provisioning_uri(totp.new_secret(), "alice", "Acme"), "QR")

    assert a != b
