"""A rule on a PHP script holds for its path info: PHP runs `/admin.php` for `/admin.php/x`,
so a signed-in user the script's rule refuses cannot reach it by adding to the path, in the
proxy or through the forward-auth endpoint. Real gateway, a stand-in PHP CRM that runs the
script a path names as PHP does, real TOTP codes."""

from __future__ import annotations

import pytest

from tests.conftest import Served
from tests.flows.test_case_insensitive_paths import ask_endpoint, status_of
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.flows.test_login_in_form import SERVED, alice_signs_in, php
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.signin_kit import GATEWAY_COOKIE, Browser, Start

__all__ = ["php"]  # the stand-in CRM's fixture

# alice is no admin: the admin script is closed to her, the rest of the CRM open.
ADMIN_POLICY = """\
defaults: {reverify: 10m, factors: [totp, recovery], enforcement: required}
roles: {admin: {}}
users: {alice: {}, root: {roles: [admin]}}
paths:
  - {path: /admin.php, allow: [role:admin]}
  - {path: /index.php, allow: [authenticated]}
  - {path: "/**", allow: [authenticated]}
"""

# Each runs /admin.php on a PHP server (Apache's mod_php and nginx's usual
# fastcgi_split_path_info alike).
THROUGH_PATH_INFO = [
    "/admin.php/",
    "/admin.php/x",
    "/admin.php/users/delete?id=1",
    "/admin.php/style.css",
    "/admin.php/a/b.php/c",
    "/admin%2Ephp/x",
]


async def signed_in(php: Served, start: Start, extra: str = "") -> Browser:
    """alice, signed in through the CRM's login, with her code."""
    b = Browser(await start(php.url, login=PHP_LOGIN, policy=ADMIN_POLICY, extra=extra))
    return await alice_signs_in(b)


@pytest.mark.parametrize("target", THROUGH_PATH_INFO)
async def test_the_admin_script_is_closed_through_its_path_info(
    php: Served, start: Start, target: str
) -> None:
    b = await signed_in(php, start)
    try:
        before = len(php.app[SERVED])
        status, text, _ = await b.get(target)
        assert status == 403, (target, status, text[:200])
        assert len(php.app[SERVED]) == before, "the CRM ran the admin script"
        status, text, _ = await b.get("/index.php/contacts?action=List")
        assert (status, text) == (200, "List: every contact of the company")
    finally:
        await b.close()


async def test_the_endpoint_refuses_the_admin_script_through_its_path_info(
    php: Served, start: Start
) -> None:
    b = await signed_in(php, start, extra=FORWARD_AUTH)
    gw = b.gw
    try:
        session = b.cookie(GATEWAY_COOKIE)
        cookie = f"Cookie: {GATEWAY_COOKIE}={session}\r\n"
        assert status_of(await ask_endpoint(gw, "/index.php/x?action=List", extra=cookie)) == 200
        for target in THROUGH_PATH_INFO:
            answer = await ask_endpoint(gw, target, extra=cookie)
            assert status_of(answer) == 403, (target, answer[:300])
    finally:
        await b.close()
