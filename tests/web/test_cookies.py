"""The cookie names a Cookie header piece may be read as (gateway/web/cookies.py): the
shortcut for plain pairs must find exactly what reading the piece every way finds."""

from __future__ import annotations

import random

import pytest

from gateway.web.cookies import _names_read, names_read_every_way

# Characters that matter to some reader: separators, PHP's `.`/` `/`[`, escapes, non-ASCII.
ALPHABET = "aZ9_-=;, .[]%2E\t\"'\\/+:@é\x7f\x00"


def test_the_shortcut_agrees_with_the_full_reading_on_random_pieces() -> None:
    rng = random.Random(20261122)
    for _ in range(50_000):
        piece = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
        assert _names_read(piece) == names_read_every_way(piece), repr(piece)


@pytest.mark.parametrize(
    ("piece", "names"),
    [
        ("crm_session=abc", {"crm_session"}),
        (" crm_session=a=b", {"crm_session"}),
        ("a=1 crm_session=x", {"a", "crm_session"}),
        ("a=1, crm_session=x", {"a", "crm_session"}),
        ("crm.session=x", {"crm.session", "crm_session"}),
        ("crm%5Fsession=x", {"crm%5Fsession", "crm_session"}),
        ("crm_session[0]=x", {"crm_session[0]", "crm_session"}),
    ],
)
def test_names_a_server_may_read(piece: str, names: set[str]) -> None:
    assert _names_read(piece) == names
