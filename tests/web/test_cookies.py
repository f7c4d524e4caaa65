"""The cookie names a Cookie header piece may be read as (gateway/web/cookies.py): the
shortcut for plain pairs must find exactly what reading the piece every way finds."""

from __future__ import annotations

import random

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.config.signin import Login
from gateway.web.cookies import (
    REMEMBERED,
    REMEMBERED_LENGTH,
    Cookies,
    _names_read,
    cookie_binding,
    names_read_every_way,
)
from gateway.web.forwarding import ClientView
from gateway.web.keys import VIEW

VIEW_HTTP = ClientView(
    ip="127.0.0.1",
    peer="127.0.0.1",
    proto="http",
    host="crm",
    peer_trusted=False,
    request_id="r",
    chain=(),
)

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


# -- finding one of our cookies without parsing them all -------------------------------------

OURS = "crm_gateway"
PIECES = [
    f"{OURS}=Ikp4.Zm9v.YmFy-_",
    f"{OURS}=",
    f"__Host-{OURS}=abc.def",
    f"x{OURS}=zzz",
    f"{OURS}_device=abc",
    f'{OURS}="quoted.value"',
    f"{OURS} = spaced",
    f"{OURS}=a b",
    f"{OURS}=a,b",
    'other="x; crm_gateway=hidden;"',
    "other=1",
    "a=b=c",
    "  ",
    "",
    "name",
]
SEPARATORS = ["; ", ";", " ", ", ", ";  "]


def test_our_cookie_is_read_as_aiohttp_reads_it_whatever_the_header() -> None:
    """The fast way to our cookie (Cookies.get) gives what request.cookies gives, on random
    headers made of plain, repeated, prefixed, quoted, spaced and hidden pieces."""
    cookies = Cookies(OURS, Login(mode="upstream"))
    rng = random.Random(20261206)
    fast = 0
    for _ in range(5_000):
        pieces = [rng.choice(PIECES) for _ in range(rng.randint(1, 5))]
        header = "".join(p + rng.choice(SEPARATORS) for p in pieces).rstrip("; ,")
        request = make_mocked_request("GET", "/", headers={"Cookie": header})
        request[VIEW] = VIEW_HTTP
        expected = request.cookies.get(OURS)
        assert cookies.get(request, OURS) == expected, repr(header)
        fast += '"' not in header and header.count(f"{OURS}=") == 1
    assert fast > 500  # the fast way was taken often, not only the fallback


def test_no_cookie_header_is_no_cookie() -> None:
    request = make_mocked_request("GET", "/")
    request[VIEW] = VIEW_HTTP
    assert Cookies(OURS, Login(mode="upstream")).get(request, OURS) is None


# -- what reaches the CRM, worked out once per Cookie header ----------------------------------


def _sent(cookies: Cookies, lines: list[str], signed_in: str | None, binding: str) -> list[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines:
        headers.add("Cookie", line)
    cookies.adjust(signed_in, binding)(headers)
    return headers.getall("Cookie", [])


def test_a_remembered_cookie_header_is_kept_for_its_own_session_only() -> None:
    """Cookies.adjust remembers what it lets through per header: the answer for one session
    (who, and the CRM cookie released to it) is never the answer for another, however often
    and in whichever order the same header comes."""
    login = Login(mode="upstream", success_cookie="crm_session", crm_cookies=("crm_session",))
    cookies = Cookies(OURS, login)
    lines = [f"{OURS}=Ikp4.Zm9v; crm_session=mine", "other=1; crm_gateway_lang=de"]
    cases = [
        ("carol", cookie_binding("mine"), ["crm_session=mine; other=1"]),
        ("carol", cookie_binding("theirs"), ["other=1"]),
        ("dave", "", ["other=1"]),
        (None, "", ["other=1"]),
    ]
    for _ in range(3):
        for signed_in, binding, expected in cases:
            assert _sent(cookies, lines, signed_in, binding) == expected, (signed_in, binding)
            fresh = Cookies(OURS, login)  # nothing remembered: the same answer
            assert _sent(fresh, lines, signed_in, binding) == expected


def test_what_is_remembered_stays_bounded() -> None:
    cookies = Cookies(OURS, Login(mode="upstream"))
    for n in range(REMEMBERED + 50):
        assert _sent(cookies, [f"a={n}"], "carol", "") == [f"a={n}"]
    long_line = "a=" + "x" * REMEMBERED_LENGTH
    assert _sent(cookies, [long_line], "carol", "") == [long_line]
    assert len(cookies._kept) == REMEMBERED
    assert all(sum(map(len, lines)) <= REMEMBERED_LENGTH for lines, _, _ in cookies._kept)


def test_what_get_found_is_remembered_per_header_and_name() -> None:
    """Cookies.get answers a header it has read before from what it found (None included),
    per cookie name: the same header over HTTPS names `__Host-` cookies, another answer."""
    cookies = Cookies(OURS, Login(mode="upstream"))
    https = VIEW_HTTP._replace(proto="https")
    headers = [
        (f"{OURS}=plain.value; __Host-{OURS}=host.value", "plain.value", "host.value"),
        (f'{OURS}="quoted.value"; other=1', "quoted.value", None),
        (f"{OURS}_device=abc", None, None),
    ]
    for _ in range(2):
        for header, over_http, over_https in headers:
            for view, expected in ((VIEW_HTTP, over_http), (https, over_https)):
                request = make_mocked_request("GET", "/", headers={"Cookie": header})
                request[VIEW] = view
                assert (
                    cookies.get(request, OURS)
                    == expected
                    == request.cookies.get(cookies.name(request, OURS))
                )
