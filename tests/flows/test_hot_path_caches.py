"""What a worker remembers to answer a signed-in request quickly (issue 14) never outlives the
policy it was worked out under: a real gateway before the Django-shaped CRM, real TOTP, a
fake clock, a scripted browser.

Remembered per worker under the policy view: a user's resolved settings (PolicyView.settings)
and decisions (Guard.decided). A reload replaces the view, and with it what was worked out
under it: both tests fail with settings kept across views. (What a Cookie header lets through
to the CRM depends on no policy: tests/web/test_cookies.py; decisions across a reload and
users: tests/flows/test_reverify_attacks.py, across askers: tests/web/test_guard.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Served
from tests.django_crm import CLIENTS_PATH
from tests.flows.test_signin_django import DJANGO_LOGIN, django_login
from tests.signin_kit import LONG_SESSIONS, Browser, Browsers, SignInGateway, Start

HOUR = 3600.0
POLICY = """\
defaults:
  interval: always
  factors: [totp, recovery]
  enforcement: required
  reverify: 8h
users:
  dora: {email: dora@example.org}
  emil: {email: emil@example.org}
paths:
  - {path: "/**", allow: [anyone]}
"""


@pytest.fixture
async def gw(django: Served, start: Start) -> SignInGateway:
    return await start(django.url, login=DJANGO_LOGIN, policy=POLICY, extra=LONG_SESSIONS)


async def first_sign_in(b: Browser, user: str) -> None:
    status, _, r = await django_login(b, user, f"{user}-pass")
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    await b.enrol()
    assert (await b.confirm_codes()).headers["Location"] == CLIENTS_PATH


async def reload(gw: SignInGateway, policy: str) -> None:
    (Path(gw.signin.guard.folder) / "policy.yaml").write_text(policy)
    assert await gw.signin.guard.reload("test")


async def test_settings_remembered_for_a_user_follow_a_reload(
    gw: SignInGateway, browsers: Browsers
) -> None:
    """dora's and emil's settings are worked out once under the first policy (a verification
    lasts 8 h) and remembered; a reload that shortens emil's alone to 1 h holds at his next
    request, and dora's stays as it was."""
    dora, emil = browsers(gw), browsers(gw)
    await first_sign_in(dora, "dora")
    await first_sign_in(emil, "emil")
    gw.clock.advance(2 * HOUR)
    for _ in range(2):  # asked twice: the second answer is the remembered one
        assert (await dora.get(CLIENTS_PATH))[0] == 200
        assert (await emil.get(CLIENTS_PATH))[0] == 200
    await reload(gw, POLICY.replace("emil: {", "emil: {reverify: 1h, "))
    status, _, r = await emil.get(CLIENTS_PATH)
    assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
    assert (await dora.get(CLIENTS_PATH))[0] == 200
    # And back: a reload that lengthens it again lets him pass once more, on the same session.
    await reload(gw, POLICY)
    assert (await emil.get(CLIENTS_PATH))[0] == 200


async def test_a_reload_that_tightens_the_defaults_holds_for_every_user_at_once(
    gw: SignInGateway, browsers: Browsers
) -> None:
    dora, emil = browsers(gw), browsers(gw)
    await first_sign_in(dora, "dora")
    await first_sign_in(emil, "emil")
    gw.clock.advance(2 * HOUR)
    assert (await dora.get(CLIENTS_PATH))[0] == 200
    assert (await emil.get(CLIENTS_PATH))[0] == 200
    await reload(gw, POLICY.replace("reverify: 8h", "reverify: 1h"))
    for b in (dora, emil):
        status, _, r = await b.get(CLIENTS_PATH)
        assert (status, r.headers["Location"]) == (303, "/_gateway/challenge")
