"""Stop 30, an outsider's look at the day's mends: the CRM's session cookie compared in any
case (7694e7a, cb48583), a CRM login the client abandons counted as a wrong password
(9b3dfdb), and the policy loader's paused cycle collector (c7f6b28).

The right behaviour asked: a CRM whose session cookie has capitals (PHPSESSID,
ASP.NET_SessionId, JSESSIONID) still signs in, its cookie still reaches the CRM and a
rotation on a page view is still followed; no spelling of a new session (another case, a
nameless Set-Cookie, names that fold to the name) reaches the browser or the CRM; an
abandoned login counts once, and only what the CRM refused or the client left counts
against a user; a policy reload leaves Python's collector on.

Real gateway, stand-in CRMs on 127.0.0.1:0, real TOTP codes, real SQLite.

Its four holes, strict xfails until mended in stop 30: a nameless Set-Cookie (`=sid=NEW`,
which browsers send back as `sid=NEW`) passed every drop, on a signed-in form and to an
anonymous browser; and a login abandoned while the CRM admitted it, or cut by a graceful
stop, counted as a wrong password (now the CRM's own verdict counts, the client gone or not).
"""

from __future__ import annotations

import asyncio
import gc
import secrets
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.clock import FakeClock
from gateway.config.shutdown import Shutdown
from gateway.stores import AuditQuery
from gateway.stores.sqlite import SqliteDurableStore
from gateway.web.app import build_app
from gateway.web.drain import LAST_CUT, StopRequest, drain
from gateway.web.guard import GUARD
from gateway.web.health import READINESS
from tests.conftest import AppStarter, Served, gateway_config, serve
from tests.flows.test_stop30_cookie_outsider import (
    LOGIN,
    PLANTS,
    POLICY,
    SEEN,
    SESSIONS,
    SID,
    cookie_crm,
    crm_sees,
    own,
    reached_crm,
    set_cookies,
    signed_in_alice,
)
from tests.flows.test_stop30_factor_outsider import (
    LIMIT,
    abandon_login,
    crm_slow_to_refuse,
    login_from,
    settled,
    source,
)
from tests.signin_kit import (
    CRM_COOKIE,
    DEMO_LOGIN,
    DEMO_POLICY,
    Browser,
    Browsers,
    SignInGateway,
    Start,
    audit_trail,
    write_keys,
)

# -- a CRM whose session cookie is named as configured ------------------------------------------

NAME = web.AppKey("name", str)  # the CRM's session cookie
FOLD = web.AppKey("fold", bool)  # names read in any case (ASP.NET Core)
IDS = web.AppKey("ids", dict[str, str])  # session id → user
ANSWER = web.AppKey("answer", list[str])  # /answer's Set-Cookie headers: {new} {cur} {mallory}
GOT = web.AppKey("got", list[str])  # every Cookie header the CRM received


def read_id(request: web.Request) -> str:
    """The session id as the CRM reads it from the raw Cookie header: the first pair of its
    name, exactly or (FOLD) in any case."""
    name = request.app[NAME]
    for line in request.headers.getall("Cookie", []):
        for pair in line.split(";"):
            key, sep, value = pair.partition("=")
            key = key.strip()
            if sep and (key == name or (request.app[FOLD] and key.casefold() == name.casefold())):
                return value.strip()
    return ""


def named_crm(name: str, *, fold: bool = False) -> web.Application:
    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        user = str(form.get("username", ""))
        if form.get("password") != f"{user}-pw":
            return web.Response(text="wrong password")
        token = f"{user}-{secrets.token_urlsafe(12)}"
        request.app[IDS][token] = user
        headers: CIMultiDict[str] = CIMultiDict(Location="/whoami")
        headers.add("Set-Cookie", f"{name}={token}; Path=/; HttpOnly")
        return web.Response(status=302, headers=headers)

    async def whoami(request: web.Request) -> web.Response:
        request.app[GOT].append(request.headers.get("Cookie", ""))
        return web.Response(text=request.app[IDS].get(read_id(request), "nobody"))

    async def answer(request: web.Request) -> web.Response:
        """A page that rotates the caller's session ({new}: a new id for the same user) or
        logs mallory in ({mallory}), answering with ANSWER's Set-Cookie headers."""
        if request.method == "POST":
            await request.read()
        current = read_id(request)
        user = request.app[IDS].get(current, "")
        new = f"{user}-rotated-{secrets.token_urlsafe(8)}"
        mallory = f"mallory-{secrets.token_urlsafe(8)}"
        request.app[IDS][new] = user
        request.app[IDS][mallory] = "mallory"
        headers: CIMultiDict[str] = CIMultiDict()
        for value in request.app[ANSWER]:
            headers.add("Set-Cookie", value.format(new=new, cur=current, mallory=mallory))
        return web.Response(text=f"{new} {mallory}", headers=headers)

    app = web.Application()
    app[NAME] = name
    app[FOLD] = fold
    app[IDS] = {}
    app[ANSWER] = []
    app[GOT] = []
    app.router.add_post("/login", login)
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/x/whoami", whoami)
    app.router.add_route("*", "/answer", answer)
    return app


def login_for(name: str) -> str:
    return (
        "login:\n"
        "  mode: upstream\n"
        "  path: /login\n"
        "  username_field: username\n"
        f"  success: {{status: [302], cookie: {name}}}\n"
        "  logout: {path: /logout, method: POST}\n"
    )


async def alice_at(
    start_app: AppStarter, start: Start, browsers: Browsers, name: str, *, fold: bool = False
) -> tuple[Served, SignInGateway, Browser, str]:
    """alice signed in (password, her enrolled authenticator) through a gateway in front of
    a CRM whose session cookie is `name`; her CRM session id."""
    crm = await start_app(named_crm(name, fold=fold))
    gw = await start(crm.url, login=login_for(name), policy=POLICY)
    alice = browsers(gw)
    status, _, r = await alice.post("/login", {"username": "alice", "password": "alice-pw"})
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    assert alice.cookie(name) is None
    await alice.enrol()
    r = await alice.confirm_codes()
    assert r.headers["Location"] == "/whoami"
    bound = alice.cookie(name)
    assert bound and crm.app[IDS][bound] == "alice"
    assert (await alice.get("/whoami"))[1] == "alice"
    return crm, gw, alice, bound


CAPITALS = ["PHPSESSID", "ASP.NET_SessionId", "JSESSIONID"]


# -- 1. legitimate CRMs with capitals in the name ------------------------------------------------


@pytest.mark.parametrize("name", CAPITALS)
async def test_a_capitalised_crm_cookie_signs_in_and_reaches_the_crm(
    start_app: AppStarter, start: Start, browsers: Browsers, name: str
) -> None:
    """The CRM's session cookie configured with capitals: after the second factor alice is
    herself at the CRM, on every later page, her cookie sent as the CRM spells it."""
    crm, _, alice, bound = await alice_at(start_app, start, browsers, name)
    for path in ("/whoami", "/x/whoami", "/whoami"):
        assert (await alice.get(path))[1] == "alice", path
    assert all(f"{name}={bound}" in got for got in crm.app[GOT][-3:]), crm.app[GOT][-3:]


@pytest.mark.parametrize("name", CAPITALS)
@pytest.mark.parametrize("fold", [False, True], ids=["exact-crm", "caseless-crm"])
async def test_a_rotation_of_a_capitalised_crm_cookie_on_a_page_view_is_followed(
    start_app: AppStarter, start: Start, browsers: Browsers, name: str, fold: bool
) -> None:
    """A GET on which the CRM rotates alice's id (`NAME=NEW`): the new id reaches her
    browser, the binding follows it (she stays herself at the CRM), the old one no longer
    passes, and nothing is audited as dropped."""
    crm, gw, alice, bound = await alice_at(start_app, start, browsers, name, fold=fold)
    crm.app[ANSWER][:] = [f"{name}={{new}}; Path=/; HttpOnly"]
    status, text, r = await alice.get("/answer")
    assert status == 200
    new = text.split()[0]
    assert [c for c in set_cookies(r) if new in c], set_cookies(r)
    assert alice.cookie(name) == new
    assert (await alice.get("/whoami"))[1] == "alice"
    assert await crm_sees(gw, "/whoami", f"{own(alice)}; {name}={bound}") == "200 nobody"
    assert await audit_trail(gw.served, "signin.crm_cookie_dropped") == []


@pytest.mark.parametrize("name", CAPITALS)
async def test_the_current_id_set_again_at_two_paths_on_a_page_view_is_no_new_session(
    start_app: AppStarter, start: Start, browsers: Browsers, name: str
) -> None:
    """The CRM sends alice's current id again, at / and at /x (a CRM refreshing its cookie's
    expiry): not a new session, nothing dropped or audited, she stays herself."""
    crm, gw, alice, bound = await alice_at(start_app, start, browsers, name)
    crm.app[ANSWER][:] = [f"{name}={{cur}}; Path=/", f"{name}={{cur}}; Path=/x; HttpOnly"]
    status, _, r = await alice.get("/answer")
    assert status == 200
    assert len([c for c in set_cookies(r) if bound in c]) == 2, set_cookies(r)
    for path in ("/whoami", "/x/whoami"):
        assert (await alice.get(path))[1] == "alice", path
    assert await audit_trail(gw.served, "signin.crm_cookie_dropped") == []


@pytest.mark.parametrize("name", CAPITALS)
async def test_one_new_id_at_two_paths_on_a_page_view_is_one_rotation(
    start_app: AppStarter, start: Start, browsers: Browsers, name: str
) -> None:
    """A rotation sent twice with other attributes (`NAME=NEW; Path=/` and `NAME=NEW;
    Path=/x; Max-Age=3600`): one new session, followed like one header."""
    crm, gw, alice, _ = await alice_at(start_app, start, browsers, name)
    crm.app[ANSWER][:] = [f"{name}={{new}}; Path=/", f"{name}={{new}}; Path=/x; Max-Age=3600"]
    status, text, _ = await alice.get("/answer")
    assert status == 200
    new = text.split()[0]
    for path in ("/whoami", "/x/whoami"):
        assert (await alice.get(path))[1] == "alice", path
    assert (await crm_sees(gw, "/whoami", f"{own(alice)}; {name}={new}")) == "200 alice"
    assert await audit_trail(gw.served, "signin.crm_cookie_dropped") == []


@pytest.mark.parametrize("name", CAPITALS)
async def test_a_cookie_named_like_the_session_cookie_in_another_case_leaves_her_signed_in(
    start_app: AppStarter, start: Start, browsers: Browsers, name: str
) -> None:
    """A case-sensitive CRM that also sets a cookie whose name differs only by case
    (`phpsessid=pref`, a tracker's) on a page view: whatever the gateway does with it,
    alice's own session cookie still reaches the CRM and she stays herself."""
    crm, _, alice, bound = await alice_at(start_app, start, browsers, name)
    crm.app[ANSWER][:] = [f"{name.lower()}=pref; Path=/", f"{name.upper()}X=1; Path=/"]
    assert (await alice.get("/answer"))[0] == 200
    for path in ("/whoami", "/x/whoami"):
        assert (await alice.get(path))[1] == "alice", path
    assert f"{name}={bound}" in crm.app[GOT][-1]


@pytest.mark.parametrize(
    "removal",
    [
        "{name}=; Max-Age=0; Path=/old",
        '{name}=""; Max-Age=0; Path=/old',
        "{name}=deleted; expires=Thu, 01 Jan 1970 00:00:01 GMT; Path=/old",
    ],
    ids=["empty", "quoted-empty", "php-deleted"],
)
async def test_a_rotation_that_also_removes_the_old_cookie_elsewhere_is_followed(
    start_app: AppStarter, start: Start, browsers: Browsers, removal: str
) -> None:
    """A rotation on a page view that also removes the cookie at an old path, as frameworks
    spell a removal (empty, `""`, PHP's `deleted`): one new session, followed."""
    name = "PHPSESSID"
    crm, gw, alice, _ = await alice_at(start_app, start, browsers, name)
    crm.app[ANSWER][:] = [f"{name}={{new}}; Path=/", removal.format(name=name)]
    status, text, _ = await alice.get("/answer")
    assert status == 200
    assert alice.cookie(name) == text.split()[0]
    assert (await alice.get("/whoami"))[1] == "alice"
    assert await audit_trail(gw.served, "signin.crm_cookie_dropped") == []


# -- 2. new spellings of a new session ----------------------------------------------------------


@pytest.mark.parametrize("spelled", ["Sid", "SID", "\u017fid", "\u017fID"])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_new_session_in_another_spelling_is_dropped_and_audited(
    start_app: AppStarter, start: Start, browsers: Browsers, spelled: str, method: str
) -> None:
    """The CRM names its new session otherwise than configured (another case, or with the
    long s U+017F that folds to `s`), on a page view or a form, to a CRM reading names in
    any case: never a rotation; not sent to the browser, audited, and never reaching the
    CRM from alice's jar; she stays herself."""
    scene = await signed_in_alice(start_app, start, browsers, caseless=True)
    scene.crm.app[PLANTS][:] = [("Set-Cookie", f"{spelled}={{new}}; Path=/")]
    if method == "GET":
        status, text, r = await scene.alice.get("/plant")
    else:
        status, text, r = await scene.alice.post("/plant", {"note": "hi"})
    assert status == 200, text
    new = text.removeprefix("planted ")
    assert not [c for c in set_cookies(r) if new in c], set_cookies(r)
    assert len(await audit_trail(scene.gw.served, "signin.crm_cookie_dropped")) == 1
    since = len(scene.crm.app[SEEN])
    assert (await scene.alice.get("/whoami"))[1] == "alice"
    assert reached_crm(scene.crm, new, since) == []


@pytest.mark.parametrize("spelled", ["SID", "Sid", "SiD", "\u017fid", "\u017fId"])
async def test_a_stolen_id_in_a_folding_spelling_never_reaches_a_caseless_crm(
    start_app: AppStarter, start: Start, browsers: Browsers, spelled: str
) -> None:
    """mallory's id, copied into alice's signed-in browser under a name a caseless CRM reads
    as `sid` (cases, the long s): never reaches the CRM."""
    scene = await signed_in_alice(start_app, start, browsers, caseless=True)
    stolen = "mallory-stolen-id"
    scene.crm.app[SESSIONS][stolen] = "mallory"
    said = await crm_sees(scene.gw, "/whoami", f"{own(scene.alice)}; {spelled}={stolen}")
    assert said in ("200 alice", "200 nobody"), said
    assert reached_crm(scene.crm, stolen) == []


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_nameless_set_cookie_never_carries_a_new_session_to_the_browser(
    start_app: AppStarter, start: Start, browsers: Browsers, method: str
) -> None:
    """The CRM logs mallory in at a route the gateway does not watch and answers with a
    nameless cookie whose value is `sid=<her id>`: a browser stores it with an empty name
    and sends `sid=<her id>` back. The new session must not reach alice's browser (the
    gateway's own Cookie check refuses it on the way back, so the CRM is not reached)."""
    scene = await signed_in_alice(start_app, start, browsers)
    scene.crm.app[PLANTS][:] = [("Set-Cookie", "=sid={new}; Path=/")]
    if method == "GET":
        status, text, r = await scene.alice.get("/plant")
    else:
        status, text, r = await scene.alice.post("/plant", {"note": "hi"})
    assert status == 200, text
    new = text.removeprefix("planted ")
    # The way back holds (checked before the failing part): the CRM never gets it.
    said = await crm_sees(scene.gw, "/whoami", f"{own(scene.alice)}; {SID}={new}")
    assert said in ("200 alice", "200 nobody"), said
    assert reached_crm(scene.crm, new) == []
    assert not [c for c in set_cookies(r) if new in c], set_cookies(r)


async def test_an_api_login_answering_a_nameless_cookie_never_reaches_an_anonymous_browser(
    start_app: AppStarter, start: Start, browsers: Browsers
) -> None:
    """A second login route answering `=sid=TOKEN` to an anonymous browser: the CRM's
    session must not leave without the second factor, in this spelling either."""
    crm = await start_app(cookie_crm())
    crm.app[PLANTS][:] = [("Set-Cookie", "=sid={new}; Path=/")]
    gw = await start(crm.url, login=LOGIN, policy=POLICY)
    b = browsers(gw)
    status, _, r = await b.post("/api/login", {"username": "alice", "password": "alice-pw"})
    assert status == 200
    [token] = [t for t, user in crm.app[SESSIONS].items() if user == "alice"]
    assert (await crm_sees(gw, "/public/whoami", f"{SID}={token}")) == "200 nobody"
    assert not [c for c in set_cookies(r) if token in c], set_cookies(r)


# -- 3. abandoned CRM logins --------------------------------------------------------------------


def crm_slow_to_admit(arrived: list[str], pause: float = 1.0) -> web.Application:
    """A CRM that answers a right password only after `pause` (a busy CRM, an LDAP bind) and
    a wrong one at once; each login post it receives is noted in `arrived`."""

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        arrived.append(str(form.get("password", "")))
        if form.get("username") == "alice" and form.get("password") == "alice-demo":
            await asyncio.sleep(pause)
            response = web.Response(status=302, headers={"Location": "/contacts"})
            response.set_cookie(CRM_COOKIE, secrets.token_urlsafe(16))
            return response
        return web.Response(text="Wrong user name or password.")

    app = web.Application()
    app.router.add_post("/login", login)
    return app


async def noted_leaving(gw: SignInGateway, count: int) -> None:
    """Until `count` logins are audited as left and their counts are done (the gateway may
    notice a client gone a moment after the CRM got its post), or three seconds passed."""
    for _ in range(150):
        events = await audit_trail(gw.served, "signin.crm_failed")
        counting = [t for t in gw.signin.tasks.running if t.get_name() == "password count"]
        if len([e for e in events if e.reason == "left"]) >= count and not counting:
            return
        await asyncio.sleep(0.02)


async def test_each_abandoned_login_is_audited_once(start_app: AppStarter, start: Start) -> None:
    """Three guesses left before the CRM's slow refusal: three `signin.crm_failed` events
    with reason `left`, one each, for alice."""
    arrived: list[str] = []
    slow = await start_app(crm_slow_to_refuse(arrived), handler_cancellation=False)
    gw = await start(slow.url)
    for n in range(3):
        await abandon_login(gw.url, source(0), f"guess-{n}")
        await settled(gw, arrived, n + 1)
    await noted_leaving(gw, 3)
    await asyncio.sleep(0.3)  # and no second event for any of them comes later
    events = await audit_trail(gw.served, "signin.crm_failed")
    assert [(e.user, e.reason) for e in events] == [("alice", "left")] * 3


async def test_an_abandoned_guess_counts_once_like_an_answered_one(
    start_app: AppStarter, start: Start
) -> None:
    """Two guesses left, then wrong passwords answered from the same address: exactly
    `LIMIT - 2` more are answered before the address is held (an abandoned guess counts
    once, not twice); another address is not held by them."""
    arrived: list[str] = []
    slow = await start_app(crm_slow_to_refuse(arrived), handler_cancellation=False)
    gw = await start(slow.url)
    for n in range(2):
        await abandon_login(gw.url, source(0), f"left-{n}")
        await settled(gw, arrived, n + 1)
    await noted_leaving(gw, 2)
    answered = 0
    for _ in range(LIMIT):
        status = await login_from(gw.url, source(0), "alice", "wrong")
        if status != 429:
            answered += 1
    assert answered == LIMIT - 2
    assert await login_from(gw.url, source(1), "alice", "alice-demo") in (302, 303)


async def test_a_right_password_the_client_abandons_does_not_lock_the_user(
    start_app: AppStarter, start: Start
) -> None:
    """alice on a CRM slow to admit: her browser gives up (a second click, a reload) on
    `LIMIT` logins with her right password, which the CRM admits each time. None was a
    wrong password: her next login from the same address is not held."""
    arrived: list[str] = []
    slow = await start_app(crm_slow_to_admit(arrived), handler_cancellation=False)
    gw = await start(slow.url)
    for n in range(LIMIT):
        await abandon_login(gw.url, source(0), "alice-demo")
        await settled(gw, arrived, n + 1)
    await noted_leaving(gw, LIMIT)
    assert len(arrived) == LIMIT  # the CRM had (and admitted) every one
    assert await login_from(gw.url, source(0), "alice", "alice-demo") in (302, 303)


async def test_a_graceful_stop_counts_no_password_against_the_user(
    start_app: AppStarter, tmp_path: Path
) -> None:
    """The gateway stops as `crm-gateway run` does on SIGTERM (drain with a short grace,
    then the runner's cut) while alice's right password is at a CRM slow to admit: her
    client did not leave and the CRM did not refuse, so nothing is counted or audited as a
    wrong password."""
    arrived: list[str] = []
    slow = await start_app(crm_slow_to_admit(arrived, pause=4.0), handler_cancellation=False)
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "policy.yaml").write_text(DEMO_POLICY)
    text = (
        f"{DEMO_LOGIN}{write_keys(tmp_path)}policies: {folder}\n"
        "shutdown: {drain_delay: 0s, grace: 0.2s}\n"
    )
    config = gateway_config(slow.url, tmp_path, text)
    app = build_app(config, clock=FakeClock(1_800_000_000.0))
    served = await serve(app, handler_cancellation=True, shutdown_timeout=LAST_CUT)
    try:
        login = asyncio.create_task(login_from(served.url, source(0), "alice", "alice-demo"))
        for _ in range(200):
            if arrived:
                break
            await asyncio.sleep(0.02)
        assert arrived == ["alice-demo"]
        [site] = list(served.runner.sites)
        await drain(served.runner, site, app[READINESS], Shutdown(0.0, 0.2), StopRequest())
    finally:
        await served.runner.cleanup()
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(login, 10)
    store = SqliteDurableStore(str(tmp_path / "gateway.db"))
    await store.open()
    try:
        events = await store.audit_events(AuditQuery(names=("signin.crm_failed",)))
    finally:
        await store.close()
    assert [event for _, event in events] == []


# -- 4. the policy loader's paused collector ------------------------------------------------------


BROKEN = "users: {alice: {interval: sometimes}}\nnonsense: [\n"


async def test_reloads_in_threads_leave_the_collector_on(
    start_app: AppStarter, start: Start, tmp_path: Path
) -> None:
    """Reloads through the running gateway's LivePolicy (each load in a thread), one at a
    time and many at once, of good files and of broken ones: Python's cycle collector is
    on after every one, as it was before."""
    crm = await start_app(cookie_crm())
    gw = await start(crm.url, login=LOGIN, policy=POLICY)
    guard = gw.served.app[GUARD]
    policy_file = Path(guard.folder) / "policy.yaml"
    assert gc.isenabled()
    assert await guard.reload("test")
    assert gc.isenabled()
    policy_file.write_text(BROKEN)
    assert not await guard.reload("test")
    assert gc.isenabled()
    for round_ in range(5):
        policy_file.write_text(BROKEN if round_ % 2 else POLICY)
        results = await asyncio.gather(*(guard.reload(f"race {n}") for n in range(8)))
        assert len(set(results)) == 1, results
        assert gc.isenabled(), round_
    policy_file.write_text(POLICY)
    assert await guard.reload("test")
    assert gc.isenabled()


# -- 5. forward auth's clear page, for names that fold to the CRM's -------------------------------


@pytest.mark.parametrize("spelled", ["CRM_SESSION", "crm_\u017fession", "CRM_\u017fESSION"])
async def test_forward_auths_clear_forgets_a_folding_name_as_the_browser_spells_it(
    crm: Served, start: Start, spelled: str
) -> None:
    """A CRM cookie the endpoint refuses under a name that folds to the CRM's (another case,
    the long s): refused at /_gateway/auth, and the clear page answers (no error) telling
    the browser to forget that very name, so it is not refused again forever."""
    gw = await start(crm.url, extra="forward_auth: {}\ntrusted_proxies: [127.0.0.1/32]\n")
    cookie = f"{spelled}=stolen-value"
    sent = {
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/contacts",
        "X-Forwarded-Host": "crm.test",
        "Cookie": cookie,
    }
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(gw.url + "/_gateway/auth", headers=sent, allow_redirects=False) as r:
            assert r.status == 401, r.status
        url = gw.url + "/_gateway/auth/clear?next=%2Fcontacts"
        async with http.get(url, headers={"Cookie": cookie}, allow_redirects=False) as r:
            assert (r.status, r.headers.get("Location")) == (303, "/contacts")
            cleared = r.headers.getall("Set-Cookie", [])
    assert f"{spelled}=; Max-Age=0; Path=/" in cleared, cleared
