"""Review of the cookie checks on the CRM's login (PHP reading cookies over the form and the
query), the login through a script's path info and the policy's path-info warning: ways
around them found in review, each failing before its fix. Real gateway, stand-in PHP CRM."""

from __future__ import annotations

import pytest

from tests.conftest import Served
from tests.flows.test_case_insensitive_paths import status_of
from tests.flows.test_login_cookies import LOGINS, php, post
from tests.flows.test_login_in_form import OPEN_POLICY
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.signin_kit import Start

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
