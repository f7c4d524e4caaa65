"""Stop 30, an outsider's look at the CRM's session cookie in login mode: what the CRM sets
on a signed-in form (two Set-Cookie headers of one name at two paths or domains, odd
spellings of the name, a lowercase header name), what it sets on an anonymous request at a
route the gateway does not watch, and a session id planted in the browser before the login
(fixation). The right behaviour: no CRM session reaches the browser before the second
factor, a new CRM session set on a form is dropped (never adopted), and the CRM never gets a
session cookie that was not released to this gateway session, whatever its spelling.

Real gateway, a stand-in CRM on 127.0.0.1:0 that adopts any session id it is sent at its
login (PHP without session.use_strict_mode) and can read cookie names in any case as
ASP.NET Core does (RequestCookieCollection: StringComparer.OrdinalIgnoreCase), real TOTP.

Two holes found here were mended in stop 30 (the tests were strict xfails until then):
crm_cookie_set read only the last Set-Cookie of the name (a new session at Path=/ followed
by the current id at another path went to the browser undropped), and cookie names were
compared as written (a caseless CRM took `SID=` for its `sid`, unbound).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from tests.conftest import AppStarter, Served
from tests.signin_kit import GATEWAY_COOKIE, Browser, Browsers, SignInGateway, Start, audit_trail

SID = "sid"
LOGIN = """\
login:
  mode: upstream
  path: /login
  username_field: username
  success: {status: [302], cookie: sid}
  logout: {path: /logout, method: POST}
"""
POLICY = """\
defaults: {factors: [totp, recovery], enforcement: required}
users: {alice: {}, mallory: {}}
paths:
  - {path: /api/login, allow: [anyone]}
  - {path: /sso, allow: [anyone]}
  - {path: "/public/**", allow: [anyone]}
  - {path: "/**", allow: [authenticated]}
"""


class Seen(NamedTuple):
    method: str
    path: str
    cookie: str  # the Cookie header as the CRM got it ("" without one)


SESSIONS = web.AppKey("sessions", dict[str, str])  # the CRM's session ids → their user
SEEN = web.AppKey("seen", list[Seen])
CASELESS = web.AppKey("caseless", bool)  # cookie names read in any case (ASP.NET Core)
PLANTS = web.AppKey("plants", list[tuple[str, str]])  # what /plant sets: (header, value)


def session_id(request: web.Request) -> str:
    """The session id the CRM reads: `sid` as written, or in any case when CASELESS (the
    first such pair wins, as aiohttp's reading of a repeated name)."""
    if not request.app[CASELESS]:
        return request.cookies.get(SID, "")
    for name, value in request.cookies.items():
        if name.casefold() == SID:
            return value
    return ""


def user_of(request: web.Request) -> str:
    return request.app[SESSIONS].get(session_id(request), "")


def new_session(request: web.Request, user: str, wanted: str = "") -> str:
    token = wanted or f"{user}-{secrets.token_urlsafe(12)}"
    request.app[SESSIONS][token] = user
    return token


@web.middleware
async def note(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request.app[SEEN].append(Seen(request.method, request.path, request.headers.get("Cookie", "")))
    return await handler(request)


def signed_in(token: str, to: str, *, header: str = "Set-Cookie") -> web.Response:
    headers: CIMultiDict[str] = CIMultiDict(Location=to)
    headers.add(header, f"{SID}={token}; Path=/; HttpOnly")
    return web.Response(status=302, headers=headers)


async def login(request: web.Request) -> web.Response:
    """The watched login. An id the browser sent is adopted (session fixation, as PHP
    without session.use_strict_mode): only the gateway stands between a planted id and
    the user's session."""
    form = await request.post()
    user = str(form.get("username", ""))
    if form.get("password") != f"{user}-pw":
        return web.Response(text="wrong password")
    return signed_in(new_session(request, user, session_id(request)), "/whoami")


async def whoami(request: web.Request) -> web.Response:
    return web.Response(text=user_of(request) or "nobody")


async def plant(request: web.Request) -> web.Response:
    """A signed-in request on which the CRM logs mallory in (a login at a route the gateway
    does not watch) and answers with PLANTS: `{new}` her new id, `{cur}` the id the request
    came with."""
    if request.method == "POST":
        await request.read()
    current = request.cookies.get(SID, "")
    new = new_session(request, "mallory")
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in request.app[PLANTS]:
        headers.add(name, value.format(new=new, cur=current))
    return web.Response(text=f"planted {new}", headers=headers)


async def api_login(request: web.Request) -> web.Response:
    """A second login route (an API's), answering with the session cookie as PLANTS spells
    it (`{new}`), or plainly when PLANTS is empty."""
    form = await request.post()
    user = str(form.get("username", ""))
    if form.get("password") != f"{user}-pw":
        return web.Response(status=401, text="wrong password")
    token = new_session(request, user)
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in request.app[PLANTS] or [("Set-Cookie", f"{SID}={{new}}; Path=/")]:
        headers.add(name, value.format(new=token, cur=""))
    return web.json_response({"ok": True}, headers=headers)


async def sso(request: web.Request) -> web.Response:
    """A single sign-on landing: a GET whose token (here: the user's name and `-sso`)
    logs its user in."""
    user = request.query.get("token", "").removesuffix("-sso")
    if not user:
        return web.Response(status=403, text="no token")
    return signed_in(new_session(request, user), "/whoami")


def cookie_crm(*, caseless: bool = False) -> web.Application:
    app = web.Application(middlewares=[note])
    app[SESSIONS] = {}
    app[SEEN] = []
    app[CASELESS] = caseless
    app[PLANTS] = []
    app.router.add_post("/login", login)
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/x/whoami", whoami)
    app.router.add_get("/public/whoami", whoami)
    app.router.add_route("*", "/plant", plant)
    app.router.add_post("/api/login", api_login)
    app.router.add_get("/sso", sso)
    return app


class Scene(NamedTuple):
    crm: Served
    gw: SignInGateway
    alice: Browser  # signed in: password, then her authenticator (enrolled)
    bound: str  # her CRM session id, released to her gateway session


async def signed_in_alice(
    start_app: AppStarter, start: Start, browsers: Browsers, *, caseless: bool = False
) -> Scene:
    crm = await start_app(cookie_crm(caseless=caseless))
    gw = await start(crm.url, login=LOGIN, policy=POLICY)
    alice = browsers(gw)
    status, _, r = await alice.post("/login", {"username": "alice", "password": "alice-pw"})
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    assert alice.cookie(SID) is None  # held for the second factor
    await alice.enrol()  # passes a real TOTP code
    r = await alice.confirm_codes()
    assert r.headers["Location"] == "/whoami"
    bound = alice.cookie(SID)
    assert bound and crm.app[SESSIONS][bound] == "alice"
    assert (await alice.get("/whoami"))[1] == "alice"
    return Scene(crm, gw, alice, bound)


async def crm_sees(gw: SignInGateway, path: str, cookie: str) -> str:
    """What the CRM answers a browser sending exactly this Cookie header (nothing followed)."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as raw,
        raw.get(gw.url + path, headers={"Cookie": cookie}, allow_redirects=False) as r,
    ):
        return f"{r.status} {await r.text()}"


def own(b: Browser) -> str:
    return f"{GATEWAY_COOKIE}={b.cookie(GATEWAY_COOKIE)}"


def set_cookies(r: aiohttp.ClientResponse) -> list[str]:
    return list(r.headers.getall("Set-Cookie", []))


def mallory_ids(crm: Served) -> set[str]:
    return {token for token, user in crm.app[SESSIONS].items() if user == "mallory"}


def reached_crm(crm: Served, value: str, since: int = 0) -> list[Seen]:
    return [seen for seen in crm.app[SEEN][since:] if value in seen.cookie]


# -- 1. two Set-Cookie headers of one name on a signed-in form ---------------------------------

PAIRS = [
    pytest.param(
        [("Set-Cookie", "sid={new}; Path=/"), ("Set-Cookie", "sid={cur}; Path=/x")],
        id="new-then-current-at-x",
    ),
    pytest.param(
        [("Set-Cookie", "sid={cur}; Path=/x"), ("Set-Cookie", "sid={new}; Path=/")],
        id="current-at-x-then-new",
    ),
    pytest.param(
        [("Set-Cookie", "sid={new}; Path=/; Domain=127.0.0.1"), ("Set-Cookie", "sid={cur}")],
        id="new-with-domain-then-current",
    ),
    pytest.param(
        [("Set-Cookie", "sid={cur}; Path=/; Domain=127.0.0.1"), ("Set-Cookie", "sid={new}")],
        id="current-with-domain-then-new",
    ),
    pytest.param(
        [("set-cookie", "sid={new}; Path=/"), ("set-cookie", "sid={cur}; Path=/x")],
        id="lowercase-new-then-current",
    ),
    pytest.param(
        [("set-cookie", "sid={cur}; Path=/x"), ("SET-COOKIE", "sid={new}; Path=/")],
        id="lowercase-current-then-new",
    ),
    pytest.param(
        [("Set-Cookie", " sid={new}; Path=/"), ("Set-Cookie", "sid ={cur}; Path=/x")],
        id="spaced-new-then-current",
    ),
    pytest.param(
        [("Set-Cookie", 'sid="{new}"; Path=/'), ("Set-Cookie", "sid={cur}; Path=/x")],
        id="quoted-new-then-current",
    ),
    pytest.param(
        [("Set-Cookie", "sid={new}; Path=/"), ("Set-Cookie", 'sid="{cur}"; Path=/x')],
        id="new-then-quoted-current",
    ),
    pytest.param([("Set-Cookie", " sid ={new}; Path=/")], id="spaced-new-alone"),
    pytest.param([("set-cookie", 'sid="{new}"; Path=/')], id="lowercase-quoted-new-alone"),
]


@pytest.mark.parametrize("plants", PAIRS)
async def test_a_new_crm_session_set_on_a_form_never_reaches_the_browser(
    start_app: AppStarter, start: Start, browsers: Browsers, plants: list[tuple[str, str]]
) -> None:
    """Attacks crm_cookie_set's drop: alice, signed in, posts a form on which the CRM logs
    mallory in and answers with Set-Cookie headers for `sid` (mallory's new id and alice's
    current one, at two paths or domains, in either order, any header case, names padded
    or values quoted). A new session on a form is never adopted: none of the answer's
    Set-Cookie headers carries mallory's id to the browser, and the drop is audited."""
    scene = await signed_in_alice(start_app, start, browsers)
    scene.crm.app[PLANTS][:] = plants
    status, text, r = await scene.alice.post("/plant", {"note": "hello"})
    assert status == 200 and text.startswith("planted "), text
    new = text.removeprefix("planted ")
    assert not [c for c in set_cookies(r) if new in c], set_cookies(r)
    [dropped] = await audit_trail(scene.gw.served, "signin.crm_cookie_dropped")
    assert dropped.user == "alice"


@pytest.mark.parametrize("plants", [p.values[0] for p in PAIRS], ids=[p.id for p in PAIRS])
async def test_a_new_crm_session_set_on_a_form_never_reaches_the_crm_later(
    start_app: AppStarter, start: Start, browsers: Browsers, plants: list[tuple[str, str]]
) -> None:
    """The same answers, then what the CRM gets on alice's next requests (her browser's
    jar as it took the answer, at / and at /x, and a browser sending mallory's id outright
    with alice's gateway cookie): never mallory's id, never mallory's session. alice may
    lose her own CRM session (the CRM overwrote her cookie) but is never someone else."""
    scene = await signed_in_alice(start_app, start, browsers)
    scene.crm.app[PLANTS][:] = plants
    status, text, _ = await scene.alice.post("/plant", {"note": "hello"})
    assert status == 200, text
    new = text.removeprefix("planted ")
    since = len(scene.crm.app[SEEN])
    for path in ("/whoami", "/x/whoami", "/whoami"):
        status, text, _ = await scene.alice.get(path)
        assert status == 200 and text in ("alice", "nobody"), (path, status, text)
    for cookie in (f"{SID}={new}", f'{SID}="{new}"', f" {SID}={new}", f"{SID} ={new}"):
        said = await crm_sees(scene.gw, "/whoami", f"{own(scene.alice)}; {cookie}")
        assert said in ("200 alice", "200 nobody"), (cookie, said)
    assert reached_crm(scene.crm, new, since) == []
    assert (await crm_sees(scene.gw, "/whoami", f"{own(scene.alice)}; {SID}={scene.bound}")) in (
        "200 alice",
        "200 nobody",
    )


@pytest.mark.parametrize(
    "spelling",
    [
        "sid={v}",
        'sid="{v}"',
        " sid={v}",
        "sid ={v}",
        "s%69d={v}",
        "sid%20={v}",
        "x=1 sid={v}",
        "x=1, sid={v}",
        "sid[]={v}",
        "sid={v}; sid={bound}",
        "sid={bound}; sid={v}",
    ],
)
async def test_another_users_crm_cookie_in_any_spelling_never_reaches_the_crm(
    start_app: AppStarter, start: Start, browsers: Browsers, spelling: str
) -> None:
    """The binding's own threat in the spellings cookies.py reads (quotes, padding, PHP's
    url-decoded names, aiohttp's split at white space and commas, an array, the name
    twice before or after alice's own): a copy of mallory's CRM id sent in alice's
    gateway session never reaches the CRM in any Cookie header."""
    scene = await signed_in_alice(start_app, start, browsers)
    stolen = "mallory-stolen-id"
    scene.crm.app[SESSIONS][stolen] = "mallory"
    cookie = spelling.format(v=stolen, bound=scene.bound)
    said = await crm_sees(scene.gw, "/whoami", f"{own(scene.alice)}; {cookie}")
    assert said in ("200 alice", "200 nobody"), said
    assert reached_crm(scene.crm, stolen) == []


# -- 2. the CRM's header name in lowercase ------------------------------------------------------


async def test_a_rotation_in_a_lowercase_set_cookie_is_followed(
    start_app: AppStarter, start: Start, browsers: Browsers
) -> None:
    """crm_cookie_set fed `set-cookie` (a CRM's own spelling, kept by the client): a new id
    for alice on a page view (GET) is a rotation the binding follows, so the new id passes
    and the old one no longer does."""
    scene = await signed_in_alice(start_app, start, browsers)
    rotated = "alice-rotated"
    scene.crm.app[SESSIONS][rotated] = "alice"
    scene.crm.app[PLANTS][:] = [("set-cookie", f"sid={rotated}; Path=/; HttpOnly")]
    status, _, r = await scene.alice.get("/plant")
    assert status == 200
    assert [c for c in set_cookies(r) if rotated in c], set_cookies(r)
    assert scene.alice.cookie(SID) == rotated
    assert (await scene.alice.get("/whoami"))[1] == "alice"
    stale = await crm_sees(scene.gw, "/whoami", f"{own(scene.alice)}; {SID}={scene.bound}")
    assert stale == "200 nobody"


@pytest.mark.parametrize("header", ["set-cookie", "SET-COOKIE", "sEt-CoOkIe"])
async def test_a_new_session_in_a_lowercase_set_cookie_on_a_form_is_dropped(
    start_app: AppStarter, start: Start, browsers: Browsers, header: str
) -> None:
    """The same spelling on a form (POST): mallory's new id is dropped and audited, and
    alice keeps her own CRM session."""
    scene = await signed_in_alice(start_app, start, browsers)
    scene.crm.app[PLANTS][:] = [(header, "sid={new}; Path=/; HttpOnly")]
    status, text, r = await scene.alice.post("/plant", {"note": "hi"})
    assert status == 200, text
    assert not [c for c in set_cookies(r) if "sid=" in c], set_cookies(r)
    assert scene.alice.cookie(SID) == scene.bound
    assert (await scene.alice.get("/whoami"))[1] == "alice"
    assert len(await audit_trail(scene.gw.served, "signin.crm_cookie_dropped")) == 1


# -- 3. a CRM session set where the gateway does not watch, before the second factor ------------

SPELLINGS = [
    pytest.param([], id="plain"),
    pytest.param([("set-cookie", "sid={new}; Path=/")], id="lowercase-header"),
    pytest.param([("Set-Cookie", " sid={new}; Path=/")], id="space-before-name"),
    pytest.param([("Set-Cookie", "sid ={new}; Path=/")], id="space-after-name"),
    pytest.param([("Set-Cookie", 'sid="{new}"; Path=/')], id="quoted"),
    pytest.param(
        [("Set-Cookie", "theme=dark; Path=/"), ("SET-COOKIE", "sid={new}; Domain=127.0.0.1")],
        id="second-header-with-domain",
    ),
]


@pytest.mark.parametrize("plants", SPELLINGS)
async def test_an_api_login_never_hands_the_crm_session_to_an_anonymous_browser(
    start_app: AppStarter, start: Start, browsers: Browsers, plants: list[tuple[str, str]]
) -> None:
    """Attacks the hold at a second login route: anonymous, alice's password posted to the
    CRM's /api/login (open to anyone, not the watched login). The CRM logs her in; its
    session cookie must not reach the browser in any spelling (pipeline.act drops
    signin.cookies.crm), so the password alone never opens the CRM."""
    crm = await start_app(cookie_crm())
    crm.app[PLANTS][:] = plants
    gw = await start(crm.url, login=LOGIN, policy=POLICY)
    b = browsers(gw)
    status, _, r = await b.post("/api/login", {"username": "alice", "password": "alice-pw"})
    assert status == 200
    [token] = [t for t, user in crm.app[SESSIONS].items() if user == "alice"]
    assert not [c for c in set_cookies(r) if token in c], set_cookies(r)
    assert (await b.get("/whoami"))[0] in (303, 403)  # still nobody: never forwarded
    assert reached_crm(crm, token) == []


async def test_an_sso_get_never_hands_the_crm_session_to_a_browser_at_the_challenge(
    start_app: AppStarter, start: Start, browsers: Browsers
) -> None:
    """A GET single sign-on landing (`/sso?token=`), asked anonymously and then by a browser
    that passed alice's password and stands at her challenge: neither gets the CRM's
    session cookie, and the CRM never sees it come back."""
    crm = await start_app(cookie_crm())
    gw = await start(crm.url, login=LOGIN, policy=POLICY)
    first = browsers(gw)
    await first.post("/login", {"username": "alice", "password": "alice-pw"})
    await first.enrol()
    await first.confirm_codes()
    gw.clock.advance(60)
    anonymous = browsers(gw)
    at_challenge = browsers(gw)
    _, _, r = await at_challenge.post("/login", {"username": "alice", "password": "alice-pw"})
    assert r.headers["Location"] == "/_gateway/challenge"
    for b in (anonymous, at_challenge):
        sessions: dict[str, str] = crm.app[SESSIONS]
        before = set(sessions)
        status, _, r = await b.get("/sso?token=alice-sso")
        assert status == 302, status
        [token] = set(sessions) - before
        assert not [c for c in set_cookies(r) if token in c], set_cookies(r)
        assert b.cookie(SID) is None
        # Not signed in: off to sign in (anonymous), or refused (a password only).
        assert (await b.get("/whoami"))[0] in (303, 403)
        assert reached_crm(crm, token) == []


# -- 4. session fixation through a CRM cookie --------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/whoami"])
async def test_a_planted_crm_session_id_is_never_the_victims(
    start_app: AppStarter, start: Start, browsers: Browsers, path: str
) -> None:
    """Fixation: the attacker plants `sid=ATTACKER` in alice's browser (at / or at a more
    specific path, sent first) before she logs in; the CRM adopts any id it is sent at its
    login. The login reaches the CRM without it, so her session is a fresh id; after her
    TOTP code the CRM only ever gets that id from her browser, and ATTACKER names no one."""
    crm = await start_app(cookie_crm())
    gw = await start(crm.url, login=LOGIN, policy=POLICY)
    first = browsers(gw)
    await first.post("/login", {"username": "alice", "password": "alice-pw"})
    secret, _ = await first.enrol()
    await first.confirm_codes()
    gw.clock.advance(60)
    attacker_id = "ATTACKER-fixed-id"
    victim = browsers(gw)
    victim.jar.update_cookies({SID: attacker_id}, response_url=URL(gw.url + path))
    status, _, r = await victim.post("/login", {"username": "alice", "password": "alice-pw"})
    assert r.headers["Location"] == "/_gateway/challenge"
    status, _, r = await victim.answer(victim.code(secret))
    assert status == 303, status
    assert (await victim.get("/whoami"))[1] == "alice"
    assert attacker_id not in crm.app[SESSIONS]
    assert [s for s in reached_crm(crm, attacker_id) if s.path == "/login"] == []
    said = await crm_sees(gw, "/whoami", f"{own(victim)}; {SID}={attacker_id}")
    assert said == "200 nobody"


# -- the name in another case, to a CRM that reads cookie names in any case ----------------------


async def test_another_users_crm_cookie_in_another_case_is_no_use(
    start_app: AppStarter, start: Start, browsers: Browsers
) -> None:
    """alice, signed in, holds a copy of mallory's CRM session id (the binding's threat)
    and sends it as `SID=`: a CRM reading names in any case must never get it, so she is
    never mallory."""
    scene = await signed_in_alice(start_app, start, browsers, caseless=True)
    mallory = "mallory-stolen"
    scene.crm.app[SESSIONS][mallory] = "mallory"
    said = await crm_sees(scene.gw, "/whoami", f"{own(scene.alice)}; SID={mallory}")
    assert said in ("200 alice", "200 nobody"), said
    assert reached_crm(scene.crm, mallory) == []


async def test_a_new_session_set_as_SID_on_a_form_never_reaches_a_caseless_crm(
    start_app: AppStarter, start: Start, browsers: Browsers
) -> None:
    """The CRM spells the name otherwise on a form that logs mallory in (`SID=`): dropped
    like `sid=`, and never sent back to the CRM from alice's jar."""
    scene = await signed_in_alice(start_app, start, browsers, caseless=True)
    scene.crm.app[PLANTS][:] = [("Set-Cookie", "SID={new}; Path=/")]
    status, text, r = await scene.alice.post("/plant", {"note": "hi"})
    assert status == 200, text
    new = text.removeprefix("planted ")
    since = len(scene.crm.app[SEEN])
    assert (await scene.alice.get("/whoami"))[1] in ("alice", "nobody")
    assert reached_crm(scene.crm, new, since) == []
    assert not [c for c in set_cookies(r) if new in c], set_cookies(r)


async def test_a_planted_SID_is_never_adopted_at_a_caseless_crms_login(
    start_app: AppStarter, start: Start, browsers: Browsers
) -> None:
    """Fixation in another case: `SID=ATTACKER` planted in alice's browser reaches the
    CRM's login (only `sid` is stripped there), a CRM that adopts the id it is sent makes
    it alice's session, and after her TOTP code the attacker, signed in as himself (or
    anyone at an open path), is alice at the CRM by sending `SID=ATTACKER`."""
    crm = await start_app(cookie_crm(caseless=True))
    gw = await start(crm.url, login=LOGIN, policy=POLICY)
    attacker = browsers(gw)  # mallory, signed in as herself with her own authenticator
    await attacker.post("/login", {"username": "mallory", "password": "mallory-pw"})
    await attacker.enrol()
    await attacker.confirm_codes()
    attacker_id = "ATTACKER-fixed-id"
    victim = browsers(gw)
    victim.jar.update_cookies({"SID": attacker_id}, response_url=URL(gw.url))
    await victim.post("/login", {"username": "alice", "password": "alice-pw"})
    await victim.enrol()  # alice's own TOTP code
    await victim.confirm_codes()
    said = await crm_sees(gw, "/whoami", f"{own(attacker)}; SID={attacker_id}")
    assert said != "200 alice", said
    assert [s for s in reached_crm(crm, attacker_id) if s.path == "/login"] == []
    assert attacker_id not in crm.app[SESSIONS]


async def test_a_stolen_crm_cookie_in_another_case_opens_nothing_anonymously(
    start_app: AppStarter, start: Start, browsers: Browsers
) -> None:
    """No gateway session at all: a copy of alice's CRM session id sent as `SID=` to a path
    open to anyone. The CRM's cookies are stripped from anonymous requests (`sid=` is), so
    a CRM reading names in any case must not get it either: it would be alice without
    her password or her code."""
    scene = await signed_in_alice(start_app, start, browsers, caseless=True)
    for cookie in (f"{SID}={scene.bound}", f"SID={scene.bound}", f"Sid={scene.bound}"):
        said = await crm_sees(scene.gw, "/public/whoami", cookie)
        assert said == "200 nobody", (cookie, said)


async def test_an_api_login_set_as_SID_never_reaches_an_anonymous_browser(
    start_app: AppStarter, start: Start, browsers: Browsers
) -> None:
    """The second login route answering `SID=` (its own spelling) to an anonymous browser:
    a CRM reading names in any case would take it for its session on the next request, so
    it is held like `sid=` (never released without the second factor)."""
    crm = await start_app(cookie_crm(caseless=True))
    crm.app[PLANTS][:] = [("Set-Cookie", "SID={new}; Path=/")]
    gw = await start(crm.url, login=LOGIN, policy=POLICY)
    b = browsers(gw)
    status, _, r = await b.post("/api/login", {"username": "alice", "password": "alice-pw"})
    assert status == 200
    [token] = [t for t, user in crm.app[SESSIONS].items() if user == "alice"]
    assert not [c for c in set_cookies(r) if token in c], set_cookies(r)
