"""Review of the cookie checks on the CRM's login (PHP reading cookies over the form and the
query) and the login through a script's path info: ways around them found in review, each
failing before its fix. Real gateway, stand-in PHP CRM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import Served, serve_handler
from tests.flows.test_case_insensitive_paths import ask_endpoint, gateway, status_of
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.flows.test_login_cookies import LOGINS, php, post
from tests.flows.test_login_in_form import OPEN_POLICY
from tests.flows.test_paths_case_attacks import (
    DONE,
    PHP_LOGIN,
    PHP_POLICY,
    due_session,
    php_crm,
)
from tests.signin_kit import GATEWAY_COOKIE, Browser, Start
from tests.web.test_guard_methods import _warnings

__all__ = ["php"]  # the stand-in CRM's fixture


@pytest.mark.parametrize("cookie", ["%61ction=Login", "x=1; act%69on=Login"])
async def test_a_cookie_naming_the_login_in_escapes_is_refused(
    php: Served, start: Start, cookie: str
) -> None:
    """PHP before 7.2.34 decoded cookie names (bug #79699): `%61ction=Login` is
    action=Login to it. The look for the names first must not miss it: 400, never at the
    CRM."""
    gw = await start(php.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    answer = await post(
        gw.served.port, "/index.php?action=List", b"username=bob&password=x", cookie
    )
    assert status_of(answer) == 400 and b"login_ambiguous" in answer, answer[:300]
    assert php.app[LOGINS] == []


@pytest.fixture
async def php_due() -> AsyncIterator[Served]:
    """The stand-in PHP CRM of the logout tests (its login, List, Export and Logout)."""
    served = await serve_handler(php_crm, DONE)
    yield served
    await served.runner.cleanup()


@pytest.mark.parametrize("cookie", ["action=Export", "ACTION=Export", "action%5B%5D=Export"])
async def test_a_logout_whose_cookie_names_another_action_waits_for_the_code(
    php_due: Served, start: Start, cookie: str
) -> None:
    """POST /index.php?action=Logout, a code due, `Cookie: action=Export`: PHP without a
    php.ini reads the cookie over the query ($_REQUEST['action'] is Export), so it is not
    the logout that needs no code. Not at the CRM, the session kept."""
    b = Browser(await gateway(start, php_due, policy=PHP_POLICY, fold=False, login=PHP_LOGIN))
    try:
        await due_session(b, php_due)
        session = b.cookie(GATEWAY_COOKIE) or ""
        before = len(php_due.app[DONE])
        name, _, value = cookie.partition("=")
        b.jar.update_cookies({name: value})
        status, _, _ = await b.post("/index.php?action=Logout", {})
        assert php_due.app[DONE][before:] == [], status
        assert await b.gw.signin.book.load(session) is not None
    finally:
        await b.close()


async def test_the_forward_auth_endpoint_reads_a_logout_with_such_a_cookie_as_strictly(
    php_due: Served, start: Start
) -> None:
    """Asked as nginx asks, the same logout with `action=Export` in a cookie: 401 (the code
    first), the session kept; without the cookie it is the logout (200, ended)."""
    gw = await gateway(
        start, php_due, policy=PHP_POLICY, fold=False, login=PHP_LOGIN, extra=FORWARD_AUTH
    )
    b = Browser(gw)
    try:
        await due_session(b, php_due)
        session = b.cookie(GATEWAY_COOKIE) or ""
        cookie = f"Cookie: {GATEWAY_COOKIE}={session}; action=Export\r\n"
        said = await ask_endpoint(gw, "/index.php?action=Logout", "POST", cookie)
        assert status_of(said) == 401, said[:300]
        assert await gw.signin.book.load(session) is not None
        cookie = f"Cookie: {GATEWAY_COOKIE}={session}; theme=dark\r\n"
        said = await ask_endpoint(gw, "/index.php?action=Logout", "POST", cookie)
        assert status_of(said) == 200, said[:300]
        assert await gw.signin.book.load(session) is None
    finally:
        await b.close()


def test_a_method_rule_open_to_whom_the_next_rule_admits_is_not_warned_about(
    tmp_path: Path,
) -> None:
    """`GET /reports/** anyone` before `/** authenticated`: the other methods fall through
    to a rule that admits no one the first does not."""
    found = _warnings(
        tmp_path,
        """
        - {path: /reports/**, methods: [GET], allow: [anyone]}
        - {path: /**, allow: [authenticated]}
        """,
    )
    assert found == []


@pytest.mark.parametrize(
    ("form", "cookie"),
    [(b"username=john+crm", "username=john+crm"), (b"username=bob", "username=b%6Fb+")],
)
async def test_a_cookie_whose_user_php_reads_otherwise_is_refused(
    php: Served, start: Start, form: bytes, cookie: str
) -> None:
    """PHP decodes a cookie's value without taking `+` for a space (php_raw_url_decode):
    `username=john+crm` is the user `john+crm` to it, while the form's `john crm` was read
    the same by the gateway. The CRM would log in one, the gateway challenge another: 400."""
    gw = await start(php.url, login=PHP_LOGIN, policy=PHP_POLICY)
    answer = await post(gw.served.port, "/index.php?action=Login", form + b"&password=x", cookie)
    assert status_of(answer) == 400 and b"login_ambiguous" in answer, answer[:300]
    assert php.app[LOGINS] == []


@pytest.mark.parametrize("cookie", ["do.login=1", "do login=1", "do[login=1", "x=1; do.login=1"])
async def test_a_cookie_naming_a_login_field_with_an_underscore_as_php_reads_it_is_refused(
    php: Served, start: Start, cookie: str
) -> None:
    """login.path `/index.php?do_login=1`: PHP reads a cookie `do.login`, `do login` or
    `do[login` as `do_login` (a space, dot or lone `[` becomes `_`). The look for the names
    first must find them too: 400."""
    login = PHP_LOGIN.replace("action=Login", "do_login=1", 1)
    gw = await start(php.url, login=login, policy=OPEN_POLICY)
    answer = await post(gw.served.port, "/index.php", b"username=bob&password=x", cookie)
    assert status_of(answer) == 400 and b"login_ambiguous" in answer, answer[:300]
