"""Outsider attacks (stop 28) on how the CRM's login is parsed: the gateway reads one user from
the login's body, a CRM's framework another. Two holes, both on a login told apart by its
path (`/login`), where crmlogin.handle reads the body with identity.login_user:

- Laravel takes the body for JSON when the Content-Type *contains* `/json` or `+json`
  (Illuminate\\Http\\Concerns\\InteractsWithContentTypes::isJson is
  `Str::contains($this->header('CONTENT_TYPE'), ['/json', '+json'])`, and
  Request::getInputSource returns $this->json() then), whatever its media type; the gateway
  reads `application/x-www-form-urlencoded; x=/json` as a form.
- ASP.NET Core reads form field names in any case (FormCollection and its model binding's
  value providers use StringComparer.OrdinalIgnoreCase, and a string property binds
  ValueProviderResult.FirstValue), and JSON property names in any case (the web defaults of
  System.Text.Json: PropertyNameCaseInsensitive, the last duplicate wins); the gateway reads
  `username` only as spelled.

Either way alice, who knows bob's password, gets bob's CRM session with her own second
factor (or with one she enrols then, having none): bob's is never asked. Nor need she be
anyone: a name nobody has (mallory) is asked to enrol, with bob's password alone. What held: PHP's
name and value spellings of `action=Login` in the form and the query, and the forward-auth
endpoint asked about the same login routes. The login behind a front controller
(`/index.php/login`, `/contacts?action=Login`): test_stop28_outsider_login_parsing_2.py.
Real gateway, stand-in CRMs, real TOTP codes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from urllib.parse import parse_qsl

import pytest
from aiohttp import web

from gateway.fields import media_type
from tests.conftest import Served, serve_handler
from tests.flows.test_case_insensitive_paths import ask_endpoint, status_of
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.flows.test_login_in_form import OPEN_POLICY, SERVED, php, raw_post  # noqa: F401 (fixture)
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.signin_kit import Browser, Start, audit_trail

PASSWORDS = {"alice": "alice-demo", "bob": "bob-demo"}
LOGINS = web.AppKey("logins", list[str])  # the users whose password the CRM accepted
Reader = Callable[[str, bytes], dict[str, object]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FORM = "application/x-www-form-urlencoded"

PATH_LOGIN = """\
login:
  mode: upstream
  path: /login
  username_field: username
  success: {status: [302], cookie: crm_session}
"""
POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: required}
users: {alice: {}, bob: {}}
paths:
  - {path: "/**", allow: [authenticated]}
"""


def laravel_input(content_type: str, body: bytes) -> dict[str, object]:
    """Request::input() of Laravel: the JSON body when isJson() (`/json` or `+json` anywhere
    in the Content-Type), else $_POST, which PHP fills only for an urlencoded (or multipart)
    media type, the last of a repeated name winning (main/php_variables.c)."""
    if "/json" in content_type or "+json" in content_type:
        try:
            found = json.loads(body)  # json_decode: the last duplicate key wins, as here
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}
    if media_type(content_type) != FORM:
        return {}
    return dict(parse_qsl(body.decode(), keep_blank_values=True))


def aspnet_input(content_type: str, body: bytes) -> dict[str, object]:
    """An ASP.NET Core login model bound from the form or JSON body: names in any case; a
    form's first value of a name (FirstValue), JSON's last property (System.Text.Json)."""
    found: dict[str, object] = {}
    if media_type(content_type) == "application/json":
        for key, value in json.loads(body, object_pairs_hook=list):
            found[key.lower()] = value
    elif media_type(content_type) == FORM:
        for key, value in parse_qsl(body.decode(), keep_blank_values=True):
            found.setdefault(key.lower(), value)
    return found


def laravel_route(path: str) -> str:
    """The path Laravel routes: Symfony's Request::getPathInfo() with the front controller's
    name taken off (`/index.php/login` is `/login`: Laravel's nginx config splits the path
    info at `index.php`, Apache's AcceptPathInfo does for any PHP script), its slashes
    trimmed (Request::path() is `trim($pathInfo, '/')`)."""
    if path == "/index.php" or path.startswith("/index.php/"):
        path = path[len("/index.php") :]
    return "/" + path.strip("/")


def framework_crm(
    read: Reader, users: Mapping[str, str] = PASSWORDS, named: Callable[[str], str] = str
) -> Handler:
    """A CRM reading its login with `read` and finding its user as its database would
    (`named`: the name as the collation compares it): POST /login (302 and its session
    cookie on the right password, else its form again); every other page is its session
    user's."""

    async def crm(request: web.Request) -> web.StreamResponse:
        path = laravel_route(request.path) if read is laravel_input else request.path
        if (request.method, path) == ("POST", "/login"):
            given = read(request.headers.get("Content-Type", ""), await request.read())
            typed, password = given.get("username"), given.get("password")
            found = [u for u in users if isinstance(typed, str) and named(u) == named(typed)]
            if found and users[found[0]] == password:
                request.app[LOGINS].append(found[0])
                answer = web.HTTPFound("/home")
                answer.set_cookie("crm_session", f"{found[0]}-session")
                raise answer
            return web.Response(text="wrong password")
        user = request.cookies.get("crm_session", "").removesuffix("-session")
        if user not in users:
            raise web.HTTPFound("/login")
        return web.Response(text=f"home of {user}")

    return crm


FRAMEWORKS = {"laravel": laravel_input, "aspnet": aspnet_input}


@pytest.fixture(params=list(FRAMEWORKS))
async def crm(request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    served = await serve_handler(framework_crm(FRAMEWORKS[request.param]), LOGINS)
    yield served
    await served.runner.cleanup()


async def sign_in_so(b: Browser, content_type: str, body: bytes) -> tuple[int, str | None]:
    """POST the login with this body; past the gateway's enrolment if it asks for one (alice
    has no factor yet), then whose home the CRM serves (None: no CRM session)."""
    headers = {"Content-Type": content_type}
    async with b.http.post(
        b.gw.url + "/login", data=body, headers=headers, allow_redirects=False
    ) as r:
        status, location = r.status, r.headers.get("Location")
    if (status, location) == (303, "/_gateway/enrol"):
        await b.enrol()
        await b.confirm_codes()
    _, text, _ = await b.get("/home")
    return status, text.removeprefix("home of ") if text.startswith("home of ") else None


async def test_the_stand_ins_log_in_the_user_the_gateway_challenges(
    crm: Served, start: Start
) -> None:
    """The set-up: a plain login by either framework is alice's, her code, then her home."""
    b = Browser(await start(crm.url, login=PATH_LOGIN, policy=POLICY))
    try:
        body = b"username=alice&password=alice-demo"
        assert await sign_in_so(b, FORM, body) == (303, "alice")
        assert crm.app[LOGINS] == ["alice"]
        [ok] = await audit_trail(b.gw.served, "signin.crm_ok")
        assert ok.user == "alice"
    finally:
        await b.close()


# Each: a body alice (who knows bob's password) sends, and the framework that reads bob in it
# while identity.login_user reads alice.
BOB_FOR_ALICE = {
    # Laravel: a form to PHP and to the gateway (`username=alice` between two `&`), JSON naming
    # bob to Request::input(), the Content-Type containing `/json` (or `+json`).
    "laravel-slash-json": (
        f"{FORM}; x=/json",
        b'{"a": "&username=alice&", "username": "bob", "password": "bob-demo"}',
    ),
    "laravel-plus-json": (
        f"{FORM}; profile=crm+json",
        b'{"a": "&username=alice&", "username": "bob", "password": "bob-demo"}',
    ),
    # The name the gateway reads need be nobody's: mallory has no factor (nor a CRM account),
    # enrols one with bob's password alone, and is given bob's session.
    "laravel-any-name": (
        f"{FORM}; x=/json",
        b'{"a": "&username=mallory&", "username": "bob", "password": "bob-demo"}',
    ),
    # ASP.NET Core: `Username` is `username` to it, and the first value is bound.
    "aspnet-form-case": (FORM, b"Username=bob&username=alice&password=bob-demo"),
    "aspnet-json-case": (
        "application/json",
        b'{"username": "alice", "Username": "bob", "password": "bob-demo"}',
    ),
}


@pytest.mark.parametrize("attack", list(BOB_FOR_ALICE))
async def test_a_body_the_framework_reads_as_another_user_is_refused(
    start: Start, attack: str
) -> None:
    """Safe: refused (400 login_ambiguous) before the CRM checks bob's password. Before the mend:
    the gateway counts and challenges alice, the CRM logs bob in, and after alice's own
    enrolment (or code) the browser holds bob's CRM session: (303, ['bob'], 'bob')."""
    crm = await serve_handler(framework_crm(FRAMEWORKS[attack.partition("-")[0]]), LOGINS)
    b = Browser(await start(crm.url, login=PATH_LOGIN, policy=POLICY))
    try:
        content_type, body = BOB_FOR_ALICE[attack]
        status, home = await sign_in_so(b, content_type, body)
        assert (status, crm.app[LOGINS], home) == (400, [], None)
    finally:
        await b.close()
        await crm.runner.cleanup()


async def test_the_same_bodies_as_a_plain_form_or_json_go_as_alices(
    crm: Served, start: Start
) -> None:
    """What held: `/json` only in the body, or a duplicate key in the same case, gives the
    CRM nothing but alice's name (or is refused)."""
    gw = await start(crm.url, login=PATH_LOGIN, policy=POLICY)
    tries = [
        (FORM, b'{"a": "&username=alice&", "username": "bob", "password": "bob-demo"}'),
        (FORM, b"username=bob&username=alice&password=bob-demo"),
        ("application/json", b'{"username": "bob", "username": "alice", "password": "x"}'),
        ("text/plain; x=/json", b'{"username": "bob", "password": "bob-demo"}'),
        (f"{FORM}; charset=utf-16", b"username=alice&password=bob-demo"),
    ]
    for content_type, body in tries:
        head = f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        answer = await raw_post(gw, "/login", head, body)
        assert status_of(answer) in (200, 400), answer[:300]
    assert "bob" not in crm.app[LOGINS]


# -- PHP's readings of `action=Login` (the stand-in reads $_REQUEST as PHP 8 does) ------------

# Each a form PHP 8 registers as action=Login (main/php_variables.c: leading spaces dropped,
# a name cut at its NUL, the last of a repeated name; `%61ction` decoded before), makes an
# array of `action` (`action[]`: a CRM casting it or reading `[0]` may still route it), or
# whose value a case-blind file system runs as modules/Users/Login.php: each must be judged
# as the login (counted) or refused.
PHP_LOGIN_FORMS = [
    b"action=Login",
    b"+action=Login",
    b"%20action=Login",
    b"action%00x=Login",
    b"action=List&action=Login",
    b"action[]=Login",
    b"action[0]=Login",
    b"action[x]=Login",
    b"action=login",
    b"action=LOGIN",
    b"action=Log%69n",
    b"%61ction=Login",
]


@pytest.mark.parametrize("form", PHP_LOGIN_FORMS)
async def test_a_php_spelling_of_the_login_in_the_form_is_the_login(
    php: Served,  # noqa: F811 (the fixture, imported)
    start: Start,
    form: bytes,
) -> None:
    """alice's wrong password behind each spelling: counted as hers, or refused (400)."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    body = form + b"&username=alice&password=guess"
    head = f"Content-Type: {FORM}\r\nContent-Length: {len(body)}\r\n"
    answer = await raw_post(gw, "/index.php?action=List", head, body)
    failed = await audit_trail(gw.served, "signin.crm_failed")
    assert status_of(answer) == 400 or [e.user for e in failed] == ["alice"], answer[:300]


PHP_LOGIN_QUERIES = [
    "?action[]=Login",
    "?action[0]=Login",
    "?+action=Login",
    "?action%00=Login",
    "?action=List&action=Login",
    "?ACTION=login",
    "?action=Log%69n",
    "?x=1;action=Login",
]


@pytest.mark.parametrize("query", PHP_LOGIN_QUERIES)
async def test_a_php_spelling_of_the_login_in_the_query_is_the_login(
    php: Served,  # noqa: F811
    start: Start,
    query: str,
) -> None:
    """The same spellings in the query of a POST with the user in its form: counted."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    body = b"username=alice&password=guess"
    head = f"Content-Type: {FORM}\r\nContent-Length: {len(body)}\r\n"
    answer = await raw_post(gw, f"/index.php{query}", head, body)
    failed = await audit_trail(gw.served, "signin.crm_failed")
    assert status_of(answer) == 400 or [e.user for e in failed] == ["alice"], answer[:300]


# -- the forward-auth endpoint asked about the same routes ----------------------------------

FORM_HEAD = "Content-Type: application/x-www-form-urlencoded\r\n"


@pytest.mark.parametrize(
    ("method", "target", "extra"),
    [
        ("POST", "/index.php?action[]=Login", ""),
        ("POST", "/index.php?+action=Login", ""),
        ("POST", "/index.php?action%00=Login", ""),
        ("POST", "/index.php?action=List&action=Login", ""),
        ("POST", "/INDEX.PHP?ACTION=LOGIN", ""),
        ("POST", "/index.php/x?action=Login", ""),
        ("POST", "/?action=Login", ""),
        ("POST", "/index.php?action=List", FORM_HEAD),
        ("POST", "/", FORM_HEAD),
        ("POST", "/index.php/x", "Content-Type: multipart/form-data; boundary=b\r\n"),
        ("POST", "/index.php", "Content-Type: text/plain; x=/json\r\n"),
        ("GET", "/index.php?action=Login&username=alice&password=x", ""),
        ("GET", "/index.php?action[]=Login&%75sername=alice", ""),
        ("PUT", "/?action=Login&username=alice", ""),
        ("POST", "/index.php", "Cookie: action=Login\r\n"),
        ("POST", "/index.php", "Cookie: act.ion=x; %20action=Login\r\n"),
    ],
)
async def test_the_endpoint_refuses_what_the_proxy_takes_for_the_login(
    php: Served,  # noqa: F811
    start: Start,
    method: str,
    target: str,
    extra: str,
) -> None:
    """Asked as nginx asks about a request the direct proxy takes for the login (counted,
    held) or refuses: never 200, so the front proxy never sends it to the CRM unwatched."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY, extra=FORWARD_AUTH)
    said = await ask_endpoint(gw, target, method, extra)
    assert status_of(said) in (400, 403), said[:300]
    assert php.app[SERVED] == []
