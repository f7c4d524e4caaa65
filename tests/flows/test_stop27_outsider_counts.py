"""Outsider attacks on the change since d1975f5 (stop 27), second part: password guesses
spread over loopback addresses and the new login routes (the form, JSON, path info, the
folder, a repeated query key, a cookie, multipart, a streamed upload), who the CRM checks
against who is counted, a method override, the CRM's cookie held until the code, and
forwarding headers from an untrusted peer. One hole: a login's form is not looked at for
`_method`. Real gateway, a stand-in PHP CRM ($_REQUEST,
MySQL's name comparison), real TOTP codes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from urllib.parse import parse_qsl, urlencode

import pytest
from aiohttp import web

from gateway.model import canonical_user
from tests.conftest import Served, send_raw, serve_handler
from tests.flows.test_case_insensitive_paths import status_of
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.signin_kit import Browser, SignInGateway, Start

PASSWORDS = {"alice": "alice-demo", "bob": "bob-demo"}
CHECKED = web.AppKey("checked", list[tuple[str, str]])  # (method, user) of each password check
SERVED = web.AppKey("served", list[tuple[str, str]])  # (method, action) of every other request
FORM = "application/x-www-form-urlencoded"

POLICY = """\
defaults: {reverify: 10m, factors: [totp, recovery], enforcement: required}
roles: {admin: {}}
users: {alice: {}, bob: {roles: [admin]}}
paths:
  - {path: /index.php, methods: [DELETE], allow: [role:admin]}
  - {path: "/**", allow: [anyone]}
"""


def php_names(pairs: Iterable[tuple[str, object]]) -> dict[str, str]:
    """Names as PHP registers them: leading spaces dropped, ` ` and `.` made `_`."""
    named = {}
    for name, value in pairs:
        named[str(name).lstrip(" ").replace(" ", "_").replace(".", "_")] = str(value)
    return named


async def request_crm(request: web.Request) -> web.StreamResponse:
    """PHP without a php.ini: $_REQUEST is the query, then the body (a form, or JSON merged
    in as a framework does), then the cookies, the later winning; the login runs for any
    method. User names compared as MySQL compares them (case, accents, spaces folded)."""
    fields = php_names(parse_qsl(request.query_string, keep_blank_values=True))
    if request.content_type == "application/json":
        fields |= {k: str(v) for k, v in json.loads(await request.read() or b"{}").items()}
    elif request.method == "POST":
        fields |= php_names((await request.post()).items())
    fields |= php_names(request.cookies.items())
    action = fields.get("action", "List")
    if action == "Login" and "password" in fields:
        user = canonical_user(fields.get("username", ""))
        request.app[CHECKED].append((request.method, user))
        if PASSWORDS.get(user) == fields["password"]:
            answer = web.HTTPFound("/index.php?action=List")
            answer.set_cookie("PHPSESSID", f"{user}-session")
            raise answer
        return web.Response(text="wrong password")
    request.app[SERVED].append((fields.get("_method", request.method), action))
    return web.Response(text=f"{action}: done")


@pytest.fixture
async def crm() -> AsyncIterator[Served]:
    served = await serve_handler(request_crm, CHECKED, SERVED)
    yield served
    await served.runner.cleanup()


async def gateway(crm: Served, start: Start) -> SignInGateway:
    return await start(crm.url, login=PHP_LOGIN, policy=POLICY)


def checked(crm: Served, user: str = "alice") -> int:
    return sum(1 for _, whom in crm.app[CHECKED] if whom == user)


async def raw(
    gw: SignInGateway,
    target: str,
    body: bytes = b"",
    ctype: str = FORM,
    *,
    method: str = "POST",
    source: str = "127.0.0.1",
    head: str = "",
) -> bytes:
    """One request from `source`, byte for byte, Connection: close."""
    framing = f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n" if body else ""
    text = f"{method} {target} HTTP/1.1\r\nHost: crm\r\n{framing}{head}Connection: close\r\n\r\n"
    return await send_raw(gw.served.port, text.encode() + body, source=source)


def form(**fields: str) -> bytes:
    return urlencode(fields).encode()


def multipart(fields: list[tuple[str, str]], pad: int = 0) -> tuple[bytes, str]:
    parts = [("pad", "p" * pad)] if pad else []
    body = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
        % (name.encode(), value.encode())
        for name, value in parts + fields
    )
    return body + b"--b--\r\n", "multipart/form-data; boundary=b"


def login_routes(user: str, password: str) -> list[tuple[str, bytes, str, str]]:
    """(target, body, content type, extra head): the login as PHP reads it, every way."""
    named = {"username": user, "password": password}
    return [
        ("/index.php?action=Login", form(**named), FORM, ""),
        ("/index.php", form(action="Login", **named), FORM, ""),
        (
            "/index.php?action=List",
            json.dumps({"action": "Login", **named}).encode(),
            "application/json",
            "",
        ),
        ("/index.php/x?action=Login", form(**named), FORM, ""),
        ("/?action=Login", form(**named), FORM, ""),
        ("/", form(action="Login", **named), FORM, ""),
        ("/index.php?action=List&action=Login", form(**named), FORM, ""),
        ("/index.php?action=List", form(**named), FORM, "Cookie: action=Login\r\n"),
        ("/index.php?action=Login", *multipart(list(named.items())), ""),
    ]


# -- 1. guesses spread over addresses and routes --------------------------------------------------


async def test_one_address_mixing_routes_gets_five_checks_of_alices_password(
    crm: Served, start: Start
) -> None:
    """Nine routes, each tried twice from one address: the CRM checks alice's password at
    most limits.user_failures (5) times, whatever the route."""
    gw = await gateway(crm, start)
    for n in range(18):
        target, body, ctype, head = login_routes("alice", f"guess{n}")[n % 9]
        answer = await raw(gw, target, body, ctype, head=head, source="127.0.0.2")
        assert status_of(answer) != 500, answer[:300]
    assert checked(crm) == 5, crm.app[CHECKED]


async def test_three_addresses_mixing_routes_stop_at_the_accounts_pause(
    crm: Served, start: Start
) -> None:
    """Three addresses, each under its own five, the routes mixed: the account's pause
    (limits.account_slowdown, 10) stops the CRM's checks of alice's password across them
    (the fake clock stands still, so the pause does not end)."""
    gw = await gateway(crm, start)
    for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        for n in range(9):
            target, body, ctype, head = login_routes("ALICE ", f"{source}-{n}")[n]
            await raw(gw, target, body, ctype, head=head, source=source)
    assert 5 < checked(crm) <= 10, crm.app[CHECKED]


async def test_one_address_guessing_many_users_is_held_to_its_twenty(
    crm: Served, start: Start
) -> None:
    """25 users, one guess each, the routes in turn, from one address: at most
    limits.ip_failures (20) checks reach the CRM."""
    gw = await gateway(crm, start)
    for n in range(25):
        routes = login_routes(f"user{n}", "guess")
        target, body, ctype, head = routes[n % len(routes)]
        await raw(gw, target, body, ctype, head=head, source="127.0.0.3")
    assert len(crm.app[CHECKED]) <= 20, crm.app[CHECKED]


def decoyed(decoy: str) -> list[tuple[str, bytes, str, str]]:
    """alice's password checked while another name is written first, or in another place
    that $_REQUEST reads under the one it takes."""
    return [
        (
            "/index.php?action=Login",
            f"username={decoy}&username=alice&password=g".encode(),
            FORM,
            "",
        ),
        ("/index.php?action=Login&username=" + decoy, b"username=alice&password=g", FORM, ""),
        (
            "/index.php?action=Login",
            b"username=" + decoy.encode() + b"&password=g",
            FORM,
            "Cookie: username=alice\r\n",
        ),
        (
            "/index.php",
            f'{{"action": "Login", "username": "{decoy}", "username": "alice", "password": "g"}}'.encode(),
            "application/json",
            "",
        ),
        # PHP decodes a form's names and drops their leading spaces
        (
            "/index.php?action=Login",
            f"username={decoy}&%75sername=alice&password=g".encode(),
            FORM,
            "",
        ),
        (
            "/index.php?action=Login",
            f"username={decoy}&+username=alice&password=g".encode(),
            FORM,
            "",
        ),
        (
            "/index.php?action=Login",
            f"username={decoy}&%20username=alice&password=g".encode(),
            FORM,
            "",
        ),
    ]


@pytest.mark.parametrize("route", range(7))
async def test_a_decoy_name_beside_alices_does_not_spare_her_count(
    crm: Served, start: Start, route: int
) -> None:
    """Twelve guesses from one address, each with a new decoy name beside alice's (a
    repeated field, the query under the form, a cookie over it, a repeated JSON key): the
    CRM checks alice's password no more than five times."""
    gw = await gateway(crm, start)
    for n in range(12):
        target, body, ctype, head = decoyed(f"decoy{n}")[route]
        await raw(gw, target, body, ctype, head=head, source="127.0.0.2")
    assert checked(crm) <= 5, crm.app[CHECKED]  # refused outright: none


async def test_a_streamed_upload_over_max_body_naming_the_login_is_refused(
    crm: Served, start: Start
) -> None:
    """A multipart and a urlencoded body over login.max_body (64 KiB) with the login at
    their end, anonymous: refused before the CRM."""
    gw = await gateway(crm, start)
    body, ctype = multipart(
        [("action", "Login"), ("username", "alice"), ("password", "g")], pad=70_000
    )
    assert status_of(await raw(gw, "/index.php", body, ctype)) in {400, 413}
    big = b"pad=" + b"p" * 70_000 + b"&action=Login&username=alice&password=g"
    assert status_of(await raw(gw, "/", big)) in {400, 413}
    assert crm.app[CHECKED] == []


async def signed_in(gw: SignInGateway, user: str) -> Browser:
    b = Browser(gw)
    status, _, r = await b.post(
        "/index.php?action=Login", {"username": user, "password": PASSWORDS[user]}
    )
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    await b.enrol()
    await b.confirm_codes()
    return b


def jar(b: Browser) -> str:
    return "Cookie: " + "; ".join(f"{c.key}={c.value}" for c in b.http.cookie_jar) + "\r\n"


async def test_a_signed_in_users_streamed_guesses_for_bob_are_held(
    crm: Served, start: Start
) -> None:
    """alice, signed in, guesses bob's password in uploads over login.max_body (which
    stream): multipart, urlencoded, the login at the end. Each is refused (413), none
    checked by the CRM."""
    gw = await gateway(crm, start)
    alice = await signed_in(gw, "alice")
    try:
        fields = [("action", "Login"), ("username", "bob"), ("password", "g")]
        for n in range(7):
            body, ctype = multipart(fields, pad=70_000 + n)
            await raw(gw, "/index.php/x", body, ctype, head=jar(alice))
            big = b"pad=" + b"p" * (70_000 + n) + b"&action=Login&username=bob&password=g"
            await raw(gw, "/index.php", big, head=jar(alice))
        assert checked(crm, "bob") == 0, crm.app[CHECKED]
    finally:
        await alice.close()


# -- 2. what a rule judged against what the CRM receives ------------------------------------------


@pytest.mark.parametrize(
    ("target", "body", "ctype", "head"),
    [
        ("/index.php", b"action=Save&_method=DELETE", FORM, ""),
        ("/index.php", b'{"action": "Save", "_method": "DELETE"}', "application/json", ""),
        ("/index.php", b"action=Save", FORM, "X-HTTP-Method-Override: DELETE\r\n"),
        ("/index.php/x", b"action=Save", FORM, "X-Method-Override: DELETE\r\n"),
        ("/", b"action=Save&_method=DELETE", FORM, ""),
    ],
)
async def test_an_override_to_a_method_the_rule_refuses_does_not_reach_the_crm(
    crm: Served, start: Start, target: str, body: bytes, ctype: str, head: str
) -> None:
    """DELETE /index.php is bob's (role:admin); anonymous asks for it by override, on the
    login's path and the login's own routes too: never served as a DELETE."""
    gw = await gateway(crm, start)
    answer = await raw(gw, target, body, ctype, head=head)
    assert status_of(answer) in {400, 403, 405}, answer[:300]
    assert [s for s in crm.app[SERVED] if s[0] == "DELETE"] == []


@pytest.mark.parametrize(
    "target", ["/index.php?action=Login", "/index.php?action=List", "/index.php/x", "/"]
)
async def test_a_login_form_asking_for_a_refused_method_is_refused(
    crm: Served, start: Start, target: str
) -> None:
    """The login (in the query or the form, at the script, its path info or its folder)
    with `_method=DELETE` in the form it is read from: refused like any other such form."""
    gw = await gateway(crm, start)
    body = b"action=Login&username=alice&password=g&_method=DELETE"
    answer = await raw(gw, target, body)
    assert status_of(answer) == 400 and b"method_ambiguous" in answer, answer[:300]
    assert crm.app[CHECKED] == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
@pytest.mark.parametrize(
    "target",
    [
        "/?action=Login&username=alice&password=g",
        "/index.php/x?action=Login&username=alice&password=g",
        "/index.php?action=List&action=Login&username=alice&password=g",
        "/index.php?username=alice&password=g&action=Login",
    ],
)
async def test_a_login_by_another_method_on_the_new_routes_is_not_checked_unwatched(
    crm: Served, start: Start, method: str, target: str
) -> None:
    """The login in the query by another method, at the folder, in path info or after a
    repeated key: refused, never a password the CRM checks uncounted."""
    gw = await gateway(crm, start)
    answer = await raw(gw, target, method=method)
    assert crm.app[CHECKED] == [], (status_of(answer), answer[:300])


# -- 3. the CRM's cookie held until the code ------------------------------------------------------


@pytest.mark.parametrize("route", range(7))
async def test_the_crms_cookie_waits_for_the_code_on_every_route(
    crm: Served, start: Start, route: int
) -> None:
    """alice's right password by each route that reaches the CRM: the answer sends her to
    the enrolment and carries no PHPSESSID."""
    gw = await gateway(crm, start)
    target, body, ctype, head = login_routes("alice", "alice-demo")[route]
    answer = await raw(gw, target, body, ctype, head=head)
    if checked(crm):
        assert status_of(answer) == 303 and b"/_gateway/enrol" in answer, answer[:400]
    assert b"PHPSESSID" not in answer, answer[:400]


# -- 4. forwarding headers from an untrusted peer -------------------------------------------------


@pytest.mark.parametrize(
    "forwarded",
    [
        "X-Forwarded-For: 10.0.0.{n}\r\n",
        "Forwarded: for=10.0.0.{n}\r\n",
        "X-Real-IP: 10.0.0.{n}\r\n",
        "X-Forwarded-For: 10.0.0.{n}, 127.0.0.{n}\r\n",
    ],
)
async def test_forwarding_headers_from_an_untrusted_peer_do_not_reset_the_count(
    crm: Served, start: Start, forwarded: str
) -> None:
    """Eight guesses, the routes in turn, each naming another client address: the peer's
    own address is counted, five checks."""
    gw = await gateway(crm, start)
    routes = login_routes("alice", "g")
    for n in range(8):
        target, body, ctype, head = routes[n % 7]
        await raw(gw, target, body, ctype, head=head + forwarded.format(n=n + 1))
    assert checked(crm) == 5, crm.app[CHECKED]
