"""TOTP (RFC 6238) with pyotp: new keys, how they are shown, and which time step a code is.

Always given the time explicitly (an injected clock upstream). Replay guards and rate limits
are the caller's (gateway.regulation); this module only does arithmetic.
"""

from __future__ import annotations

import hmac
from urllib.parse import quote

import pyotp
import segno

STEP = 30  # seconds per code (RFC 6238 default; every authenticator app assumes it)
DIGITS = 6
DRIFT = 1  # steps accepted either side of now: at most ±30 s of clock skew


def new_secret() -> str:
    """160 bits (RFC 4226 §4 recommends the HMAC-SHA1 output length), base32, no padding."""
    return pyotp.random_base32(32)


def grouped(secret: str) -> str:
    """`ABCD EFGH …`: groups of four, as people type it into an app by hand."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The `otpauth://` URI (Google Authenticator key-uri format) every app reads from a QR."""
    label = quote(f"{issuer}:{account}", safe="@")
    return (
        f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer, safe='')}"
        f"&algorithm=SHA1&digits={DIGITS}&period={STEP}"
    )


def qr_svg(uri: str, title: str) -> str:
    """An inline SVG QR code (error correction M), drawn in Python: no image request.

    A viewBox and no fixed size, so the page's CSS scales the whole code (a fixed width and
    height would crop a long key URI to a shape no camera can read)."""
    return str(
        segno.make(uri, error="m", micro=False).svg_inline(
            scale=5, dark="#000000", light="#ffffff", border=4, title=title, omitsize=True
        )
    )


def counter(now: float) -> int:
    return int(now // STEP)


def code_at(secret: str, step: int, *, digits: int = DIGITS, digest: str = "sha1") -> str:
    return pyotp.HOTP(secret, digits=digits, digest=digest).at(step)


def matching_step(secret: str, code: str, now: float, *, drift: int = DRIFT) -> int | None:
    """The time step whose code this is (now, or `drift` steps either side), else None.

    Every candidate is computed and compared in constant time, so timing does not tell an
    attacker which step (if any) was close."""
    code = code.strip().replace(" ", "")
    # isascii: str.isdigit() also passes "１２３" and "²", which compare_digest cannot take.
    if len(code) != DIGITS or not code.isascii() or not code.isdigit():
        return None
    here = counter(now)
    found = None
    for step in range(here - drift, here + drift + 1):
        if hmac.compare_digest(code_at(secret, step), code) and found is None:
            found = step
    return found
