"""An outsider's attacks on the script rule (a path under `/admin.php` held to its rule): each
request is one a real server runs as a protected script, sent through the real gateway to a
stand-in PHP CRM that notes every path it was handed. A hole is a strict xfail asserting the
safe answer; a defence that holds passes."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from gateway.policy.load import load_policies
from gateway.policy.rules import check_path
from tests.conftest import Served, serve_handler
from tests.flows.test_case_insensitive_paths import FOLD, ask, ask_endpoint, status_of
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.flows.test_login_in_form import PHP_SESSION, SERVED, alice_signs_in, php_crm
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.signin_kit import GATEWAY_COOKIE, Browser, Start

RAN = web.AppKey("ran", list[str])  # each path the CRM was handed, as it got it

HEAD = """\
defaults: {reverify: 10m, factors: [totp, recovery], enforcement: required}
roles: {admin: {}}
users: {alice: {}, root: {roles: [admin]}}
paths:
"""
# alice is no admin: the admin script is closed to her, the rest of the CRM open.
ADMIN = """\
  - {path: /admin.php, allow: [role:admin]}
  - {path: /crm/admin.php, allow: [role:admin]}
  - {path: /index.php, allow: [authenticated]}
  - {path: "/**", allow: [authenticated]}
"""


async def recording_crm(request: web.Request) -> web.StreamResponse:
    """The PHP CRM of test_login_in_form, noting the path of every request it runs."""
    request.app[RAN].append(request.path)
    return await php_crm(request)


@pytest.fixture
async def crm() -> AsyncIterator[Served]:
    served = await serve_handler(recording_crm, SERVED, RAN)
    yield served
    await served.runner.cleanup()


async def alice(
    crm: Served, start: Start, paths: str = ADMIN, *, fold: bool = False, extra: str = ""
) -> Browser:
    """alice, signed in through the CRM's login with her TOTP code (no other factor passed)."""
    gw = await start(
        crm.url,
        login=PHP_LOGIN,
        policy=HEAD + paths,
        extra=extra,
        upstream_extra=FOLD if fold else "",
    )
    return await alice_signs_in(Browser(gw))


async def sent(b: Browser, crm: Served, target: str, method: str = "GET") -> tuple[int, bool]:
    """`target` sent byte for byte (no client tidies it) with alice's session: the status,
    and whether the CRM was handed anything."""
    before = len(crm.app[RAN])
    jar = f"{GATEWAY_COOKIE}={b.cookie(GATEWAY_COOKIE)}; {PHP_SESSION}={b.cookie(PHP_SESSION)}"
    status = await ask(b.gw, method, target, extra=f"Cookie: {jar}\r\n")
    return status, len(crm.app[RAN]) > before


# --- holes -----------------------------------------------------------------------------------

FACTOR_FOR_THE_SCRIPT = """\
  - {path: /admin.php, allow: [authenticated], factors: [recovery]}
  - {path: "/**", allow: [authenticated], fresh: 10m}
"""


async def test_the_scripts_factor_holds_through_its_path_info(crm: Served, start: Start) -> None:
    b = await alice(crm, start, FACTOR_FOR_THE_SCRIPT)
    try:
        status, ran = await sent(b, crm, "/admin.php")
        assert (status, ran) == (401, False), "the script itself asks for the recovery code"
        status, ran = await sent(b, crm, "/admin.php/x")
        assert not ran, f"PHP ran /admin.php with alice's TOTP only ({status})"
    finally:
        await b.close()


def test_phishing_resistance_holds_through_the_path_info(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        HEAD
        + textwrap.dedent("""\
          - {path: /admin.php, allow: [authenticated], phishing_resistant: true}
          - {path: "/**", allow: [authenticated], fresh: 5m}
        """)
    )
    policy = load_policies(tmp_path)
    own = check_path(policy, policy.users["alice"], "GET", "/admin.php")
    below = check_path(policy, policy.users["alice"], "GET", "/admin.php/x")
    assert own.fresh_factors == ("webauthn",)
    assert set(below.fresh_factors) <= set(own.fresh_factors) and below.fresh_factors


# Scripts a server runs with path info whose extension script_paths does not know.
UNLISTED_SCRIPTS = [
    # Debian's PHP packages: <FilesMatch ".+\.ph(?:ar|p|tml)$"> (mod_php and php-fpm alike)
    ("/tools.phar", "/tools.phar/users/delete", False),
    # WCF on IIS: a REST service is addressed through its path info
    ("/Admin.svc", "/Admin.svc/DeleteUser", True),
    # ColdFusion: /index.cfm/x is /index.cfm with CGI.PATH_INFO
    ("/admin.cfm", "/admin.cfm/x", False),
    # an ISAPI extension on IIS: /scripts/admin.dll/x runs admin.dll
    ("/scripts/admin.dll", "/scripts/admin.dll/x", True),
    # a Python CGI (AddHandler cgi-script .py)
    ("/cgi-bin/admin.py", "/cgi-bin/admin.py/x", False),
]


@pytest.mark.parametrize(("script", "target", "fold"), UNLISTED_SCRIPTS)
async def test_an_unlisted_script_is_closed_through_its_path_info(
    crm: Served, start: Start, script: str, target: str, fold: bool
) -> None:
    b = await alice(crm, start, f"  - {{path: {script}, allow: [role:admin]}}\n" + ADMIN, fold=fold)
    try:
        assert await sent(b, crm, script) == (403, False)
        assert await sent(b, crm, target) == (403, False), f"{target} runs {script}"
    finally:
        await b.close()


async def test_a_folder_scripts_rule_holds_for_the_folder(crm: Served, start: Start) -> None:
    paths = "  - {path: /admin/index.php, allow: [role:admin]}\n" + ADMIN
    b = await alice(crm, start, paths)
    try:
        assert await sent(b, crm, "/admin/index.php/x") == (403, False)  # held
        assert await sent(b, crm, "/admin/") == (403, False), "the server runs /admin/index.php"
    finally:
        await b.close()


@pytest.mark.xfail(
    strict=True,
    reason="Apache with Options MultiViews (AddType ... .php, or MultiviewsMatch Handlers) "
    "runs /admin.php for /admin and /admin/users (PATH_INFO /users); ASP.NET FriendlyUrls "
    "does the same for .aspx: the rule on /admin.php is passed by dropping the extension "
    "(a known limit, docs/security.md: holding /admin to /admin.php's rule on every server "
    "would refuse another page where MultiViews is off, its default)",
)
async def test_the_script_is_closed_without_its_extension(crm: Served, start: Start) -> None:
    b = await alice(crm, start)
    try:
        assert await sent(b, crm, "/admin/users") == (403, False), "MultiViews runs /admin.php"
    finally:
        await b.close()


async def test_a_split_without_a_slash_is_held_to_the_script(crm: Served, start: Start) -> None:
    b = await alice(crm, start)
    try:
        assert await sent(b, crm, "/admin.php.bak") == (403, False)
    finally:
        await b.close()


async def test_a_cookieless_segment_does_not_open_an_aspx(crm: Served, start: Start) -> None:
    b = await alice(crm, start, "  - {path: /admin.aspx, allow: [role:admin]}\n" + ADMIN, fold=True)
    try:
        assert await sent(b, crm, "/admin.aspx/x") == (403, False)  # held
        for target in ("/(S(x))/admin.aspx", "/(S(x))/admin.aspx/x", "/(s(x)A(y))/admin.aspx"):
            # refused as a Windows alias (400 path_ambiguous): never run
            assert await sent(b, crm, target) == (400, False), target
        # The dot segments are resolved first and the resolved path is forwarded: the CRM
        # is handed /crm/admin.aspx, the path judged, with no cookieless segment left in it.
        assert await sent(b, crm, "/crm/(A(y))/../admin.aspx") == (200, True)
        assert crm.app[RAN][-1].startswith("/crm/admin.aspx")
    finally:
        await b.close()


# --- false refusals --------------------------------------------------------------------------

BY_EMAIL = """\
  - {path: /index.php, allow: [authenticated]}
  - {path: "/api/users/*/avatar", allow: [authenticated]}
"""


async def test_an_address_ending_in_pl_is_no_script(crm: Served, start: Start) -> None:
    b = await alice(crm, start, BY_EMAIL)
    try:
        assert await sent(b, crm, "/api/users/jan@firma.de/avatar") == (200, True)
        assert await sent(b, crm, "/api/users/jan@firma.pl/avatar") == (200, True)
    finally:
        await b.close()


# --- defences that hold ----------------------------------------------------------------------

# Each runs /admin.php or /crm/admin.php on Apache's mod_php and nginx's usual split alike.
SPELLINGS = [
    "/crm/admin.php/x",
    "/%61dmin.php/x",
    "/admin.%70hp/x",
    "/admin.php//x",
    "//admin.php/x",
    "/./admin.php/./x",
    "/x/../admin.php/x",
    "/crm/./admin.php/x.php",  # cgi.fix_pathinfo walks back to /crm/admin.php
    "/admin.php/x/y.php/z",
]


async def test_spellings_of_the_script_path_info_are_refused(crm: Served, start: Start) -> None:
    b = await alice(crm, start)
    try:
        for target in SPELLINGS:
            assert await sent(b, crm, target) == (403, False), target
        for target in ("/admin.php;x/y", "/admin.php%2Fx", "/admin.php%00/x"):
            assert (await sent(b, crm, target))[1] is False, target
        assert await sent(b, crm, "/index.php/x?action=List") == (200, True)
    finally:
        await b.close()


async def test_a_glob_or_method_rule_on_the_script_holds(crm: Served, start: Start) -> None:
    paths = (
        """\
  - {path: /*/tool.php, allow: [role:admin]}
  - {path: /bulk.php, methods: [POST], allow: [role:admin]}
"""
        + ADMIN
    )
    b = await alice(crm, start, paths)
    try:
        assert await sent(b, crm, "/crm/tool.php/x") == (403, False)
        assert await sent(b, crm, "/bulk.php/x", "POST") == (403, False)
        assert await sent(b, crm, "/bulk.php/x?action=List") == (200, True)
    finally:
        await b.close()


async def test_iis_spellings_of_an_aspx_path_info_are_refused(crm: Served, start: Start) -> None:
    b = await alice(crm, start, "  - {path: /admin.aspx, allow: [role:admin]}\n" + ADMIN, fold=True)
    try:
        for target in ("/ADMIN.ASPX/x", "/Admin.Aspx/x", "/admin.aspx./x", "/admin.aspx%20/x"):
            assert (await sent(b, crm, target))[1] is False, target
    finally:
        await b.close()


async def test_the_endpoint_refuses_a_folder_scripts_path_info(crm: Served, start: Start) -> None:
    b = await alice(crm, start, extra=FORWARD_AUTH)
    try:
        cookie = f"Cookie: {GATEWAY_COOKIE}={b.cookie(GATEWAY_COOKIE)}\r\n"
        for target in ("/crm/admin.php/x", "/crm/%61dmin.php/x?y=1", "/crm/admin.php/"):
            assert status_of(await ask_endpoint(b.gw, target, extra=cookie)) == 403, target
        assert status_of(await ask_endpoint(b.gw, "/crm/list.php/x", extra=cookie)) == 200
    finally:
        await b.close()
