"""Attacks on verification intervals inside a session (issue #16), as an outsider would make
them: a real gateway before the Django-shaped CRM, real TOTP and recovery codes, a fake clock,
a scripted browser. Each finding is a test marked xfail(strict) naming it; the attacks that
held are plain tests.

The CRM here is tests/django_crm.py with three routes more, each noting what reached it:
`/exports/<path:name>` and `/admin/<path:name>` (Django's `path()` converters match `..`
too, and a WSGI server hands Django the path as the client sent it, dot segments and all) and
`/clients/<id>/`, a Rails- or Laravel-style handler that reads `_method` from the form. The
gateway-mode stories (the identity in X-Remote-User) run before the echoing upstream.

Findings: 1 a kept request is sent with its raw target, not the path judged; 2 the CRM's
logout sent as a kept request leaves the gateway session signed in; 3 kept bodies are not
bounded per session; 4 a kept POST is judged again without its `_method`; 5 a POST read for
`_method` is kept empty; 6 a user's API token passes a `fresh` path with no factor.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway.crypto import hash_password
from gateway.policy.tokens import digest
from gateway.signin.session import Session
from gateway.web.keys import DURABLE
from gateway.web.revocations import read_revocations
from tests.conftest import Served, serve
from tests.django_crm import (
    CLIENTS,
    CLIENTS_ADD_PATH,
    CLIENTS_PATH,
    CSRF_FIELD,
    LOGOUT_PATH,
    SEEN,
    SESSION_COOKIE,
    SESSIONS,
    django_crm_app,
)
from tests.flows.test_reverify import add_client_form, keep_a_form
from tests.flows.test_signin_codes import messages, outbox_config
from tests.flows.test_signin_django import DJANGO_LOGIN, django_login
from tests.signin_kit import (
    GATEWAY_COOKIE,
    LONG_SESSIONS,
    Browser,
    Browsers,
    SignInGateway,
    Start,
    field,
)

HOUR = 3600.0
POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
  reverify: 8h
  remember_device: 30d
users:
  dora: {email: dora@example.org}
  emil: {email: emil@example.org}
paths:
  - {path: /exports/**, allow: [authenticated], fresh: 15m, factors: [totp]}
  - {path: /admin/**, allow: ["user:emil"]}
  - {path: "/**", allow: [anyone]}
"""
# DELETE on a client is emil's alone: a POST there could carry `_method=DELETE`, so the
# gateway reads such a POST's body before it goes (gateway.web.pipeline.look_for_override).
DELETE_FOR_EMIL = POLICY.replace(
    "paths:\n", 'paths:\n  - {path: /clients/**, methods: [DELETE], allow: ["user:emil"]}\n'
)
# Clients are emil's alone.
CLIENTS_FOR_EMIL = POLICY.replace(
    "paths:\n", 'paths:\n  - {path: /clients/**, allow: ["user:emil"]}\n'
)
EXPORT = "iban;client\nDE89370400440532013000;Acme Corporation\n"

EXPORTS = web.AppKey("exports_served", list[tuple[str, str]])  # (method, raw path)
ADMIN = web.AppKey("admin_served", list[tuple[str, str]])
POSTED = web.AppKey("client_posts", list[tuple[str, dict[str, str]]])  # (raw path, form)


def attacked_crm() -> web.Application:
    app = django_crm_app()
    app[EXPORTS], app[ADMIN], app[POSTED] = [], [], []

    async def export(request: web.Request) -> web.Response:
        app[EXPORTS].append((request.method, request.raw_path))
        return web.Response(text=EXPORT, content_type="text/csv")

    async def admin(request: web.Request) -> web.Response:
        app[ADMIN].append((request.method, request.raw_path))
        return web.Response(text="<h1>Site administration</h1>", content_type="text/html")

    async def client(request: web.Request) -> web.Response:
        form = await request.post()
        app[POSTED].append((request.raw_path, {k: str(v) for k, v in form.items()}))
        raise web.HTTPFound(CLIENTS_PATH)

    app.router.add_route("*", "/exports/{name:.*}", export)
    app.router.add_route("*", "/admin/{name:.*}", admin)
    app.router.add_post(r"/clients/{id:\d+}/", client)
    return app


@pytest.fixture
async def django() -> AsyncIterator[Served]:
    served = await serve(attacked_crm())
    yield served
    await served.runner.cleanup()


@pytest.fixture
async def gw(django: Served, start: Start) -> SignInGateway:
    return await start(django.url, login=DJANGO_LOGIN, policy=POLICY, extra=LONG_SESSIONS)


async def first_sign_in(b: Browser, user: str = "dora") -> tuple[str, list[str]]:
    """Django's login, enrolment, codes saved: (the app's secret, the recovery codes)."""
    status, _, r = await django_login(b, user, f"{user}-pass")
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    secret, codes = await b.enrol()
    assert (await b.confirm_codes()).headers["Location"] == CLIENTS_PATH
    return secret, codes


async def post_raw(b: Browser, raw_path: str, data: dict[str, str]) -> aiohttp.ClientResponse:
    """A form POST whose path goes out byte for byte (curl --path-as-is)."""
    url = URL(b.gw.url + raw_path, encoded=True)
    async with b.http.post(url, data=data, allow_redirects=False) as r:
        await r.read()
        return r


def kept_entries(gw: SignInGateway) -> dict[str, bytes]:
    data = gw.signin.shared._data  # type: ignore[attr-defined]
    return {k: v for k, (_, v) in data.items() if k.startswith("kept:")}


def session_id(gw: SignInGateway, b: Browser) -> str:
    cookie = b.cookie(GATEWAY_COOKIE)
    assert cookie
    sid = gw.signin.book.sid_from_cookie(cookie)
    assert sid
    return sid


# -- findings ----------------------------------------------------------------------------------


async def test_a_kept_form_goes_to_the_crm_as_the_path_that_was_judged(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    _, codes = await first_sign_in(b)
    form = await add_client_form(b)
    gw.clock.advance(8 * HOUR)  # due: any factor will do, a recovery code too
    r = await post_raw(b, "/admin/%2e%2e/clients/add/", form)  # dora is refused /admin/**
    assert (r.status, r.headers["Location"]) == (303, "/_gateway/challenge")
    _, body, _ = await b.answer(codes[0], factor="recovery")
    # Judged as /clients/add/ (open to anyone): so it must arrive there. It arrives as
    # /admin/%2e%2e/clients/add/, and the CRM serves its admin area, emil's alone, to dora.
    assert django.app[ADMIN] == [] and "Site administration" not in body


async def test_a_kept_form_cannot_reach_a_fresh_path_by_its_spelling(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    _, codes = await first_sign_in(b)
    form = await add_client_form(b)
    gw.clock.advance(8 * HOUR)
    r = await post_raw(b, "/exports/../clients/add/", form)
    assert (r.status, r.headers["Location"]) == (303, "/_gateway/challenge")
    _, body, _ = await b.answer(codes[0], factor="recovery")
    assert django.app[EXPORTS] == [] and EXPORT not in body


async def test_the_crms_logout_when_a_verification_is_due_signs_out_at_once(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    """Finding 2 (fixed): the logout was kept and sent after the code without ending the
    gateway session. Signing out needs no code: it goes at once, and ends both sessions."""
    b = browsers(gw)
    await first_sign_in(b)
    status, html, _ = await b.get(CLIENTS_PATH)
    assert status == 200
    gw.clock.advance(8 * HOUR)  # back from lunch, the user clicks "Log out"
    status, _, r = await b.post(LOGOUT_PATH, {CSRF_FIELD: field(html, CSRF_FIELD)})
    assert (status, r.headers["Location"]) == (302, "/accounts/login/")  # Django logged out
    assert django.app[SESSIONS] == {}
    status, _, _ = await b.get("/_gateway/account")  # and the gateway session is over
    assert status == 400


GATEWAY_MODE_POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
  reverify: 8h
paths:
  - {path: "/**", allow: [authenticated]}
"""


async def signed_in_at_the_gateway(
    upstream: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> tuple[SignInGateway, Browser, str]:
    """login.mode gateway (the CRM trusts X-Remote-User) with the CRM's logout configured:
    dora signs in at the gateway's page and adds her app. (gateway, browser, secret)"""
    users = tmp_path / "users.yaml"
    users.write_text(f"dora: '{hash_password('dora-password')}'\n")
    login = (
        f"login:\n  mode: gateway\n  users_file: {users}\n  identity_header: X-Remote-User\n"
        "  logout: {path: /logout, method: POST}\n"
    )
    gw = await start(upstream.url, login=login, policy=GATEWAY_MODE_POLICY, extra=LONG_SESSIONS)
    b = browsers(gw)
    status, html, _ = await b.get("/_gateway/login?next=/reports/q3")
    assert status == 200
    form = {"csrf": field(html, "csrf"), "next": "/reports/q3"}
    status, _, r = await b.post(
        "/_gateway/login", {**form, "username": "dora", "password": "dora-password"}
    )
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    secret, _ = await b.enrol()
    await b.confirm_codes()
    return gw, b, secret


def remote_user(body: str) -> list[str]:
    return [v for k, v in json.loads(body)["headers"] if k.lower() == "x-remote-user"]


async def test_the_crms_logout_not_kept_ends_the_gateway_session(
    upstream: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    _, b, _ = await signed_in_at_the_gateway(upstream, start, browsers, tmp_path)
    status, body, _ = await b.get("/reports/q3")
    assert (status, remote_user(body)) == (200, ["dora"])
    assert (await b.post("/logout", {}))[0] == 200
    status, _, r = await b.get("/reports/q3")
    assert (status, r.headers["Location"]) == (303, "/_gateway/login?next=%2Freports%2Fq3")


async def test_a_kept_request_carries_no_identity_header_of_the_clients(
    upstream: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    gw, b, secret = await signed_in_at_the_gateway(upstream, start, browsers, tmp_path)
    gw.clock.advance(8 * HOUR)
    planted = {"X-Remote-User": "admin", "X_Remote_User": "admin", "x-REMOTE_user": "root"}
    for name, value in planted.items():
        b.http.headers[name] = value
    status, _, r = await b.post("/reports/q3", {"a": "1"})
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    for name in planted:
        del b.http.headers[name]
    status, body, _ = await b.answer(b.code(secret, 31))
    seen = json.loads(body)
    assert (status, seen["raw_path"], remote_user(body)) == (200, "/reports/q3", ["dora"])
    assert not [
        k
        for k, _ in seen["headers"]
        if k.lower().replace("_", "-").strip() == "x-remote-user" and k != "X-Remote-User"
    ]


async def test_the_crms_logout_when_a_verification_is_due_signs_out_in_gateway_mode(
    upstream: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    gw, b, _secret = await signed_in_at_the_gateway(upstream, start, browsers, tmp_path)
    gw.clock.advance(8 * HOUR)
    status, body, _ = await b.post("/logout", {})  # "Sign out", after lunch: at once
    assert json.loads(body)["raw_path"] == "/logout"  # the CRM got the logout
    status, body, _ = await b.get("/reports/q3")  # the next person at this browser
    assert status == 303, remote_user(body)


async def test_one_session_keeps_at_most_one_form(gw: SignInGateway, browsers: Browsers) -> None:
    b = browsers(gw)
    await first_sign_in(b)
    form = await add_client_form(b)
    gw.clock.advance(8 * HOUR)
    big = {**form, "notes": "x" * 1_000_000}  # under sessions.keep_body (1 MiB)
    for _ in range(6):
        status, _, r = await b.post(CLIENTS_ADD_PATH, big)
        assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    kept = kept_entries(gw)
    assert len(kept) == 1, f"{len(kept)} entries, {sum(map(len, kept.values()))} bytes"


async def test_a_kept_method_override_refused_by_a_reload_is_never_sent(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    secret = (await first_sign_in(b))[0]
    form = await add_client_form(b)
    gw.clock.advance(8 * HOUR)
    delete = {CSRF_FIELD: form[CSRF_FIELD], "_method": "DELETE"}
    status, _, r = await b.post("/clients/2/", delete)
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    (Path(gw.signin.guard.folder) / "policy.yaml").write_text(DELETE_FOR_EMIL)
    assert await gw.signin.guard.reload("test")
    status, _, _ = await b.post("/clients/2/", delete)  # sent now, it is refused…
    assert status == 400 and django.app[POSTED] == []
    await b.answer(b.code(secret, 31))
    assert django.app[POSTED] == []  # …and the kept one must be too


async def test_a_form_under_a_method_rule_is_kept_whole(
    django: Served, start: Start, browsers: Browsers
) -> None:
    gw = await start(django.url, login=DJANGO_LOGIN, policy=DELETE_FOR_EMIL, extra=LONG_SESSIONS)
    b = browsers(gw)
    secret = (await first_sign_in(b))[0]
    _, before = await keep_a_form(b, gw, django)
    status, _, r = await b.answer(b.code(secret, 31))
    assert django.app[CLIENTS] == [*before, {"name": "Müller GmbH", "email": "m@example.org"}]
    assert (status, r.headers["Location"]) == (302, CLIENTS_PATH)


async def test_an_api_token_does_not_pass_a_fresh_path_without_a_factor(
    gw: SignInGateway, django: Served
) -> None:
    token = "dora-sync-" + "k" * 32
    await gw.served.app[DURABLE].add_token("tok_dora", "dora", digest(token), "", 0.0)
    await gw.signin.guard.refresh_tokens()
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{gw.url}/exports/clients.csv", headers={"Authorization": f"Bearer {token}"}
        ) as r,
    ):
        body = await r.text()
    assert django.app[EXPORTS] == [] and EXPORT not in body


# -- attacks that held -------------------------------------------------------------------------

SPELLINGS = (
    "/exports/q.csv",
    "/exports",
    "/exports/",
    "//exports/q.csv",
    "/./exports/q.csv",
    "/exports/./q.csv",
    "/clients/../exports/q.csv",
    "/%65xports/q.csv",
    "/%2e/exports/q.csv",
    "/exports//q.csv",
    "/EXPORTS/q.csv",  # another resource to a CRM that routes case-sensitively, as Django does
    "/Exports/q.csv",
    "/exports;jsessionid=1/q.csv",
    "/exports%2fq.csv",
    "/exports%3bx/q.csv",
    "/exports/q.csv%00",
    "/exports/q.csv#x",
)
SCRIPT = {"Sec-Fetch-Mode": "cors", "Accept": "*/*"}
XHR = {"X-Requested-With": "XMLHttpRequest", "Accept": "application/json"}
NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}


async def test_no_method_spelling_or_header_reaches_a_fresh_path_past_its_time(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    await first_sign_in(b)
    assert (await b.get("/exports/q.csv"))[0] == 200  # within 15 minutes: it goes
    served = len(django.app[EXPORTS])
    gw.clock.advance(16 * 60)
    answers: set[int] = set()
    for method in ("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "POST", "PROPFIND"):
        for path in SPELLINGS:
            for headers in ({}, SCRIPT, XHR, NAVIGATE):
                url = URL(gw.url + path, encoded=True)
                async with b.http.request(
                    method, url, headers=headers, data=b"a=1", allow_redirects=False
                ) as r:
                    body = await r.read()
                answers.add(r.status)
                assert b"DE89" not in body, (method, path, headers, r.status)
    assert django.app[EXPORTS][served:] == []
    assert answers <= {303, 401, 400, 404, 405}, answers


async def test_a_websocket_upgrade_past_the_time_never_reaches_the_crm(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    await first_sign_in(b)
    gw.clock.advance(16 * 60)
    seen = len(django.app[SEEN])
    for headers in ({}, {"Sec-Fetch-Mode": "websocket"}, NAVIGATE):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await b.http.ws_connect(f"{gw.url}/exports/live", headers=headers)
        # 401 JSON, or (a navigation) the redirect to the challenge, which the client followed
        went = refused.value.request_info.url.path
        assert refused.value.status == 401 or went == "/_gateway/challenge", went
    assert django.app[SEEN][seen:] == [] and django.app[EXPORTS] == []


async def test_a_due_session_gets_nothing_by_leaving_out_its_gateway_cookie_or_adding_a_token(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    await first_sign_in(b)
    crm_session = b.cookie(SESSION_COOKIE)
    assert crm_session
    gw.clock.advance(8 * HOUR)
    assert (await b.get(CLIENTS_PATH))[0] == 303  # due
    # The CRM's cookie alone: the gateway holds it back, Django sees an anonymous visitor.
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(
            gw.url + CLIENTS_PATH,
            headers={"Cookie": f"{SESSION_COOKIE}={crm_session}"},
            allow_redirects=False,
        ) as r,
    ):
        assert r.status == 302 and r.headers["Location"].startswith("/accounts/login/")
    assert SESSION_COOKIE not in django.app[SEEN][-1].cookies
    # An unregistered token beside the session: refused before the CRM.
    seen = len(django.app[SEEN])
    async with b.http.get(
        gw.url + CLIENTS_PATH, headers={"Authorization": "Bearer " + "u" * 40}
    ) as r:
        assert r.status == 401
    assert django.app[SEEN][seen:] == []
    # Her own registered token beside it: judged as the token, the CRM session left out.
    token = "dora-sync-" + "k" * 32
    await gw.served.app[DURABLE].add_token("tok_dora", "dora", digest(token), "", 0.0)
    await gw.signin.guard.refresh_tokens()
    async with b.http.get(
        gw.url + CLIENTS_PATH, headers={"Authorization": f"Bearer {token}"}, allow_redirects=False
    ) as r:
        assert r.status == 302  # Django: nobody signed in
    assert SESSION_COOKIE not in django.app[SEEN][-1].cookies


async def test_challenge_posts_at_once_and_replayed_send_a_kept_form_once_at_most(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    secret, codes = await first_sign_in(b)
    _, before = await keep_a_form(b, gw, django)
    status, html, _ = await b.get("/_gateway/challenge")
    assert status == 200
    csrf = field(html, "csrf")
    old_cookie = b.cookie(GATEWAY_COOKIE)
    answers = [
        {"csrf": csrf, "factor": "totp", "code": b.code(secret, 31)},
        {"csrf": csrf, "factor": "totp", "code": b.code(secret, 31)},
        {"csrf": csrf, "factor": "recovery", "code": codes[0]},
        {"csrf": csrf, "factor": "recovery", "code": codes[1]},
    ]

    async def post(data: dict[str, str]) -> int:
        async with b.http.post(
            f"{gw.url}/_gateway/challenge", data=data, allow_redirects=False
        ) as r:
            await r.read()
            return r.status

    statuses = await asyncio.gather(*(post(a) for a in answers))
    assert len(django.app[CLIENTS]) - len(before) <= 1, statuses
    assert statuses.count(302) <= 1, statuses
    # The challenge POST again, with the session cookie it had (the back button, a replay).
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.post(
            f"{gw.url}/_gateway/challenge",
            data={"csrf": csrf, "factor": "recovery", "code": codes[2]},
            headers={"Cookie": f"{GATEWAY_COOKIE}={old_cookie}"},
            allow_redirects=False,
        ) as r,
    ):
        assert r.status == 400  # that session ended with the code


@pytest.mark.parametrize("meanwhile", ["logout", "revoked", "other_user"])
async def test_a_kept_form_is_never_sent_after_its_session_ended(
    gw: SignInGateway, browsers: Browsers, django: Served, meanwhile: str
) -> None:
    b = browsers(gw)
    secret, _ = await first_sign_in(b)
    form, before = await keep_a_form(b, gw, django)
    assert len(kept_entries(gw)) == 1
    status, html, _ = await b.get("/_gateway/challenge")
    assert status == 200
    if meanwhile == "logout":
        assert (await b.post("/_gateway/logout", {"csrf": field(html, "csrf")}))[0] == 303
    elif meanwhile == "revoked":
        durable = gw.served.app[DURABLE]
        await durable.revoke_sessions("dora", gw.clock.now())
        await read_revocations(durable, gw.signin.book)
        assert (await b.get("/_gateway/challenge"))[0] == 400
    if meanwhile == "other_user":
        # The same browser posts Django's login form as emil: his login ends dora's session.
        login = {CSRF_FIELD: form[CSRF_FIELD], "username": "emil", "password": "emil-pass"}
        status, _, r = await b.post("/accounts/login/", {**login, "next": CLIENTS_PATH})
        assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
        await b.enrol()
        assert (await b.confirm_codes()).headers["Location"] == CLIENTS_PATH
    else:
        status, _, r = await django_login(b, "dora", "dora-pass")
        assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
        status, _, r = await b.answer(b.code(secret, 31))
        assert status == 303
    assert django.app[CLIENTS] == before
    assert (await b.get(CLIENTS_PATH))[0] == 200  # signed in, nothing sent on the way


async def test_a_kept_entry_carried_into_another_session_never_opens(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    secret, _ = await first_sign_in(b)
    form = await add_client_form(b)
    other = browsers(gw)  # dora's second browser, signed in with her code
    gw.clock.advance(31)
    status, _, r = await django_login(other, "dora", "dora-pass")
    assert r.headers["Location"] == "/_gateway/challenge"
    assert (await other.answer(other.code(secret)))[0] == 303
    before = django.app[CLIENTS].copy()
    book, shared, pending = gw.signin.book, gw.signin.shared, gw.signin.pending

    async def record(browser: Browser) -> Session:
        found = Session.from_bytes(await shared.get(f"session:{session_id(gw, browser)}") or b"")
        assert found is not None
        return found

    # The sealed pending value, moved across as it is: it does not open in another session.
    gw.clock.advance(8 * HOUR)
    assert (await b.post(CLIENTS_ADD_PATH, form))[0] == 303
    assert (await other.get(CLIENTS_PATH))[0] == 303  # due as well
    target = await record(other)
    target.pending["kept"] = (await record(b)).pending["kept"]
    assert await book.save(target)
    status, _, r = await other.answer(other.code(secret, 31))
    assert (status, r.headers["Location"]) == (303, CLIENTS_PATH)  # a plain return
    # The entry's id itself, sealed as the other session's own: the entry does not open there.
    gw.clock.advance(8 * HOUR)
    assert (await b.post(CLIENTS_ADD_PATH, form))[0] == 303
    assert (await other.get(CLIENTS_PATH))[0] == 303
    entry = pending.unsealed(await record(b), "kept")
    assert entry
    target = await record(other)
    pending.seal(target, "kept", entry)
    assert await book.save(target)
    status, html, _ = await other.answer(other.code(secret, 31))
    assert status == 410 and "was not sent" in html
    assert django.app[CLIENTS] == before


async def test_a_kept_form_to_a_path_a_reload_closed_is_never_sent(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    secret, _ = await first_sign_in(b)
    _, before = await keep_a_form(b, gw, django)
    (Path(gw.signin.guard.folder) / "policy.yaml").write_text(CLIENTS_FOR_EMIL)
    assert await gw.signin.guard.reload("test")
    status, html, _ = await b.answer(b.code(secret, 31))
    assert status == 403 and "was not sent" in html
    assert django.app[CLIENTS] == before


NEXT = (
    "//evil.example/",
    "/\\evil.example/",
    "/%2F%2Fevil.example/",
    "/%2f/evil.example/",
    "/%5Cevil.example/",
    "/%252F%252Fevil.example/",
    "https://evil.example/",
    "https:evil.example",
    "/\t/evil.example/",
    "/%09/evil.example/",
    "/%0d%0aLocation:%20https://evil.example/",
    "/.//evil.example/",
    "/..//evil.example/",
    "\\\\evil.example",
    " //evil.example/",
    "/%E3%80%80/evil.example/",
    "javascript:alert(1)",
)


async def test_the_challenges_next_never_leaves_the_site(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    secret, _ = await first_sign_in(b)
    here = urlsplit(gw.url)
    for n, target in enumerate(NEXT, start=1):
        gw.clock.advance(31)  # a new authenticator step for each code
        url = URL(f"{gw.url}/_gateway/challenge?next={quote(target, safe='%/:')}", encoded=True)
        async with b.http.get(url, allow_redirects=False) as r:
            assert r.status == 200, target
        status, _, r = await b.answer(b.code(secret))
        assert status == 303, (n, target, status)
        went = urljoin(gw.url + "/", r.headers["Location"])
        assert urlsplit(went)[:2] == here[:2], (target, r.headers["Location"])
        assert "\r" not in r.headers["Location"] and "\n" not in r.headers["Location"]


async def test_a_recovery_code_does_not_pass_a_path_that_counts_the_authenticator_only(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    b = browsers(gw)
    _, codes = await first_sign_in(b)
    gw.clock.advance(16 * 60)
    assert (await b.get("/exports/q.csv"))[0] == 303
    status, html, _ = await b.get("/_gateway/challenge?factor=recovery")
    assert status == 200
    status, _, _ = await b.post(
        "/_gateway/challenge",
        {"csrf": field(html, "csrf"), "factor": "recovery", "code": codes[0]},
    )
    assert status == 400  # taken for an authenticator code, and wrong as one
    assert await gw.signin.recovery.left("dora") == 10  # the code was not spent
    assert (await b.get("/exports/q.csv"))[0] == 303
    # A reverify that any factor passes (a recovery code) does not count for the path either.
    gw.clock.advance(8 * HOUR)
    assert (await b.get(CLIENTS_PATH))[0] == 303
    assert (await b.answer(codes[1], factor="recovery"))[0] == 303
    assert (await b.get(CLIENTS_PATH))[0] == 200
    assert (await b.get("/exports/q.csv"))[0] == 303
    assert django.app[EXPORTS] == []


async def test_a_remembered_device_never_stands_in_for_a_due_verification(
    gw: SignInGateway, browsers: Browsers, django: Served
) -> None:
    secret, _ = await first_sign_in(browsers(gw))
    b = browsers(gw)
    gw.clock.advance(31)
    status, _, r = await django_login(b, "dora", "dora-pass")
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    assert (await b.answer(b.code(secret), remember=True))[0] == 303

    async def sign_in_again() -> str:
        status, html, _ = await b.get("/_gateway/account")
        assert status == 200
        assert (await b.post("/_gateway/logout", {"csrf": field(html, "csrf")}))[0] == 303
        status, _, r = await django_login(b, "dora", "dora-pass")
        return str(r.headers["Location"])

    gw.clock.advance(7 * HOUR)
    assert await sign_in_again() == CLIENTS_PATH  # the device stands in for the code…
    assert (await b.get(CLIENTS_PATH))[0] == 200
    gw.clock.advance(HOUR)  # …and its verification, 8 h old now, is due in that session
    assert (await b.get(CLIENTS_PATH))[0] == 303
    assert (await b.get("/exports/q.csv"))[0] == 303  # no factor passed in this session
    assert await sign_in_again() == "/_gateway/challenge"  # nor at a new sign-in


async def test_gateway_pages_visited_while_due_do_not_renew_the_verification(
    gw: SignInGateway, browsers: Browsers
) -> None:
    b = browsers(gw)
    await first_sign_in(b)
    gw.clock.advance(8 * HOUR)
    assert (await b.get(CLIENTS_PATH))[0] == 303
    for page in ("account", "challenge", "recovery-codes"):
        await b.get(f"/_gateway/{page}")
    # A new app (whose codes the session holder makes) needs the factor on file first.
    status, _, r = await b.get("/_gateway/enrol")
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    status, html, _ = await b.get("/_gateway/account")
    assert status == 200
    await b.post("/_gateway/account/regenerate", {"csrf": field(html, "csrf")})
    assert (await b.get(CLIENTS_PATH))[0] == 303


async def test_the_decision_memo_follows_a_reload_and_never_crosses_users(
    gw: SignInGateway, browsers: Browsers
) -> None:
    dora, emil = browsers(gw), browsers(gw)
    await first_sign_in(dora)
    await first_sign_in(emil, "emil")
    gw.clock.advance(16 * 60)
    assert (await dora.get(CLIENTS_PATH))[0] == 200  # remembered by the worker now
    (Path(gw.signin.guard.folder) / "policy.yaml").write_text(
        POLICY.replace(
            "paths:\n", "paths:\n  - {path: /clients/**, allow: [authenticated], fresh: 15m}\n"
        )
    )
    assert await gw.signin.guard.reload("test")
    assert (await dora.get(CLIENTS_PATH))[0] == 303
    (Path(gw.signin.guard.folder) / "policy.yaml").write_text(CLIENTS_FOR_EMIL)
    assert await gw.signin.guard.reload("test")
    assert (await emil.get(CLIENTS_PATH))[0] == 200
    assert (await dora.get(CLIENTS_PATH))[0] == 403


async def test_the_recovery_notice_goes_to_its_user_and_holds_no_secret(
    django: Served, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox.jsonl"
    gw = await start(
        django.url,
        login=DJANGO_LOGIN,
        policy=POLICY,
        extra=LONG_SESSIONS + outbox_config(outbox),
    )
    b = browsers(gw)
    _, codes = await first_sign_in(b)
    form = await add_client_form(b, "Geheim & Co KG")
    gw.clock.advance(8 * HOUR)
    assert (await b.post(CLIENTS_ADD_PATH, form))[0] == 303
    assert (await b.answer(codes[3], factor="recovery"))[0] == 302
    # The notice goes in the background: wait for its task (it may be done already).
    sending = [t for t in gw.signin.tasks.running if t.get_name() == "notice to dora"]
    if sending:
        await asyncio.wait(sending)
    told = [m for m in messages(outbox) if "recovery code was used" in m.get("subject", "")]
    assert [m["to"] for m in told] == ["dora@example.org"]
    everything = "".join(str(m) for m in messages(outbox))
    assert codes[3] not in everything and "Geheim" not in everything
    assert not any(c in everything for c in codes)
