"""An outsider's attacks on the login named in the form (commit 7c98b29): bodies a PHP CRM
reads as `action=Login` while the gateway reads them otherwise. The stand-in CRM here parses
the body as PHP does (main/SAPI.c, main/rfc1867.c, main/php_variables.c): the media type cut
at `;`, `,` or a space; the boundary found by `strstr("boundary")` and cut at `,` or `;`;
part headers folded; `name` quoted with `"` or `'`; names stripped of leading spaces.
A password the CRM checked must have been counted by the gateway (or never reach the CRM).
Holes are strict xfails that pass once mended: the multipart and media-type ones and the gzip
body are mended (multipart read without the boundary, the media type cut as PHP cuts it,
request bodies never decoded on the way), and so is the padded login from a session (looked at
as it streams, its end held back)."""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, unquote_plus

import pytest
from aiohttp import web

from tests.conftest import Served, serve_handler
from tests.flows.test_case_insensitive_paths import status_of
from tests.flows.test_login_in_form import OPEN_POLICY, raw_post, signed_in
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.signin_kit import Start, audit_trail

PHP_SESSION = "PHPSESSID"
PASSWORDS = {"alice": "alice-demo", "bob": "bob-demo"}
# the `action` of each request the CRM served
ACTIONS = web.AppKey("actions", list[str])


def php_media_type(content_type: str) -> str:
    """SAPI.c: lowercased, cut at the first `;`, `,` or space."""
    return re.split("[;, ]", content_type, maxsplit=1)[0].lower()


def php_boundary(content_type: str) -> str | None:
    """rfc1867.c: the first `boundary` (case-sensitive, then any case), after its `=`;
    quoted up to the next `"`, else cut at `,` or `;`."""
    at = content_type.find("boundary")
    if at < 0:
        at = content_type.lower().find("boundary")
    equals = content_type.find("=", at) if at >= 0 else -1
    if equals < 0:
        return None
    rest = content_type[equals + 1 :]
    if rest.startswith('"'):
        end = rest.find('"', 1)
        return rest[1:end] if end > 0 else None
    return re.split("[,;]", rest, maxsplit=1)[0]


def php_part_name(disposition: str) -> str | None:
    """rfc1867.c: `;`-split pairs; the key `name` in any case; its value quoted with `"` or
    `'` (php_ap_getword_conf), else up to whitespace."""
    for pair in disposition.split(";"):
        key, eq, value = pair.lstrip().partition("=")
        if not eq or key.lower() != "name":
            continue
        value = value.lstrip()
        if value[:1] in ('"', "'"):
            end = value.find(value[0], 1)
            return value[1:end] if end > 0 else value[1:]
        return value.split()[0] if value.split() else ""
    return None


def php_multipart(body: bytes, boundary: str) -> list[tuple[str, str]]:
    """Each part's (name, value): lines end at LF (a CR before it dropped), a header line
    starting with whitespace continues the one before, content up to `[CR]LF--boundary`."""
    fields = []
    delimiter = b"--" + boundary.encode("latin-1")
    for piece in body.split(delimiter)[1:]:
        if piece.startswith(b"--"):
            break
        lines = piece.split(b"\n")[1:]  # the rest of the boundary's line
        headers: list[list[str]] = []
        for at, raw in enumerate(lines):
            line = raw.rstrip(b"\r").decode("latin-1")
            if not line:
                content = b"\n".join(lines[at + 1 :])
                break
            if line[0].isspace() and headers:
                headers[-1][1] += line
            elif ":" in line:
                key, _, value = line.partition(":")
                headers.append([key, value.lstrip()])
        else:
            continue
        content = content[:-2] if content.endswith(b"\r\n") else content.removesuffix(b"\n")
        for key, value in headers:
            name = php_part_name(value) if key.lower() == "content-disposition" else None
            if name is not None:
                fields.append((name, content.decode("latin-1")))
    return fields


def php_post(body: bytes, content_type: str) -> dict[str, str]:
    """$_POST: the last value of each name, a leading space of a name dropped."""
    kind = php_media_type(content_type)
    pairs: list[tuple[str, str]] = []
    if kind == "application/x-www-form-urlencoded":
        for piece in body.decode("latin-1").split("&"):
            name, _, value = piece.partition("=")
            pairs.append((unquote_plus(name), unquote_plus(value)))
    elif kind == "multipart/form-data":
        boundary = php_boundary(content_type)
        pairs = php_multipart(body, boundary) if boundary else []
    return {name.lstrip(" ").partition("\x00")[0]: value for name, value in pairs}


async def php_crm(request: web.Request) -> web.StreamResponse:
    """A PHP CRM reading $_REQUEST (the form's `action` over the query's), users alice and
    bob, each with a PHPSESSID of their own."""
    form = php_post(await request.read(), request.headers.get("Content-Type", ""))
    action = dict(parse_qsl(request.query_string, keep_blank_values=True)).get("action", "")
    if request.method == "POST":
        action = form.get("action", action)
    request.app[ACTIONS].append(action)
    return php_answer(request, action, form, "every contact of the company")


def php_answer(
    request: web.Request, action: str, form: dict[str, str], listed: str
) -> web.StreamResponse:
    """What the PHP stand-ins answer once they have read `action` and the form: a login
    checked (302 with the user's PHPSESSID, or the form again), the login page without a
    session, else the action and `listed`."""
    if action == "Login" and request.method == "POST":
        user = form.get("username", "")
        if PASSWORDS.get(user) == form.get("password"):
            answer = web.HTTPFound("/index.php?action=List")
            answer.set_cookie(PHP_SESSION, f"{user}-session")
            raise answer
        return web.Response(text="wrong password")
    if request.cookies.get(PHP_SESSION) not in ("alice-session", "bob-session"):
        raise web.HTTPFound("/index.php?action=Login")
    return web.Response(text=f"{action or 'List'}: {listed}")


@pytest.fixture
async def php() -> AsyncIterator[Served]:
    served = await serve_handler(php_crm, ACTIONS)
    yield served
    await served.runner.cleanup()


def checked(php: Served) -> int:
    """Passwords the CRM checked."""
    return php.app[ACTIONS].count("Login")


async def counted(served: Served) -> int:
    """Passwords the gateway counted (failed or succeeded at the CRM)."""
    return len(await audit_trail(served, "signin.crm_failed", "signin.crm_ok"))


def part(name_header: str, value: str, end: str = "\r\n") -> str:
    return f"{name_header}{end}{end}{value}{end}"


def multipart(boundary: str, *parts: str, end: str = "\r\n", preamble: str = "") -> bytes:
    body = preamble + "".join(f"--{boundary}{end}{p}" for p in parts) + f"--{boundary}--{end}"
    return body.encode()


def login_parts(action_header: str = 'Content-Disposition: form-data; name="action"') -> list[str]:
    return [
        part(action_header, "Login"),
        part('Content-Disposition: form-data; name="username"', "alice"),
        part('Content-Disposition: form-data; name="password"', "guess"),
    ]


async def attempt(php: Served, start: Start, content_type: str, body: bytes) -> tuple[int, int]:
    """An anonymous POST /index.php?action=List of `body`: (passwords the CRM checked,
    passwords the gateway counted). A 500 fails the test."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    head = f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    answer = await raw_post(gw, "/index.php?action=List", head, body)
    assert status_of(answer) != 500, answer[:300]
    return checked(php), await counted(gw.served)


def hole(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"HOLE: {reason}")


async def test_the_stand_in_reads_a_plain_multipart_login(php: Served, start: Start) -> None:
    """The stand-in's parser itself: a browser's multipart login, which the gateway takes
    for the login and refuses (login_ambiguous) before the CRM."""
    body = multipart("AAA", *login_parts())
    assert php_post(body, "multipart/form-data; boundary=AAA")["action"] == "Login"
    assert await attempt(php, start, "multipart/form-data; boundary=AAA", body) == (0, 0)


@pytest.mark.parametrize(
    ("content_type", "boundary", "end", "preamble"),
    [
        ("multipart/form-data; boundary=AAA", "AAA", "\n", ""),  # LF-only line ends
        ('multipart/form-data; boundary="A;A"', "A;A", "\r\n", ""),  # quoted
        ("Multipart/Form-Data; BOUNDARY=AAA", "AAA", "\r\n", ""),  # any case
        ("multipart/form-data; boundary=AAA", "AAA", "\r\n", "junk\r\n--AA\r\n"),  # preamble
        ("multipart/form-data; charset=utf-8; boundary=AAA", "AAA", "\r\n", ""),
    ],
)
async def test_multipart_spellings_php_reads_are_never_unwatched(
    php: Served, start: Start, content_type: str, boundary: str, end: str, preamble: str
) -> None:
    parts = [p.replace("\r\n", end) for p in login_parts()]
    body = multipart(boundary, *parts, end=end, preamble=preamble)
    assert php_post(body, content_type)["action"] == "Login"
    crm, gateway = await attempt(php, start, content_type, body)
    assert crm == gateway


async def test_a_part_named_twice_is_never_unwatched(php: Served, start: Start) -> None:
    """PHP keeps the last `action`; the gateway takes the pair from any of them."""
    body = multipart(
        "AAA", part('Content-Disposition: form-data; name="action"', "List"), *login_parts()
    )
    crm, gateway = await attempt(php, start, "multipart/form-data; boundary=AAA", body)
    assert crm == gateway


@pytest.mark.parametrize(
    "body",
    [
        b"%20action=Login&username=alice&password=guess",  # PHP drops a leading space
        b"action%00x=Login&username=alice&password=guess",  # PHP cuts a name at NUL
        b"action=List&action=Login&username=alice&password=guess",  # the last wins
        b"act%69on=L%6Fgin&username=alice&password=guess",
    ],
)
async def test_urlencoded_spellings_php_reads_are_counted(
    php: Served, start: Start, body: bytes
) -> None:
    crm, gateway = await attempt(php, start, "application/x-www-form-urlencoded", body)
    assert crm == gateway


MP = "multipart/form-data; boundary=AAA"
FORM_LOGIN = b"action=Login&username=alice&password=guess"
# Each a body PHP reads as the login and a parser of its own might not: the type as PHP cuts
# it, the boundary as PHP finds it, a part's name as PHP reads it.
READ_AS_PHP_READS = [
    pytest.param("multipart/form-data; boundary=AAA,x", multipart("AAA", *login_parts()), id="boundary-cut-at-comma"),
    pytest.param("multipart/form-data; xboundary=AAA; boundary=BBB", multipart("AAA", *login_parts()), id="first-boundary-substring"),
    pytest.param("multipart/form-data,boundary=AAA", multipart("AAA", *login_parts()), id="media-type-cut-at-comma"),
    pytest.param("application/x-www-form-urlencoded, text/plain", FORM_LOGIN, id="urlencoded-comma"),
    pytest.param("application/x-www-form-urlencoded x", FORM_LOGIN, id="urlencoded-space"),
    pytest.param(MP, multipart("AAA", *login_parts('Content-Disposition: form-data;\r\n name="action"')), id="folded-disposition"),
    pytest.param(MP, multipart("AAA", *login_parts('Content-Disposition: form-data; x-name="zzz"; name="action"')), id="x-name-first"),
    pytest.param(MP, multipart("AAA", *login_parts("Content-Disposition: form-data; name='action'")), id="single-quoted-name"),
]  # fmt: skip


@pytest.mark.parametrize(("content_type", "body"), READ_AS_PHP_READS)
async def test_a_login_php_reads_is_counted_or_refused(
    php: Served, start: Start, content_type: str, body: bytes
) -> None:
    assert php_post(body, content_type)["action"] == "Login"
    crm, gateway = await attempt(php, start, content_type, body)
    assert crm == gateway


@pytest.mark.parametrize(("extra", "status"), [(0, 200), (1, 413)])
async def test_an_anonymous_form_at_and_over_max_body(
    php: Served, start: Start, extra: int, status: int
) -> None:
    """Exactly login.max_body (64 KiB) is read and counted; one byte more is 413."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    login = b"&action=Login&username=alice&password=guess"
    body = b"pad=" + b"p" * (64 * 1024 - 4 - len(login) + extra) + login
    head = f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
    answer = await raw_post(gw, "/index.php?action=List", head, body)
    assert status_of(answer) == status, answer[:300]
    assert checked(php) == await counted(gw.served) == (1 if status == 200 else 0)


PADDING = "p" * 70_000  # past login.max_body (64 KiB): a signed-in user's body streams
PADDED = [
    pytest.param(
        "application/x-www-form-urlencoded",
        f"pad={PADDING}&action=Login&username=bob&password=bob-demo".encode(),
        id="urlencoded",
    ),
    pytest.param(
        "multipart/form-data; boundary=AAA",
        multipart(
            "AAA",
            part('Content-Disposition: form-data; name="pad"', PADDING),
            part("Content-Disposition: form-data; name='action'", "Login"),
            part('Content-Disposition: form-data; name="username"', "bob"),
            part('Content-Disposition: form-data; name="password"', "bob-demo"),
        ),
        id="multipart",
    ),
    pytest.param(
        "application/x-www-form-urlencoded",
        f"pad={PADDING}&action=Login&username=bob&password=bob-demo&x".encode(),
        id="cut-before-the-last-pair",
    ),
]


@pytest.mark.parametrize(("content_type", "body"), PADDED)
async def test_a_signed_in_users_padded_login_for_another_user(
    php: Served, start: Start, content_type: str, body: bytes
) -> None:
    """alice, signed in, posts bob's login padded past 64 KiB with its length announced: it
    streams (an upload), looked at on the way; its end is held back and it is refused (413)
    once it names the login: the CRM never checks bob's password, nothing to count."""
    b = await signed_in(php, start)
    try:
        checked_before = checked(php)
        headers = {"Content-Type": content_type}
        async with b.http.post(
            b.gw.url + "/index.php?action=List", data=body, headers=headers, allow_redirects=False
        ) as r:
            assert r.status == 413, await r.text()
            cookies = r.headers.getall("Set-Cookie", [])
        assert not any("bob-session" in c for c in cookies), cookies
        assert checked(php) == checked_before
        [refused] = await audit_trail(b.gw.served, "signin.refused")
        assert refused.reason == "login_in_upload"
        # alice's own uploads of that size still go
        upload = f"pad={PADDING}&action=Save&note=x".encode()
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        async with b.http.post(
            b.gw.url + "/index.php", data=upload, headers=form, allow_redirects=False
        ) as r:
            assert (r.status, await r.text()) == (200, "Save: every contact of the company")
    finally:
        await b.close()


async def test_a_right_password_past_the_parser_gets_no_crm_cookie(
    php: Served, start: Start
) -> None:
    """The right password in a multipart login the gateway misreads (media type cut at `,`):
    the CRM takes it, but its PHPSESSID is dropped on the way to an anonymous browser."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    parts = login_parts()
    parts[2] = part('Content-Disposition: form-data; name="password"', "alice-demo")
    body = multipart("AAA", *parts)
    head = f"Content-Type: multipart/form-data,boundary=AAA\r\nContent-Length: {len(body)}\r\n"
    answer = await raw_post(gw, "/index.php?action=List", head, body)
    assert b"alice-session" not in answer, answer[:400]


@pytest.mark.parametrize(("target", "status"), [("/index.php?action=List", 415), ("/other", 200)])
async def test_a_gzip_body_reaches_the_crm_as_sent_or_not_at_all(
    start: Start, target: str, status: int
) -> None:
    """A form with `Content-Encoding: gzip`. To the login's path, where the gateway reads
    forms to find the login, it cannot read it as a CRM that decodes bodies (Apache's
    DEFLATE input filter) would: 415, never at the CRM. Elsewhere it streams, and the CRM
    gets the bytes its headers describe. (aiohttp decoded it on the way, header kept.)"""
    arrived: list[bytes] = []

    async def crm(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        arrived.append(head + await reader.readexactly(length))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(crm, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        gw = await start(f"http://127.0.0.1:{port}", login=PHP_LOGIN, policy=OPEN_POLICY)
        body = gzip.compress(b"action=Login&username=alice&password=guess")
        head = (
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(body)}\r\n"
        )
        answer = await raw_post(gw, target, head, body)
        assert status_of(answer) == status, answer[:300]
        if status == 415:
            assert arrived == []
            assert b'"error": "body_encoded"' in answer
        else:
            [sent] = arrived
            assert b"content-encoding: gzip" in sent.lower() and sent.endswith(body)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_padded_login_kept_for_a_due_code_is_refused(php: Served, start: Start) -> None:
    """alice's code is due (reverify 10m, eleven minutes on): the padded login she posts is
    to be kept for after the code, and is read for that through the same scan: refused (413)
    before it is kept, so it never reaches the CRM after her code either."""
    b = await signed_in(php, start)
    try:
        b.gw.clock.advance(660)
        before = checked(php)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        body = f"pad={PADDING}&action=Login&username=bob&password=bob-demo".encode()
        async with b.http.post(
            b.gw.url + "/index.php?action=List", data=body, headers=headers, allow_redirects=False
        ) as r:
            assert r.status == 413, await r.text()
        assert checked(php) == before
        [refused] = await audit_trail(b.gw.served, "signin.refused")
        assert refused.reason == "login_in_upload"
        assert await audit_trail(b.gw.served, "signin.verification_due")  # it was due
    finally:
        await b.close()
