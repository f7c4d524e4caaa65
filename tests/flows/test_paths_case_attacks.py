"""Attacks on path rules in the CRM's own spelling (upstream.case_insensitive_paths, rules on
match_form, the CRM's login and logout known in any case): a rule judged on one name while
the CRM serves another, a second factor skipped, a login not watched.

The CRM here models Windows more closely than tests/flows/test_case_insensitive_paths: it
upper-cases each UTF-16 unit by Unicode's *simple* uppercase mapping (UnicodeData.txt field
12), which is what NTFS's upcase table and .NET's OrdinalIgnoreCase hold. Python's
str.upper() is the full mapping: where that gives two characters, the simple one may still
give one (polytonic Greek with ypogegrammeni). Three holes it found (that fold, a logout
read generously, a login path written with lower-case escapes) are fixed; their tests pass."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from contextlib import redirect_stdout
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote

import pytest
from aiohttp import web

from gateway.cli.main import main as cli
from gateway.paths import fold_case
from tests.conftest import Served, serve_handler
from tests.flows.test_case_insensitive_paths import (
    ask,
    ask_endpoint,
    gateway,
    post_login,
    status_of,
)
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.signin_kit import GATEWAY_COOKIE, Browser, Start

# -- a CRM on IIS, case folded as Windows folds -------------------------------------------------

# UnicodeData.txt's simple uppercase for the lowercase letters whose full uppercase
# (SpecialCasing.txt, what str.upper() gives) is two characters: U+1F80 ᾀ -> U+1F88 ᾈ, ...
_SIMPLE_ONLY = {
    **{cp: cp + 8 for first in (0x1F80, 0x1F90, 0x1FA0) for cp in range(first, first + 8)},
    0x1FB3: 0x1FBC,
    0x1FC3: 0x1FCC,
    0x1FF3: 0x1FFC,
}

NOTED = web.AppKey("noted", list[tuple[str, str, str]])  # (method, name as IIS reads it, raw)


def windows_upper(text: str) -> str:
    """Each UTF-16 unit upper-cased by the simple mapping; no other plane is mapped."""
    return fold_case(text).translate(_SIMPLE_ONLY)


def windows_name(raw_path: str) -> str:
    """The name IIS serves: decoded once, a segment's trailing dots and spaces dropped, a
    stream read as its file, upper-cased as Windows compares names."""
    segments = [s.split(":", 1)[0].rstrip(". ") for s in unquote(raw_path).split("/")]
    return windows_upper("/".join(segments).rstrip("/") or "/")


async def iis_crm(request: web.Request) -> web.StreamResponse:
    name = windows_name(request.raw_path.split("?", 1)[0])
    request.app[NOTED].append((request.method, name, request.raw_path))
    return web.Response(text=f"page {name}")


@pytest.fixture
async def crm() -> AsyncIterator[Served]:
    served = await serve_handler(iis_crm, NOTED)
    yield served
    await served.runner.cleanup()


def served_names(crm: Served) -> list[str]:
    return [name for _, name, _ in crm.app[NOTED]]


# Rules written as an operator writes them: capitals, letters outside ASCII, a `*` segment.
UNICODE_POLICY = """\
roles: {admin: {}}
paths:
  - {path: /Secret/**, allow: [role:admin]}
  - {path: /kasse/**, allow: [role:admin]}
  - {path: /intern/**, allow: [role:admin]}
  - {path: /ǆungla/**, allow: [role:admin]}
  - {path: /πόλις/**, allow: [role:admin]}
  - {path: /𐐨/**, allow: [role:admin]}
  - {path: /files/*/edit, allow: [role:admin]}
  - {path: "/**", allow: [anyone]}
"""

CLOSED = ["/SECRET", "/KASSE", "/INTERN", "/ǄUNGLA", "/ΠΌΛΙΣ", "/𐐨"]


def closed_on_windows(name: str) -> bool:
    """Whether the CRM reads this name as one of UNICODE_POLICY's closed pages."""
    if re.fullmatch(r"/FILES/[^/]*/EDIT", name):
        return True
    return any(name == c or name.startswith(c + "/") for c in CLOSED)


def escaped(text: str) -> str:
    """As a browser sends a path: UTF-8, percent-escaped (upper-case hex)."""
    return quote(text, safe="/%:~.!$*")


SPELLINGS = [
    escaped(p)
    for p in (
        "/secret/x",
        "/SECRET/x",
        "/ſecret/x",  # U+017F: upper-cased one to one it is S
        "/%c5%bfecret/x",  # the same, escaped in lower-case hex
        "/%2553ecret/x",  # %25: decoded once (IIS refuses double escapes) it is /%53ecret
        "/KASSE/x",
        "/\u212aasse/x",  # KELVIN SIGN: itself upper-case, no letter k: another name
        "/ıntern/x",  # dotless i upper-cases to I
        "/Ǆungla/x",
        "/ǅungla/x",  # the titlecase digraph
        "/ǆUNGLA/x",
        "/ΠΌΛΙΣ/x",
        "/πόλισ/x",  # final sigma and sigma are one capital
        "/πόλις/x",
        "/𐐨/x",
        "/𐐀/x",  # outside the BMP Windows maps no case: another name
        "/files/%2A/edit",  # an escaped * is a name, matched by the rule's * like any other
        "/files/A%2Ab/EDIT",
        "/files/a/b/edit",  # `*` is one segment, on both sides
    )
]


async def test_every_spelling_is_judged_as_the_name_windows_serves(
    crm: Served, start: Start
) -> None:
    """Case pairs where Python and Windows might differ, escapes in lower-case hex, a `%25`,
    an escaped `*`: refused exactly when Windows reads the spelling as a closed page."""
    gw = await gateway(start, crm, policy=UNICODE_POLICY)
    for target in SPELLINGS:
        status = await ask(gw, "GET", target)
        closed = closed_on_windows(windows_name(target))
        assert status == (403 if closed else 200), (target, windows_name(target), status)
    assert not [n for n in served_names(crm) if closed_on_windows(n)]
    # The spellings that are other names on Windows went, as sent.
    assert [raw for _, _, raw in crm.app[NOTED]] == [
        "/%2553ecret/x",
        "/%E2%84%AAasse/x",
        "/%F0%90%90%80/x",
        "/files/a/b/edit",
    ]


async def test_greek_with_ypogegrammeni_is_folded_as_windows_folds_it(
    crm: Served, start: Start
) -> None:
    policy = (
        "roles: {admin: {}}\npaths:\n  - {path: /ᾈ/**, allow: [role:admin]}\n"
        '  - {path: /ᾼ/**, allow: [role:admin]}\n  - {path: "/**", allow: [anyone]}\n'
    )
    gw = await gateway(start, crm, policy=policy)
    for target in ("/%E1%BE%88/x", "/%E1%BE%80/x", "/%E1%BE%BC/x", "/%E1%BE%B3/x"):
        assert windows_name(target) in ("/ᾈ/X", "/ᾼ/X")  # one closed name each, on IIS
        assert await ask(gw, "GET", target) == 403, target
    assert served_names(crm) == []


# -- nothing crashes a judge ---------------------------------------------------------------------

ODD_PATHS = [
    "/%25",
    "/%C3%A9%25",
    "/%25%32%46",  # %25 then 2F: decoded by match_form it reads %2F, a slash no more
    "/%2A%2A/%5B%5D",
    "/**",
    "/%E2%80%AE",
    "/%EF%BB%BF",
    "/%F0%9F%98%80~1",
    "/%E1%BE%80.",
    "/%c2%a0.",
    "/a%3a",
    "/%CC%81",
    "/%EF%BC%8F",
    "/%E2%88%95admin",
    "/%C0%AF",
    "/%ED%A0%80",
    "/%F4%90%80%80",
    "/%EF%BF%BF",
    "/%2e%2e/%2e%2e/x",
    "/x/%2E%2E/%2E",
    "/%",
    "/%%41",
    "/%4",
]


@pytest.mark.parametrize("fold", [True, False])
async def test_no_odd_path_crashes_the_proxy_or_the_forward_auth_endpoint(
    crm: Served, start: Start, fold: bool
) -> None:
    gw = await gateway(start, crm, policy=UNICODE_POLICY, fold=fold, extra=FORWARD_AUTH)
    for target in ODD_PATHS:
        assert await ask(gw, "GET", target) in (200, 400, 403, 404), target
        answer = await ask_endpoint(gw, target)
        assert status_of(answer) in (200, 401, 403), (target, answer[:300])


async def test_policy_explain_reads_odd_paths_without_a_traceback(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "policy.yaml").write_text(UNICODE_POLICY)
    for target in ODD_PATHS:
        out = io.StringIO()
        with redirect_stdout(out):
            code = cli(["policy", "explain", "--policies", str(folder), "--ip", "10.0.0.1",
                        "--case-insensitive-paths", "--path", target])  # fmt: skip
        assert code in (0, 1, 2), (target, code)
        assert "decision:" in out.getvalue() or code != 0, (target, out.getvalue())


# -- the CRM's logout, a way past a due code -----------------------------------------------------

CRM_COOKIE = "PHPSESSID"
DONE = web.AppKey("done", list[tuple[str, str, bool]])  # (method, action, with the session)

PHP_LOGIN = """\
login:
  mode: upstream
  path: /index.php?action=Login
  username_field: username
  success: {status: [302], cookie: PHPSESSID}
  logout: {path: /index.php?action=Logout, method: POST}
"""

PHP_POLICY = """\
defaults: {reverify: 10m, factors: [totp, recovery], enforcement: required}
users: {alice: {}}
paths:
  - {path: /index.php, allow: [authenticated]}
  - {path: "/**", allow: [authenticated]}
"""


async def php_crm(request: web.Request) -> web.StreamResponse:
    """A PHP CRM: $_GET['action'] is the last `action` of the query, its name and value
    compared exactly."""
    action = ""
    for key, value in parse_qsl(request.query_string, keep_blank_values=True):
        if key == "action":
            action = value
    signed_in = request.cookies.get(CRM_COOKIE) == "alice-session"
    request.app[DONE].append((request.method, action, signed_in))
    if action == "Login" and request.method == "POST":
        form = await request.post()
        if (form.get("username"), form.get("password")) == ("alice", "alice-demo"):
            answer = web.HTTPFound("/index.php?action=List")
            answer.set_cookie(CRM_COOKIE, "alice-session")
            raise answer
        return web.Response(text="wrong password")
    if not signed_in:
        raise web.HTTPFound("/index.php?action=Login")
    if action == "Logout" and request.method == "POST":
        answer = web.HTTPFound("/index.php?action=Login")
        answer.del_cookie(CRM_COOKIE)
        raise answer
    return web.Response(text=f"{action or 'List'}: every contact of the company")


@pytest.fixture
async def php() -> AsyncIterator[Served]:
    served = await serve_handler(php_crm, DONE)
    yield served
    await served.runner.cleanup()


async def due_session(b: Browser, php: Served) -> None:
    """alice, signed in with her code eleven minutes ago (reverify: 10m): the next request asks for a
    code again. An exported list asked now is held for the code, not sent."""
    status, _, r = await b.post(
        "/index.php?action=Login", {"username": "alice", "password": "alice-demo"}
    )
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    await b.enrol()
    await b.confirm_codes()
    assert (await b.get("/index.php?action=List"))[0] == 200
    b.gw.clock.advance(660)
    before = len(php.app[DONE])
    _, page, _ = await b.post("/index.php?action=Export", {})
    assert len(php.app[DONE]) == before, page[:300]  # the code is due: not at the CRM
    assert "every contact" not in page


async def php_gateway(php: Served, start: Start) -> Browser:
    gw = await gateway(start, php, policy=PHP_POLICY, fold=False, login=PHP_LOGIN)
    return Browser(gw)


async def test_the_logout_itself_goes_without_the_due_code(php: Served, start: Start) -> None:
    b = await php_gateway(php, start)
    try:
        await due_session(b, php)
        session = b.cookie(GATEWAY_COOKIE)
        status, _, _ = await b.post("/index.php?action=Logout", {})
        assert status == 302
        assert php.app[DONE][-1] == ("POST", "Logout", True)
        assert await b.gw.signin.book.load(session or "") is None
    finally:
        await b.close()


@pytest.mark.parametrize(
    "query",
    ["action=Logout&action=Export", "action=Export&ACTION=Logout", "action=logout"],
)
async def test_a_request_the_crm_reads_as_another_action_is_not_taken_for_its_logout(
    php: Served, start: Start, query: str
) -> None:
    b = await php_gateway(php, start)
    try:
        await due_session(b, php)
        before = len(php.app[DONE])
        status, text, _ = await b.post(f"/index.php?{query}", {})
        served = php.app[DONE][before:]
        assert [d for d in served if d[2] and d[1] != "Logout"] == [], (status, text[:200])
    finally:
        await b.close()


@pytest.mark.parametrize(
    ("query", "answer"),
    [
        ("action=Logout&action=Export", 401),
        ("action=Export&ACTION=Logout", 401),
        ("action=logout", 401),
        ("action=Logout", 200),
    ],
)
async def test_the_forward_auth_endpoint_reads_the_logout_as_strictly(
    php: Served, start: Start, query: str, answer: int
) -> None:
    """The endpoint, asked as nginx asks for a POST with the session of a due code, passes
    only the logout as written (and ends the session then); the other spellings must wait
    for the code (401: nginx sends the browser to the challenge)."""
    gw = await gateway(
        start, php, policy=PHP_POLICY, fold=False, login=PHP_LOGIN, extra=FORWARD_AUTH
    )
    b = Browser(gw)
    try:
        await due_session(b, php)
        session = b.cookie(GATEWAY_COOKIE) or ""
        cookie = f"Cookie: {GATEWAY_COOKIE}={session}\r\n"
        said = await ask_endpoint(gw, f"/index.php?{query}", "POST", cookie)
        assert status_of(said) == answer, said[:300]
        ended = await gw.signin.book.load(session) is None
        assert ended is (answer == 200)
    finally:
        await b.close()


# -- the CRM's login, written with escapes -------------------------------------------------------

LOGIN_COOKIE = "crm_session"
LOGINS = web.AppKey("logins", list[str])  # raw paths of the logins the CRM accepted


async def login_crm(request: web.Request) -> web.StreamResponse:
    """A CRM whose login form posts to a name with a letter outside ASCII (or a `~`)."""
    if request.method == "POST":
        form = await request.post()
        if (form.get("username"), form.get("password")) == ("alice", "alice-demo"):
            request.app[LOGINS].append(request.raw_path)
            answer = web.HTTPFound("/contacts")
            answer.set_cookie(LOGIN_COOKIE, "signed-in-as-alice")
            raise answer
    return web.Response(text="the login form")


@pytest.fixture
async def login_served() -> AsyncIterator[Served]:
    served = await serve_handler(login_crm, LOGINS)
    yield served
    await served.runner.cleanup()


def login_config(path: str) -> str:
    return (
        f"login:\n  mode: upstream\n  path: {path}\n  username_field: username\n"
        f"  success: {{status: [302], cookie: {LOGIN_COOKIE}}}\n"
    )


def login_policy(page: str) -> str:
    """The login form open to anyone (its GET), everything else to a signed-in user."""
    return (
        "defaults: {factors: [totp, recovery], enforcement: required}\n"
        f"users: {{alice: {{}}}}\npaths:\n  - {{path: {page}, allow: [anyone]}}\n"
        '  - {path: "/**", allow: [authenticated]}\n'
    )


@pytest.mark.parametrize(
    ("configured", "page", "sent"),
    [
        ("/anmeldung-%C3%BC", "/anmeldung-ü", "/anmeldung-%c3%bc"),
        ("/%7Eapp/signin", "/~app/signin", "/~app/signin"),
    ],
)
async def test_a_login_written_with_upper_case_escapes_is_watched_in_every_spelling(
    login_served: Served,
    start: Start,
    configured: str,
    page: str,
    sent: str,
) -> None:
    gw = await gateway(
        start, login_served, policy=login_policy(page), fold=False, login=login_config(configured)
    )
    for target in (sent, sent.upper().replace("%7E", "~")):
        answer = await post_login(gw, target)
        assert "\r\nLocation: /_gateway/enrol\r\n" in answer, (target, answer[:400])
        assert LOGIN_COOKIE not in answer
    assert len(login_served.app[LOGINS]) == 2


@pytest.mark.parametrize("configured", ["/anmeldung-%c3%bc", "/%7eapp/signin"])
async def test_a_login_written_with_lower_case_escapes_is_watched(
    login_served: Served, start: Start, configured: str
) -> None:
    page = unquote(configured)
    gw = await gateway(
        start, login_served, policy=login_policy(page), fold=False, login=login_config(configured)
    )
    answer = await post_login(gw, escaped(page))
    assert "\r\nLocation: /_gateway/enrol\r\n" in answer, answer[:400]


async def test_the_forward_auth_endpoint_judges_each_spelling_as_the_proxy(
    crm: Served, start: Start
) -> None:
    gw = await gateway(start, crm, policy=UNICODE_POLICY, extra=FORWARD_AUTH)
    for target in SPELLINGS:
        endpoint = status_of(await ask_endpoint(gw, target))
        closed = closed_on_windows(windows_name(target))
        assert endpoint == (403 if closed else 200), (target, endpoint)
        assert await ask(gw, "GET", target) == (403 if closed else 200), target


PHP_LOGINS = [
    "/INDEX.PHP?action=Login",
    "/index.php/?action=Login",
    "/Index.Php?action=Export&action=Login",  # PHP reads the last: Login
    "/index.php?%61ction=Login",
    "/index.php?action=Log%69n",
    "/index.php?action%5B%5D=x&action=Login",
]


async def test_a_php_login_is_held_in_every_spelling_on_iis(php: Served, start: Start) -> None:
    """login.path /index.php?action=Login on a case-insensitive CRM: the path in any case, the
    query in any spelling PHP reads as action=Login, held for the second factor."""
    gw = await gateway(start, php, policy=PHP_POLICY, login=PHP_LOGIN)
    for target in PHP_LOGINS:
        answer = await post_login(gw, target)
        assert "\r\nLocation: /_gateway/enrol\r\n" in answer, (target, answer[:400])
        assert CRM_COOKIE not in answer, target
    assert [d[1] for d in php.app[DONE]] == ["Login"] * len(PHP_LOGINS)


@pytest.mark.parametrize("fold", [True, False])
async def test_a_raw_utf8_original_uri_is_judged_as_its_escaped_form(
    crm: Served, start: Start, fold: bool
) -> None:
    """nginx passes $request_uri byte for byte: a client may send `ǆ` or `π` unescaped in the
    request line (nginx takes it), and the CRM decodes them to the same name."""
    gw = await gateway(start, crm, policy=UNICODE_POLICY, fold=fold, extra=FORWARD_AUTH)
    for target in ("/ǆungla/x", "/πόλις/x", "/𐐨/x", "/ǆungla%2Fx", "/ǆungla\u00a0/x"):
        answer = await ask_endpoint(gw, target)
        wanted = 200 if "\u00a0" in target else 403
        assert status_of(answer) == wanted, (target, answer[:300])
