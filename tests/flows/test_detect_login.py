"""`crm-gateway detect-login` against CRMs of the shapes real ones take (tests/crms/): the
section it prints, pasted unedited into a gateway's config, makes the CRM's own sign-in work
through a real gateway, held for the second factor; and what it must refuse (not http, no
form, several forms, 500, no answer, a login no gateway can watch) says so in one sentence
and prints nothing on stdout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import yaml
from aiohttp import web

from gateway.config.load import parse_config
from gateway.errors import ConfigError
from tests.conftest import Served
from tests.crms.common import serve_crm
from tests.crms.kit import SHAPES, Ran, run_cli
from tests.crms.php_crm import php_crm_app
from tests.crms.quirks import quirks_app, silent_server
from tests.crms.two_step_crm import two_step_crm_app
from tests.process import run_command
from tests.signin_kit import Browsers, Start

# Serves a CRM app on loopback with serve_crm's quirks (site, skew, cookie_domain).
Crms = Callable[..., Awaitable[Served]]


@pytest.fixture
async def crms() -> AsyncIterator[Crms]:
    served: list[Served] = []

    async def make(
        app: web.Application, *, site: str = "", skew: float = 0.0, cookie_domain: str = ""
    ) -> Served:
        one = await serve_crm(app, site=site, skew=skew, cookie_domain=cookie_domain)
        served.append(one)
        return one

    yield make
    for one in served:
        await one.runner.cleanup()


async def detect(capsys: pytest.CaptureFixture[str], url: str, *args: str, stdin: str = "") -> Ran:
    return await run_cli(capsys, "detect-login", "--upstream", url, *args, stdin=stdin)


def section_of(ran: Ran) -> dict[str, object]:
    """The printed section, read as YAML (its comments are comments)."""
    read = yaml.safe_load(ran.out)
    assert list(read) == ["login"], ran.out
    return dict(read["login"])


EXPECTED = {
    "php": {
        "mode": "upstream",
        "path": "/index.php?action=Login",
        "method": "POST",
        "username_field": "user_name",
        "success": {"status": [302], "cookie": "PHPSESSID"},
        "crm_cookies": ["PHPSESSID"],
        "logout": {"path": "/index.php?action=Logout", "method": "GET"},
    },
    "suite": {
        "mode": "upstream",
        "path": "/index.php?action=Authenticate&module=Users",
        "method": "POST",
        "username_field": "user_name",
        "success": {"status": [302], "cookie": "PHPSESSID"},
        "crm_cookies": ["PHPSESSID"],
        "logout": {"path": "/index.php?action=Logout", "method": "GET"},
    },
    "json": {
        "mode": "upstream",
        "path": "/api/v1/auth/login",
        "method": "POST",
        "username_field": "email",
        "success": {"status": [200], "cookie": "crm_token"},
        "crm_cookies": ["crm_token"],
        "logout": {"path": "/api/v1/auth/logout", "method": "POST"},
    },
    "two-step": {
        "mode": "upstream",
        "path": "/signin/password",
        "method": "POST",
        "username_field": "login",
        "success": {"status": [302], "cookie": "sid"},
        "crm_cookies": ["sid"],
        "logout": {"path": "/signout", "method": "POST"},
    },
    "origin": {
        "mode": "upstream",
        "path": "/auth/login",
        "method": "POST",
        "username_field": "email",
        "success": {"status": [302], "cookie": "SESSION"},
        "crm_cookies": ["SESSION"],
        "logout": {"path": "/auth/logout", "method": "POST"},
    },
}


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_the_printed_section_signs_users_in_through_a_gateway(
    shape: str,
    crms: Crms,
    capsys: pytest.CaptureFixture[str],
    start: Start,
    browsers: Browsers,
) -> None:
    crm_shape = SHAPES[shape]
    crm: Served = await crms(crm_shape.app())
    ran = await detect(
        capsys,
        crm.url,
        "--user",
        crm_shape.user,
        "--password-stdin",
        stdin=crm_shape.password + "\n",
    )
    assert ran.code == 0, ran.err
    assert section_of(ran) == EXPECTED[shape]
    assert "Could not decide" not in ran.err and "Next: paste it into gateway.yaml" in ran.err
    # Pasted as printed, comments and all: a gateway signs the CRM's users in with it.
    gw = await start(crm.url, login=ran.out)
    b = browsers(gw)
    status, location = await crm_shape.sign_in(b, crm_shape.user, crm_shape.password)
    assert (status, location) == (303, "/_gateway/enrol")
    status, html, _ = await b.get(crm_shape.page)
    assert crm_shape.shows not in html  # held: the CRM does not know the browser yet
    await b.enrol()
    await b.confirm_codes()
    status, html, _ = await b.get(crm_shape.page)
    assert status == 200 and crm_shape.shows in html
    # A wrong password is the CRM's failure, relayed, and nobody is held.
    other = browsers(gw)
    status, location = await crm_shape.sign_in(other, crm_shape.user, "not-the-password")
    assert not location.startswith("/_gateway/")


async def test_without_a_test_account_the_form_is_read_and_the_rest_said_undecided(
    crms: Crms, capsys: pytest.CaptureFixture[str]
) -> None:
    crm: Served = await crms(SHAPES["two-step"].app())
    ran = await detect(capsys, crm.url)
    assert ran.code == 1
    read = section_of(ran)
    assert (read["path"], read["username_field"]) == ("/signin/password", "login")
    assert "success" not in read
    assert "# could not decide: success, crm_cookies and logout" in ran.out
    assert "Could not decide:" in ran.err and "--user NAME" in ran.err
    with pytest.raises(ConfigError, match=r"success\.cookie: is required"):
        parse_config(f"listen: 127.0.0.1:1\nupstream: {{url: '{crm.url}'}}\n{ran.out}")


async def test_a_php_crm_calling_itself_by_another_name_is_said_and_nothing_written(
    crms: Crms, capsys: pytest.CaptureFixture[str]
) -> None:
    crm: Served = await crms(SHAPES["php"].app(), site="http://localhost:{port}")
    ran = await detect(capsys, crm.url)
    assert (ran.code, ran.out) == (1, "")
    assert f"sends the browser to http://localhost:{crm.port}/index.php" in ran.err
    assert "nothing written" in ran.err


async def test_a_two_step_login_that_trusts_its_first_page_is_refused(
    crms: Crms, capsys: pytest.CaptureFixture[str]
) -> None:
    crm: Served = await crms(two_step_crm_app(trusts_first_step=True))
    ran = await detect(capsys, crm.url, "--user", "nora", "--password-stdin", stdin="nora-pass-5\n")
    assert ran.code == 1
    assert "NOT COMPLETE" in ran.out
    assert "the CRM signed in nora although the password page named nora-" in ran.err
    assert "it trusts its first page" in ran.out


async def test_a_wrong_test_password_writes_nothing(
    crms: Crms, capsys: pytest.CaptureFixture[str]
) -> None:
    crm: Served = await crms(SHAPES["php"].app())
    ran = await detect(capsys, crm.url, "--user", "jan", "--password-stdin", stdin="guess\n")
    assert (ran.code, ran.out) == (1, "")
    assert "the test account's password was answered just as a wrong one (200" in ran.err


async def test_a_crm_whose_wrong_password_looks_right_to_the_gateway_writes_nothing(
    crms: Crms, capsys: pytest.CaptureFixture[str]
) -> None:
    """SugarCRM sends a wrong password back to index.php?action=Login&login_error=1 with a new
    PHPSESSID: a 302 and the session cookie, as for a right one, to a path only its query
    tells apart (which success.failure_location, a path, cannot)."""
    crm: Served = await crms(php_crm_app(failure_redirects=True))
    ran = await detect(capsys, crm.url, "--user", "jan", "--password-stdin", stdin="jan-geheim-1\n")
    assert (ran.code, ran.out) == (1, "")
    assert "a wrong password is answered like the right one (302 to " in ran.err
    assert "index.php?action=Login&login_error=1, setting PHPSESSID" in ran.err


@pytest.mark.parametrize(
    ("path", "said", "code"),
    [
        ("/broken", "answered 500 Internal Server Error: the CRM must show its page with 200", 1),
        ("/blank", "no login on /blank: no form with a password field, no login link", 1),
        ("/portal", "/portal has 2 login forms: 1. POST /staff/login (username, password); "
                    "2. POST /clients/login (email, pin). Say which with --form N", 2),
        ("/multipart", "is sent as multipart/form-data: the gateway reads the user name", 1),
    ],
)  # fmt: skip
async def test_a_page_that_cannot_be_read_is_said_and_nothing_written(
    path: str, said: str, code: int, crms: Crms, capsys: pytest.CaptureFixture[str]
) -> None:
    crm: Served = await crms(quirks_app())
    ran = await detect(capsys, crm.url, "--path", path)
    assert (ran.code, ran.out) == (code, "")
    assert said in ran.err
    assert ran.err.rstrip().endswith("nothing written")


async def test_the_form_to_watch_is_chosen_with_form(
    crms: Crms, capsys: pytest.CaptureFixture[str]
) -> None:
    crm: Served = await crms(quirks_app())
    ran = await detect(capsys, crm.url, "--path", "/portal", "--form", "2")
    assert ran.code == 1  # no test account: success undecided
    read = section_of(ran)
    assert (read["path"], read["username_field"]) == ("/clients/login", "email")


async def test_a_login_routed_by_hidden_fields_has_them_in_its_path(
    crms: Crms, capsys: pytest.CaptureFixture[str]
) -> None:
    """SuiteCRM's form posts to plain index.php with module and action hidden in it: they
    go in login.path's query, which the gateway finds in the form too."""
    crm: Served = await crms(quirks_app())
    ran = await detect(capsys, crm.url, "--path", "/suite/")
    assert section_of(ran)["path"] == "/suite/index.php?module=Users&action=Authenticate"
    assert "hidden module=Users, action=Authenticate tell it from other forms" in ran.out


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://127.0.0.1/", "--upstream: must be an http:// or https:// address"),
        ("127.0.0.1:8080", "--upstream: must be an http:// or https:// address"),
        ("http://127.0.0.1:99999/", "--upstream: the port of 'http://127.0.0.1:99999/' is not"),
    ],
)
async def test_an_address_that_is_not_http_is_refused(
    url: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = await detect(capsys, url)
    assert (ran.code, ran.out) == (2, "")
    assert said in ran.err


async def test_a_crm_that_never_answers_is_given_up_on(capsys: pytest.CaptureFixture[str]) -> None:
    async with silent_server() as port:
        ran = await detect(capsys, f"http://127.0.0.1:{port}", "--timeout", "0.5")
    assert (ran.code, ran.out) == (1, "")
    assert f"http://127.0.0.1:{port}/ did not answer within 0.5 s" in ran.err


async def test_a_closed_port_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    async with silent_server() as port:
        pass  # the port was listening a moment ago: now nothing does
    ran = await detect(capsys, f"http://127.0.0.1:{port}")
    assert (ran.code, ran.out) == (1, "")
    assert f"cannot connect to http://127.0.0.1:{port}: connection refused" in ran.err


async def test_the_password_is_never_read_from_a_pipe_unless_told(
    crms: Crms, capsys: pytest.CaptureFixture[str]
) -> None:
    crm: Served = await crms(SHAPES["php"].app())
    ran = await detect(capsys, crm.url, "--user", "jan", stdin="jan-geheim-1\n")
    assert (ran.code, ran.out) == (2, "")
    assert "no terminal to ask the password on" in ran.err and "--password-stdin" in ran.err


async def test_the_command_as_an_operator_runs_it(crms: Crms) -> None:
    """The installed program, a child process, the password on stdin: the section on stdout."""
    crm: Served = await crms(SHAPES["origin"].app())
    args = ("detect-login", "--upstream", crm.url, "--user", "quinn@firm.example")
    done = await asyncio.to_thread(run_command, *args, "--password-stdin", stdin="quinn-pw-31\n")
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["login"] == EXPECTED["origin"]
    assert "quinn-pw-31" not in done.stdout + done.stderr
    assert "the form carries a CSRF token (_csrf)" in done.stderr


async def test_a_crm_routed_by_its_forms_keeps_its_other_forms(
    crms: Crms, capsys: pytest.CaptureFixture[str], start: Start, browsers: Browsers
) -> None:
    """SuiteCRM's forms all post to plain index.php: with the printed section, the login
    (action=Authenticate in the form) is watched and held, and the CRM's other forms (a
    contact saved, action=SaveContact in the form) go to it as before."""
    shape = SHAPES["suite"]
    crm: Served = await crms(shape.app())
    ran = await detect(
        capsys, crm.url, "--user", shape.user, "--password-stdin", stdin=shape.password + "\n"
    )
    assert ran.code == 0, ran.err
    gw = await start(crm.url, login=ran.out)
    b = browsers(gw)
    assert await shape.sign_in(b, shape.user, shape.password) == (303, "/_gateway/enrol")
    await b.enrol()
    await b.confirm_codes()
    status, _, r = await b.post("/index.php", {"action": "SaveContact", "name": "Kari Nordmann"})
    assert status == 302, r.headers
    status, html, _ = await b.get("/index.php?action=Home")
    assert status == 200 and "<li>Kari Nordmann</li>" in html
