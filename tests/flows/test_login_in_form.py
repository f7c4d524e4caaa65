"""The CRM's login told apart by its query (`/index.php?action=Login`) and named in the form
instead: vtiger's and SugarCRM's login forms post to `index.php` with `action=Login` as a
hidden field, and a PHP CRM reading `$_REQUEST` takes the form's `action` over the query's.
Such a login is the login to the gateway too: its password is counted, its user judged, its
cookie held for the second factor; the CRM's other forms and uploads to the same path still
reach it whole. Real gateway, a stand-in PHP CRM on loopback, real TOTP codes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import Served, send_raw, serve_handler
from tests.flows.test_case_insensitive_paths import ask_endpoint, status_of
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.flows.test_paths_case_attacks import PHP_LOGIN, PHP_POLICY
from tests.signin_kit import Browser, SignInGateway, Start, audit_trail, set_cookie_names

PHP_SESSION = "PHPSESSID"
# (method, action, with the session, bytes of the body) of each request the CRM served
SERVED = web.AppKey("served", list[tuple[str, str, bool, int]])
OPEN_POLICY = PHP_POLICY.replace("[authenticated]", "[anyone]")


async def php_crm(request: web.Request) -> web.StreamResponse:
    """A PHP CRM: `action` from the query, then from the form, the form's winning
    ($_REQUEST, request_order "GP"); its login form posts to /index.php."""
    # aiohttp reads a multipart form from the stream, not from what read() kept
    multipart = request.content_type.startswith("multipart/")
    size = request.content_length or 0 if multipart else len(await request.read())
    action = ""
    for key, value in parse_qsl(request.query_string, keep_blank_values=True):
        if key == "action":
            action = value
    form = await request.post() if request.method == "POST" else None
    if form is not None and "action" in form:
        action = str(form["action"])
    signed_in = request.cookies.get(PHP_SESSION) == "alice-session"
    request.app[SERVED].append((request.method, action, signed_in, size))
    if action == "Login" and form is not None:
        if (form.get("username"), form.get("password")) == ("alice", "alice-demo"):
            answer = web.HTTPFound("/index.php?action=List")
            answer.set_cookie(PHP_SESSION, "alice-session")
            raise answer
        return web.Response(text="wrong password")
    if not signed_in:
        raise web.HTTPFound("/index.php?action=Login")
    if action == "Save" and form is not None:
        upload = form.get("file")
        size = len(upload.file.read()) if isinstance(upload, web.FileField) else 0
        return web.Response(text=f"saved {len(str(form.get('note', '')))} {size}")
    return web.Response(text=f"{action or 'List'}: every contact of the company")


@pytest.fixture
async def php() -> AsyncIterator[Served]:
    served = await serve_handler(php_crm, SERVED)
    yield served
    await served.runner.cleanup()


def passwords_checked(php: Served) -> int:
    return sum(1 for _, action, _, _ in php.app[SERVED] if action == "Login")


async def post(b: Browser, target: str, data: object) -> tuple[int, str, aiohttp.ClientResponse]:
    """POST any aiohttp body (a dict is urlencoded, FormData may be multipart)."""
    async with b.http.post(b.gw.url + target, data=data, allow_redirects=False) as r:
        return r.status, await r.text(), r


async def signed_in(php: Served, start: Start, policy: str = PHP_POLICY) -> Browser:
    """alice, signed in through the login as configured, with her code."""
    b = await alice_signs_in(Browser(await start(php.url, login=PHP_LOGIN, policy=policy)))
    assert (await b.get("/index.php?action=List"))[1].startswith("List: every contact")
    return b


async def alice_signs_in(b: Browser) -> Browser:
    """alice through the PHP CRM's login at `b`'s gateway, enrolled with her TOTP code."""
    form = {"username": "alice", "password": "alice-demo"}
    status, _, r = await b.post("/index.php?action=Login", form)
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    await b.enrol()
    await b.confirm_codes()
    return b


LOGIN_FORM = {"module": "Users", "action": "Login", "username": "alice"}


@pytest.mark.parametrize("query", ["", "?module=Users", "?action=List"])
async def test_a_login_named_in_its_form_is_held_for_the_second_factor(
    php: Served, start: Start, query: str
) -> None:
    """vtiger's form: POST /index.php with `action=Login` hidden in it. The right password
    goes to the enrolment, PHPSESSID held until the code; then the CRM is alice's."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY))
    try:
        status, text, r = await b.post(
            f"/index.php{query}", {**LOGIN_FORM, "password": "alice-demo"}
        )
        assert (status, r.headers.get("Location"), text[:300]) == (303, "/_gateway/enrol", "")
        assert PHP_SESSION not in set_cookie_names(r)
        assert b.cookie(PHP_SESSION) is None
        assert passwords_checked(php) == 1
        await b.enrol()
        await b.confirm_codes()
        status, text, _ = await b.get("/index.php?action=List")
        assert (status, text) == (200, "List: every contact of the company")
        [ok] = await audit_trail(b.gw.served, "signin.crm_ok")
        assert ok.user == "alice"
    finally:
        await b.close()


async def test_guesses_in_the_form_lock_the_password_step(php: Served, start: Start) -> None:
    """Five wrong passwords through the form (the default limit), then the right one: the
    sixth is refused by the gateway (429) and never reaches the CRM's password check."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY))
    try:
        for guess in ("one", "two", "three", "four", "five"):
            status, text, _ = await b.post(
                "/index.php?action=List", {**LOGIN_FORM, "password": guess}
            )
            assert (status, text) == (200, "wrong password")
        status, _, _ = await b.post(
            "/index.php?action=List", {**LOGIN_FORM, "password": "alice-demo"}
        )
        assert status == 429
        assert passwords_checked(php) == 5
        failed = await audit_trail(b.gw.served, "signin.crm_failed")
        assert [e.user for e in failed] == ["alice"] * 5
    finally:
        await b.close()


async def test_a_multipart_login_is_refused_before_the_crm(php: Served, start: Start) -> None:
    """The same login as multipart/form-data: PHP reads it, the gateway reads no login in
    it (only urlencoded and JSON): refused (400 login_ambiguous), never at the CRM."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY))
    try:
        form = aiohttp.FormData({**LOGIN_FORM, "password": "guess"})
        form.add_field("file", b"x", filename="x.txt")
        status, text, _ = await post(b, "/index.php?action=List", form)
        assert status == 400, text[:300]
        assert passwords_checked(php) == 0
        [refused] = await audit_trail(b.gw.served, "signin.refused")
        assert refused.reason == "login_ambiguous"
    finally:
        await b.close()


async def test_a_json_login_naming_the_action_is_counted(php: Served, start: Start) -> None:
    """A JSON body with `action: Login` (a framework that merges JSON into its parameters
    reads it): taken for the login and counted."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY))
    try:
        body = json.dumps({**LOGIN_FORM, "password": "guess"})
        headers = {"Content-Type": "application/json"}
        async with b.http.post(
            b.gw.url + "/index.php", data=body, headers=headers, allow_redirects=False
        ) as r:
            assert r.status != 500
        failed = await audit_trail(b.gw.served, "signin.crm_failed")
        assert [e.user for e in failed] == ["alice"]
    finally:
        await b.close()


async def test_the_crms_other_forms_reach_it_whole(php: Served, start: Start) -> None:
    """alice, signed in, saves a note (action=Save in the form, read and not the login)
    and uploads a file larger than login.max_body (64 KiB: it streams, unread): both reach
    the CRM with her session and every byte."""
    b = await signed_in(php, start)
    try:
        note = "n" * 1000
        status, text, _ = await b.post("/index.php", {"action": "Save", "note": note})
        assert (status, text) == (200, "saved 1000 0")
        upload = aiohttp.FormData({"action": "Save", "note": "with a file"})
        upload.add_field("file", b"\x00\x01" * 100_000, filename="contract.pdf")
        status, text, _ = await post(b, "/index.php", upload)
        assert (status, text) == (200, "saved 11 200000")
        assert [s[:3] for s in php.app[SERVED][-2:]] == [("POST", "Save", True)] * 2
    finally:
        await b.close()


async def test_a_signed_in_users_guess_in_the_form_is_counted(php: Served, start: Start) -> None:
    """alice, signed in, posts a login in the form (someone else's password guessed from
    inside a session): counted as a password failure like any other."""
    b = await signed_in(php, start)
    try:
        status, text, _ = await b.post("/index.php?action=List", {**LOGIN_FORM, "password": "x"})
        assert (status, text) == (200, "wrong password")
        failed = await audit_trail(b.gw.served, "signin.crm_failed")
        assert [e.user for e in failed] == ["alice"]
    finally:
        await b.close()


async def raw_post(gw: SignInGateway, target: str, head: str, body: bytes) -> bytes:
    request = f"POST {target} HTTP/1.1\r\nHost: crm\r\n{head}Connection: close\r\n\r\n"
    return await send_raw(gw.served.port, request.encode() + body)


async def test_an_anonymous_body_too_large_to_read_is_refused(php: Served, start: Start) -> None:
    """Anonymous, a form larger than login.max_body to the login's path: it could hide the
    login past what the gateway reads, and no CRM session comes with it: 413."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    body = b"pad=" + b"p" * 70_000 + b"&action=Login&username=alice&password=guess"
    head = f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
    answer = await raw_post(gw, "/index.php?action=List", head, body)
    assert status_of(answer) == 413, answer[:300]
    assert php.app[SERVED] == []


async def test_a_chunked_login_in_the_form_is_read_and_counted(php: Served, start: Start) -> None:
    """The login in the form, sent chunked (no length announced): read, and counted."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    form = b"action=Login&username=alice&password=guess"
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (form[:10], form[10:])) + b"0\r\n\r\n"
    head = "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
    answer = await raw_post(gw, "/index.php", head, chunks)
    assert b"wrong password" in answer, answer[:300]
    failed = await audit_trail(gw.served, "signin.crm_failed")
    assert [e.user for e in failed] == ["alice"]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("Content-Type: application/x-www-form-urlencoded\r\n", b"login_not_proxied"),
        ("Content-Type: multipart/form-data; boundary=x\r\n", b"login_not_proxied"),
        ("", None),
    ],
)
async def test_the_forward_auth_endpoint_refuses_a_form_to_the_logins_path(
    php: Served, start: Start, extra: str, reason: bytes | None
) -> None:
    """Asked as nginx asks about `POST /index.php?action=List` with a body (a route that
    missed the login's path): the endpoint never sees the form, which may be the login, so
    it refuses it; without a body it is judged as any request."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY, extra=FORWARD_AUTH)
    said = await ask_endpoint(gw, "/index.php?action=List", "POST", extra)
    if reason is None:
        assert b"login_not_proxied" not in said and status_of(said) == 200, said[:300]
    else:
        assert status_of(said) == 403 and reason in said, said[:300]


METHOD_POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: required}
roles: {admin: {}}
paths:
  - {path: /index.php, methods: [DELETE], allow: [role:admin]}
  - {path: "/**", allow: [anyone]}
"""


async def test_a_form_read_for_the_login_is_still_read_for_method(
    php: Served, start: Start
) -> None:
    """A form to the login's path is read whole to look for the login; read so, it is still
    looked at for `_method` (a DELETE the rule refuses, run by Laravel or Symfony): 400."""
    gw = await start(php.url, login=PHP_LOGIN, policy=METHOD_POLICY)
    body = b"action=Save&_method=DELETE"
    head = f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
    answer = await raw_post(gw, "/index.php", head, body)
    assert status_of(answer) == 400 and b"method_ambiguous" in answer, answer[:300]
    assert php.app[SERVED] == []


@pytest.mark.parametrize(
    ("target", "form"),
    [
        ("/index.php/anything?action=Login", {}),
        ("/index.php/x/y?action=List", {"action": "Login"}),
        ("/INDEX.PHP/x", {"action": "Login"}),
        # the script's folder: Apache's DirectoryIndex and nginx's `index` run /index.php
        ("/?action=Login", {}),
        ("/", {"action": "Login"}),
        ("/?action=List", {"action": "Login"}),
    ],
)
async def test_a_login_through_the_scripts_path_info_is_counted(
    php: Served, start: Start, target: str, form: dict[str, str]
) -> None:
    """PHP runs /index.php for /index.php/anything (its path info), and for `/` (its
    folder's index): a login sent there is the login, counted and held, as at /index.php."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY))
    try:
        status, text, _ = await b.post(target, {**form, "username": "alice", "password": "x"})
        assert (status, text) == (200, "wrong password")
        failed = await audit_trail(b.gw.served, "signin.crm_failed")
        assert [e.user for e in failed] == ["alice"]
    finally:
        await b.close()
