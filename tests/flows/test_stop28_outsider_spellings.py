"""Outsider attacks (stop 28), third part: the login in spellings not yet tried. Its path as a
CRM on IIS (upstream.case_insensitive_paths) reads it, behind a front controller; `action`
in a multipart part as PHP's rfc1867.c reads a name; forms read as ASP.NET Core reads them.

Hole: a CRM binding the login's field from the form before the query (ASP.NET Core's model
binding: FormValueProvider before QueryStringValueProvider) reads a part's name through RFC
2047 (`name="=?utf-8?B?YWN0aW9u?="` is `action`: ContentDispositionHeaderValue.GetName's
TryDecodeMime), a part's value through its byte order mark or charset (MultipartSection.
ReadAsStringAsync), an urlencoded form in its Content-Type's charset (FormFeature); FormScan
read UTF-8 bytes: the CRM checked each password unaudited, past the limit (its cookie held).
Mended in stop 28: such a body at the login's path is taken for the login (and refused), a
value read past its byte order mark. What held: every path spelling, PHP's readings of a
part's name, the forward-auth endpoint.
"""

from __future__ import annotations

import re
from base64 import b64decode
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, unquote, unquote_to_bytes

import pytest
from aiohttp import web
from yarl import URL

from gateway.fields import media_type
from tests.conftest import Served, serve_handler
from tests.flows.test_case_insensitive_paths import FOLD, ask_endpoint, status_of
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.flows.test_login_in_form import (  # noqa: F401 (the php fixture)
    OPEN_POLICY,
    passwords_checked,
    php,
    raw_post,
)
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.flows.test_stop28_outsider_login_parsing import (
    FORM,
    LOGINS,
    PASSWORDS,
    PATH_LOGIN,
    Handler,
    framework_crm,
    laravel_input,
    laravel_route,
)
from tests.flows.test_stop28_outsider_login_parsing_2 import ANYONE
from tests.signin_kit import Start, audit_trail


def _head(content_type: str, body: bytes) -> str:
    return f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"


# -- the login at /login, by a Laravel CRM on IIS ------------------------------------------


def iis_laravel() -> Handler:
    """Laravel on IIS, generously: the path decoded, in any case, a `;` parameter dropped,
    the front controller's name taken off (test_stop28_outsider_login_parsing.laravel_route)."""
    inner = framework_crm(laravel_input)

    async def crm(request: web.Request) -> web.StreamResponse:
        raw = unquote(request.raw_path.partition("?")[0]).lower()
        route = laravel_route(re.sub(";[^/]*", "", raw))
        return await inner(request.clone(rel_url=URL(route)))

    return crm


IIS_FRONT = ["/INDEX.PHP/login", "/Index.php/Login/", "/index.php/LOGIN", "/index.php%2Flogin"]
IIS_FRONT += ["/index.php;x/login", "/Index.Php//Login//", "/index.php/./Login"]


@pytest.mark.parametrize("target", IIS_FRONT)
async def test_the_login_behind_the_front_controller_on_iis_is_watched(
    start: Start, target: str
) -> None:
    """What held: refused (400), or bob's check (the stand-in logs him in: it routes each
    spelling to its login) counted and audited, his cookie held for his code."""
    crm = await serve_handler(iis_laravel(), LOGINS)
    gw = await start(
        crm.url, login=PATH_LOGIN, policy=ANYONE, upstream_extra=FOLD, extra=FORWARD_AUTH
    )
    try:
        body = b"username=bob&password=bob-demo"
        answer = await raw_post(gw, target, _head(FORM, body), body)
        watched = await audit_trail(gw.served, "signin.crm_ok", "signin.crm_failed")
        taken = ([e.user for e in watched], crm.app[LOGINS]) == (["bob"], ["bob"])
        assert status_of(answer) >= 400 or taken, (answer[:200], crm.app[LOGINS], watched)
        assert b"crm_session=" not in answer
        said = await ask_endpoint(gw, target, "POST", f"Content-Type: {FORM}\r\n")
        assert status_of(said) in (400, 403), said[:300]
    finally:
        await crm.runner.cleanup()


# -- the login at /index.php?action=Login, by a PHP CRM on IIS -------------------------------

PHP_IIS = ["/INDEX.PHP?ACTION=LOGIN", "/Index.Php/?action=Login", "/INDEX.PHP/?Action=Login"]
PHP_IIS += ["/Index.php?action=Login", "/index.PHP/x?action=login", "/INDEX.PHP%2F?action=Login"]


@pytest.mark.parametrize("target", PHP_IIS)
async def test_the_php_login_on_iis_in_any_case_is_the_login(
    php: Served,  # noqa: F811 (the fixture, imported)
    start: Start,
    target: str,
) -> None:
    """What held: alice's wrong password counted as hers, or refused; the endpoint refuses."""
    gw = await start(
        php.url, login=PHP_LOGIN, policy=OPEN_POLICY, upstream_extra=FOLD, extra=FORWARD_AUTH
    )
    body = b"username=alice&password=guess"
    answer = await raw_post(gw, target, _head(FORM, body), body)
    failed = [e.user for e in await audit_trail(gw.served, "signin.crm_failed")]
    assert status_of(answer) == 400 or failed == ["alice"], answer[:300]
    assert status_of(await ask_endpoint(gw, target, "POST")) in (400, 403)


# -- multipart: the login's `action` as PHP's rfc1867.c reads a part's name ---------------------

BOUNDARY = "b0und"


def part(name: str) -> str:
    return f'Content-Disposition: form-data; name="{name}"'


def multipart(*parts: tuple[str, bytes], password: bytes = b"guess") -> bytes:
    """A multipart body of (head lines, content) parts, alice's user and a guessed password
    after them, CRLF throughout."""
    parts += ((part("username"), b"alice"), (part("password"), password))
    out = b"".join(f"--{BOUNDARY}\r\n{head}\r\n\r\n".encode() + v + b"\r\n" for head, v in parts)
    return out + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
# Each a head PHP reads as the part `action` (or `action[]`): `name` in any case and quoting,
# the last of two, folded, with a space PHP drops; the header's name in any case.
CD = "Content-Disposition: form-data;"
PHP_HEADS = [part("action[]"), part("action[0]"), part(" action"), f"{CD} name=action"]
PHP_HEADS += [f'{CD} NAME="action"', f"{CD} name='action'", f'{CD} name="x"; name="action"']
PHP_HEADS += [f'{CD}\r\n name="action"', 'content-disposition: FORM-DATA;name="action"']
# PHP reads no `name*`; a part with a file name goes to $_FILES, not $_POST.
NOT_IN_POST = [f"{CD} name*=utf-8''action", part('action"; filename="x.txt')]


@pytest.mark.parametrize(
    ("head", "in_post"), [(h, True) for h in PHP_HEADS] + [(h, False) for h in NOT_IN_POST]
)
async def test_a_multipart_part_php_reads_as_the_action_is_refused(
    php: Served,  # noqa: F811 (the fixture, imported)
    start: Start,
    head: str,
    in_post: bool,
) -> None:
    """What held: a part PHP puts in $_POST as `action` is refused (400 login_ambiguous: a
    multipart login is not read); one it leaves out is refused or checks no password."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    body = multipart((head, b"Login"))
    answer = await raw_post(gw, "/index.php?action=List", _head(MULTIPART, body), body)
    assert status_of(answer) == 400 or not in_post, answer[:300]
    assert passwords_checked(php) == 0


# -- the same forms read as ASP.NET Core reads them -----------------------------------------

ASPNET_LOGIN = PATH_LOGIN.replace("path: /login", "path: /Account?action=Login")
CHECKED = web.AppKey("checked", list[str])  # the users whose password the CRM checked
_MIME_WORD = re.compile(r"=\?([^?]+)\?([bBqQ])\?([^?]*)\?=")
_BOMS = {b"\xef\xbb\xbf": "utf-8-sig", b"\xff\xfe": "utf-16", b"\xfe\xff": "utf-16"}


def _charset(content_type: str) -> str:
    found = re.search(r"(?i)charset\s*=\s*\"?([\w-]+)", content_type)
    return found.group(1) if found else "utf-8"


def _part(head: bytes, content: bytes) -> tuple[str, str] | None:
    """A form part as ASP.NET Core reads it: its name (ContentDispositionHeaderValue.Name:
    `name` in any case, an RFC 2047 word decoded by TryDecodeMime; None for a file), its
    value by its byte order mark, else its charset (MultipartSection.ReadAsStringAsync)."""
    lines = (line.partition(":") for line in head.decode().split("\r\n"))
    fields = {k.strip().lower(): v for k, _, v in lines}
    params = fields.get("content-disposition", "").split(";")
    named = {
        k.strip().lower(): v.strip().strip('"') for k, _, v in (p.partition("=") for p in params)
    }
    if "filename" in named or "name" not in named:
        return None
    name, word = named["name"], _MIME_WORD.fullmatch(named["name"])
    if word is not None:
        charset, kind, text = word.groups()
        raw = b64decode(text) if kind in "bB" else unquote_to_bytes(text.replace("=", "%"))
        name = raw.decode(charset)
    codec = next((c for bom, c in _BOMS.items() if content.startswith(bom)), None)
    return name, content.decode(codec or _charset(fields.get("content-type", "")), "replace")


def aspnet_form(content_type: str, body: bytes) -> dict[str, str]:
    """Request.Form as ASP.NET Core reads it (an urlencoded form in its charset: FormFeature),
    names in any case, the first value of each (FirstValue)."""
    pairs: list[tuple[str, str] | None] = []
    if media_type(content_type) == FORM:
        pairs += parse_qsl(body.decode(_charset(content_type), "replace"))
    elif media_type(content_type) == "multipart/form-data":
        for piece in body.split(f"--{BOUNDARY}".encode())[1:-1]:
            pairs.append(_part(*piece.strip(b"\r\n").partition(b"\r\n\r\n")[::2]))
    found: dict[str, str] = {}
    for key, value in filter(None, pairs):
        found.setdefault(key.lower(), value)
    return found


async def aspnet_crm(request: web.Request) -> web.StreamResponse:
    """POST /Account runs its login when the bound `action` is Login: the form's value before
    the query's (FormValueProvider first); a right password 302s with its session cookie."""
    form = aspnet_form(request.headers.get("Content-Type", ""), await request.read())
    query = {k.lower(): v for k, v in reversed(parse_qsl(request.query_string))}
    action = form.get("action", query.get("action", ""))
    if (request.method, request.path.lower(), action.lower()) == ("POST", "/account", "login"):
        user = form.get("username", "")
        request.app[CHECKED].append(user)
        if PASSWORDS.get(user) == form.get("password"):
            answer = web.HTTPFound("/home")
            answer.set_cookie("crm_session", f"{user}-session")
            raise answer
        return web.Response(text="wrong password")
    return web.Response(text="account page")


UTF16 = "action=Login&username=alice&password=".encode("utf-16")
UTF16_HEAD = f"{part('action')}\r\nContent-Type: text/plain; charset=utf-16"
ASPNET_BODIES = {  # each: (Content-Type, the part or form naming the login, before the password)
    "mime-word-name": (MULTIPART, (part("=?utf-8?B?YWN0aW9u?="), b"Login")),
    "mime-word-q-name": (MULTIPART, (part("=?utf-8?Q?a=63tion?="), b"Login")),
    "bom-value": (MULTIPART, (part("action"), b"\xef\xbb\xbfLogin")),
    "utf16-part": (MULTIPART, (UTF16_HEAD, "Login".encode("utf-16"))),
    "utf16-form": (f"{FORM}; charset=utf-16", ("", UTF16)),
}


def aspnet_body(attack: str, password: str) -> tuple[str, bytes]:
    content_type, naming = ASPNET_BODIES[attack]
    if content_type == MULTIPART:
        return content_type, multipart(naming, password=password.encode())
    return content_type, naming[1] + password.encode("utf-16-le")


@pytest.fixture
async def aspnet() -> AsyncIterator[Served]:
    served = await serve_handler(aspnet_crm, CHECKED)
    yield served
    await served.runner.cleanup()


async def test_the_aspnet_stand_in_reads_the_form_first(aspnet: Served, start: Start) -> None:
    """The set-up, and what held: the plain spellings refused (multipart) or counted; the
    endpoint (which never sees a body) refuses a form to the login's path (403); and the
    CRM's cookie is never handed to the client."""
    gw = await start(aspnet.url, login=ASPNET_LOGIN, policy=ANYONE, extra=FORWARD_AUTH)
    plain = multipart((part("Action"), b"LOGIN"))
    answer = await raw_post(gw, "/Account?action=List", _head(MULTIPART, plain), plain)
    assert status_of(answer) == 400 and aspnet.app[CHECKED] == [], answer[:300]
    body = b"Action=Login&username=alice&password=guess"
    answer = await raw_post(gw, "/account?action=List", _head(FORM, body), body)
    failed = [e.user for e in await audit_trail(gw.served, "signin.crm_failed")]
    assert (status_of(answer), failed, aspnet.app[CHECKED]) == (200, ["alice"], ["alice"])
    for content_type in (MULTIPART, f"{FORM}; charset=utf-16"):
        said = await ask_endpoint(gw, "/Account?action=List", "POST", _head(content_type, b""))
        assert status_of(said) == 403 and b"login_not_proxied" in said, said[:300]
    # A name as an RFC 2047 word: refused before the CRM checks the right password (it
    # reached the CRM uncounted before stop 28's mend, its cookie held back).
    content_type, body = aspnet_body("mime-word-name", "alice-demo")
    answer = await raw_post(gw, "/Account?action=List", _head(content_type, body), body)
    assert (status_of(answer), aspnet.app[CHECKED]) == (400, ["alice"]), answer[:300]
    assert b"crm_session=" not in answer, answer[:300]


@pytest.mark.parametrize("attack", list(ASPNET_BODIES))
async def test_a_form_aspnet_reads_as_the_login_is_watched(
    aspnet: Served, start: Start, attack: str
) -> None:
    """Safe: refused (400), or alice's guesses counted, audited, and stopped by the limit
    (429 from the sixth). Before stop 28's mend: eight passwords checked by the CRM (200
    `wrong password` seven times, then 302 for the right one), nothing audited, no 429."""
    gw = await start(aspnet.url, login=ASPNET_LOGIN, policy=ANYONE)
    statuses = []  # seven wrong guesses, then the right password
    for password in ["guess"] * 7 + ["alice-demo"]:
        content_type, body = aspnet_body(attack, password)
        answer = await raw_post(gw, "/Account?action=List", _head(content_type, body), body)
        statuses.append(status_of(answer))
    failed = [e.user for e in await audit_trail(gw.served, "signin.crm_failed")]
    assert statuses[5] in (400, 429) and failed in ([], ["alice"] * 5), (statuses, failed)
