"""Outsider attacks (stop 28), second part: the CRM's login reached through its front
controller at a path identity.at_login_path does not take for it. PHP runs a script for its
path info (taken already for a login.path that names a script, `/index.php?action=Login`),
but a login.path that names a framework's route (`/login`) is run by Laravel for
`/index.php/login` too: Symfony's Request::getPathInfo() takes the script's name off the
path (Laravel's nginx config, `location ~ ^/index\\.php(/|$)` with fastcgi_split_path_info,
and Apache's AcceptPathInfo give it that path info), and Request::path() trims the slashes.
And a PHP CRM behind a catch-all rewrite (nginx's `try_files $uri $uri/
/index.php?$query_string`, Apache's `FallbackResource /index.php`) runs index.php, with
`action=Login` in its query, for any path that is no file.

The consequence is a password check at the CRM that the gateway neither counts nor audits:
guessing bob's password past the gateway's limits, anonymously where a rule lets anyone
reach the path, or from any signed-in session (the CRM's new cookie is dropped there: a
login in a form never adopted). Through forward auth the endpoint answers 200 for it.
Also: the endpoint takes a method in lower case (as Caddy and Traefik pass it on) for a
method no rule names, where the proxy refuses it; and a user name the CRM's database
collation (utf8mb4_general_ci: `ß` = `s`, `ı` = `I`) reads as another user than
canonical_user does.
Real gateway, stand-in CRMs (test_stop28_outsider_login_parsing, test_login_in_form).
"""

from __future__ import annotations

import unicodedata

import pytest

from tests.conftest import Served, send_raw, serve_handler
from tests.flows.test_case_insensitive_paths import ask_endpoint, status_of
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.flows.test_login_in_form import OPEN_POLICY, SERVED, php, raw_post  # noqa: F401
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.flows.test_stop28_outsider_login_parsing import (
    FORM,
    LOGINS,
    PATH_LOGIN,
    POLICY,
    Handler,
    framework_crm,
    laravel_input,
    sign_in_so,
)
from tests.signin_kit import Browser, Start, audit_trail

ANYONE = POLICY.replace("[authenticated]", "[anyone]")
LARAVEL_FRONT = ["/index.php/login", "/index.php//login"]


async def test_the_laravel_stand_in_routes_its_front_controllers_path_info(start: Start) -> None:
    """The set-up: POST /index.php/login is the stand-in's login route, as Laravel's."""
    crm = await serve_handler(framework_crm(laravel_input), LOGINS)
    try:
        b = Browser(await start(crm.url, login=PATH_LOGIN, policy=ANYONE))
        await b.post("/index.php/login", {"username": "bob", "password": "bob-demo"})
        await b.close()
        assert crm.app[LOGINS] == ["bob"]
    finally:
        await crm.runner.cleanup()


@pytest.mark.parametrize("target", LARAVEL_FRONT)
@pytest.mark.parametrize("signed_in", [False, True], ids=["anyone", "alices-session"])
async def test_the_login_behind_laravels_front_controller_is_watched(
    start: Start, target: str, signed_in: bool
) -> None:
    """Safe: refused, or taken for the login (bob's check counted and audited, his cookie
    held for his code). Before the mend (stop 28): the CRM logs bob in, the gateway counts and audits nothing
    (302 to /home; bob's new cookie is dropped, the guessing is what goes unwatched)."""
    crm = await serve_handler(framework_crm(laravel_input), LOGINS)
    b = Browser(await start(crm.url, login=PATH_LOGIN, policy=POLICY if signed_in else ANYONE))
    try:
        if signed_in:
            alice = b"username=alice&password=alice-demo"
            assert await sign_in_so(b, FORM, alice) == (303, "alice")
            crm.app[LOGINS].clear()
        status, _, _ = await b.post(target, {"username": "bob", "password": "bob-demo"})
        watched = await audit_trail(b.gw.served, "signin.crm_ok", "signin.crm_failed")
        bobs = [e.user for e in watched if e.user == "bob"]
        checked_unwatched = crm.app[LOGINS] == ["bob"] and bobs == []
        assert status >= 400 or not checked_unwatched, (status, crm.app[LOGINS], bobs)
    finally:
        await b.close()
        await crm.runner.cleanup()


@pytest.mark.parametrize("target", LARAVEL_FRONT)
async def test_the_endpoint_refuses_the_login_behind_laravels_front_controller(
    start: Start, target: str
) -> None:
    """Safe: 403 login_not_proxied, as for POST /login itself."""
    crm = await serve_handler(framework_crm(laravel_input), LOGINS)
    try:
        gw = await start(crm.url, login=PATH_LOGIN, policy=ANYONE, extra=FORWARD_AUTH)
        assert status_of(await ask_endpoint(gw, "/login", "POST")) == 403  # held: the route
        said = await ask_endpoint(gw, target, "POST", f"Content-Type: {FORM}\r\n")
        assert status_of(said) == 403 and b"login_not_proxied" in said, said[:300]
    finally:
        await crm.runner.cleanup()


# -- a PHP CRM behind a catch-all rewrite (the stand-in runs index.php for every path) -------

CATCH_ALL = ["/contacts?action=Login", "/index?action=Login", "/index.php5?action=Login"]


@pytest.mark.parametrize("target", CATCH_ALL)
async def test_the_login_behind_a_catch_all_rewrite_is_watched(
    php: Served,  # noqa: F811 (the fixture, imported)
    start: Start,
    target: str,
) -> None:
    """Safe: refused, or counted as alice's password failure. Before the mend: the CRM checks it (its
    answer goes back to the client) and the gateway has audited nothing."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    body = b"username=alice&password=guess"
    head = f"Content-Type: {FORM}\r\nContent-Length: {len(body)}\r\n"
    answer = await raw_post(gw, target, head, body)
    failed = [e.user for e in await audit_trail(gw.served, "signin.crm_failed")]
    checked = [action for _, action, _, _ in php.app[SERVED]]
    assert status_of(answer) >= 400 or failed == ["alice"], (checked, failed, answer[:200])


@pytest.mark.parametrize(
    "target",
    [
        "/index.php%3F?action=Login",
        "/index.php%00.txt?action=Login",
        "/x/../index.php?action=Login",
        "/./index.php?action=Login",
        "//index.php?action=Login",
    ],
)
async def test_odd_spellings_of_the_script_are_the_login_or_refused(
    php: Served,  # noqa: F811
    start: Start,
    target: str,
) -> None:
    """What held: an escaped `?` or NUL in the script's name, dot segments, a double slash:
    each refused (400) or taken for the login (counted, held for the code); and refused by
    the forward-auth endpoint."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY, extra=FORWARD_AUTH)
    body = b"username=alice&password=guess"
    head = f"Content-Type: {FORM}\r\nContent-Length: {len(body)}\r\n"
    answer = await raw_post(gw, target, head, body)
    failed = [e.user for e in await audit_trail(gw.served, "signin.crm_failed")]
    assert status_of(answer) == 400 or failed == ["alice"], answer[:300]
    assert status_of(await ask_endpoint(gw, target, "POST")) in (400, 403)


# -- the login's method in another case ------------------------------------------------------

# Caddy and Traefik (Go's net/http takes any token for a method) send the client's `post` to
# the CRM as it came; Symfony's Request::getMethod() is strtoupper(REQUEST_METHOD), so Laravel
# routes `post /login` to its POST login (Django, Werkzeug and ASP.NET Core read methods in
# any case too), and Laravel's json() reads a JSON body whatever the method. (nginx refuses
# a method not in capitals: asked as Caddy asks.)
LOWER = ["post", "Post"]


@pytest.mark.parametrize("method", LOWER)
async def test_the_proxy_refuses_the_login_by_its_method_in_another_case(
    start: Start, method: str
) -> None:
    """What held: the direct proxy answers 400 and the CRM checks nothing."""
    crm = await serve_handler(framework_crm(laravel_input), LOGINS)
    try:
        gw = await start(crm.url, login=PATH_LOGIN, policy=ANYONE)
        body = b'{"username": "bob", "password": "bob-demo"}'
        head = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        raw = f"{method} /login HTTP/1.1\r\nHost: crm\r\n{head}Connection: close\r\n\r\n"
        answer = await send_raw(gw.served.port, raw.encode() + body)
        assert status_of(answer) == 400 and crm.app[LOGINS] == [], answer[:300]
    finally:
        await crm.runner.cleanup()


@pytest.mark.parametrize("method", LOWER)
async def test_the_endpoint_refuses_the_login_by_its_method_in_another_case(
    start: Start, method: str
) -> None:
    """Safe: 400 or 403 (login_not_proxied), as the proxy answers it."""
    crm = await serve_handler(framework_crm(laravel_input), LOGINS)
    try:
        gw = await start(crm.url, login=PATH_LOGIN, policy=ANYONE, extra=FORWARD_AUTH)
        head = (
            f"GET /_gateway/auth HTTP/1.1\r\nHost: crm\r\nX-Forwarded-Method: {method}\r\n"
            "X-Forwarded-Uri: /login\r\nContent-Type: application/json\r\n"
            "Connection: close\r\n\r\n"
        )
        said = await send_raw(gw.served.port, head.encode())
        assert status_of(said) in (400, 403), said[:300]
    finally:
        await crm.runner.cleanup()


RULED_METHOD = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: required}
roles: {admin: {}}
users: {alice: {}}
paths:
  - {path: "/contacts/*", methods: [DELETE], allow: [role:admin]}
  - {path: "/contacts/*", allow: [anyone]}
  - {path: "/**", allow: [authenticated]}
"""


@pytest.mark.parametrize("method", ["delete", "Delete"])
async def test_the_endpoint_judges_a_ruled_method_in_another_case_as_that_method(
    php: Served,  # noqa: F811
    start: Start,
    method: str,
) -> None:
    """Safe: refused (400 as the proxy answers, or 403 as DELETE is)."""
    gw = await start(php.url, login=PHP_LOGIN, policy=RULED_METHOD, extra=FORWARD_AUTH)
    for asked, held in (("DELETE", 403), (method, None)):
        head = (
            f"GET /_gateway/auth HTTP/1.1\r\nHost: crm\r\nX-Forwarded-Method: {asked}\r\n"
            "X-Forwarded-Uri: /contacts/7\r\nConnection: close\r\n\r\n"
        )
        said = await send_raw(gw.served.port, head.encode())
        assert status_of(said) in ((held,) if held else (400, 403)), said[:300]
    raw = f"{method} /contacts/7 HTTP/1.1\r\nHost: crm\r\nConnection: close\r\n\r\n"
    assert status_of(await send_raw(gw.served.port, raw.encode())) == 400  # the proxy


# -- the CRM's database compares user names its own way --------------------------------------

JESS = {"jessie": "jessie-demo"}


def general_ci(name: str) -> str:
    """A name as MySQL's and MariaDB's utf8mb4_general_ci compares it (MariaDB's default for
    utf8mb4, MySQL 5.7's): one weight per character, its simple upper case (`ı` is `I`, as
    in .NET's ToUpperInvariant, which ASP.NET Core Identity's normalised user names use),
    accents and trailing spaces ignored (PAD SPACE), and `ß` equal to `s` (MySQL's manual,
    "Unicode Character Sets": `ß` = `s` in utf8mb4_general_ci, `ss` in _unicode_ci)."""
    bare = unicodedata.normalize("NFKD", name.replace("ß", "s").replace("ẞ", "s"))
    return "".join(c for c in bare if not unicodedata.combining(c)).rstrip(" ").upper()


def collating_crm() -> Handler:
    """A CRM finding the login's user with `WHERE user_name = ?` under utf8mb4_general_ci."""
    return framework_crm(laravel_input, JESS, general_ci)


@pytest.mark.parametrize("spelled", ["je%C3%9Fsie", "jess%C4%B1e"])
async def test_a_name_the_crms_collation_reads_as_another_user_is_that_user(
    start: Start, spelled: str
) -> None:
    """jessie has her app; someone with her password alone sends `jeßsie`. Safe: the
    gateway asks for jessie's code (or refuses the name), and no session of hers comes
    back. Before the mend (gateway.signin.confusable): 303 to the enrolment of `jesssie`,
    whose new app released her session. Now refused (400 user_confusable) once the CRM
    took the password: its cookies are never released, and nobody is asked to enrol."""
    crm = await serve_handler(collating_crm(), LOGINS)
    policy = POLICY.replace("{alice: {}, bob: {}}", "{jessie: {}}")
    gw = await start(crm.url, login=PATH_LOGIN, policy=policy)
    jessie, other = Browser(gw), Browser(gw)
    try:
        own = b"username=jessie&password=jessie-demo"
        assert await sign_in_so(jessie, FORM, own) == (303, "jessie")
        body = f"username={spelled}&password=jessie-demo".encode()
        status, home = await sign_in_so(other, FORM, body)
        users = [e.user for e in await audit_trail(gw.served, "signin.crm_ok")]
        refused = [e.reason for e in await audit_trail(gw.served, "signin.refused")]
        # The CRM took jessie's password for the name as typed (audited as typed), and the
        # gateway refused to go on: no enrolment, no session.
        assert (status, home, users[0], len(users), refused, crm.app[LOGINS]) == (
            400,
            None,
            "jessie",
            2,
            ["user_confusable"],
            ["jessie", "jessie"],
        )
    finally:
        await jessie.close()
        await other.close()
        await crm.runner.cleanup()


async def test_probing_near_a_known_name_tells_nothing_without_the_password(
    start: Start,
) -> None:
    """user_confusable is asked only once the CRM took the password: with a wrong one, a name
    near a known one gets the CRM's own answer, as any name does, and the guesses stop at the
    address's limit."""
    crm = await serve_handler(collating_crm(), LOGINS)
    policy = POLICY.replace("{alice: {}, bob: {}}", "{jessie: {}}")
    other = Browser(await start(crm.url, login=PATH_LOGIN, policy=policy))
    try:
        statuses = []
        for name in ["nobody"] + ["je%C3%9Fsie"] * 6:
            async with other.http.post(
                other.gw.url + "/login",
                data=f"username={name}&password=guess".encode(),
                headers={"Content-Type": FORM},
                allow_redirects=False,
            ) as r:
                statuses.append(r.status)
        assert statuses == [200] * 6 + [429], statuses  # the CRM's answer, then the limit
        assert crm.app[LOGINS] == []
    finally:
        await other.close()
        await crm.runner.cleanup()
