"""A login told apart by its query (`login.path: /index.php?action=Login`): PHP CRMs post
every form to index.php, so the path alone would take each of them for a login (and refuse
it: no user name in it). gateway.signin.identity.query_matches, the config that accepts such
a path, and the gateway in front of a PHP-style CRM."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config.load import parse_config
from gateway.config.signin import Login
from gateway.crypto import new_key_line
from gateway.errors import ConfigError
from gateway.signin.formscan import form_names_login
from gateway.signin.identity import login_may_be_in_body, query_matches
from tests.conftest import Served
from tests.crms.common import serve_crm
from tests.crms.php_crm import CONTACTS, SESSION_COOKIE, php_crm_app
from tests.signin_kit import Browsers, Start

PHP_LOGIN = """\
login:
  mode: upstream
  path: /index.php?action=Login
  username_field: user_name
  success: {status: [302], cookie: PHPSESSID}
  logout: {path: LOGOUT, method: GET}
"""


@pytest.mark.parametrize(
    ("query", "taken"),
    [
        ("action=Login", True),
        ("module=Users&action=Login", True),
        ("action=login", True),  # some routers fold case
        ("ACTION=Login", True),
        ("action%5B%5D=Login", True),  # action[]: PHP makes an array of it
        ("action=Log%69n", True),
        ("x=1;action=Login", True),
        ("action=SaveContact", False),
        ("", False),
        ("actions=Login", False),
        ("action=Login2", False),
    ],
)
def test_a_query_is_read_as_any_server_may_read_it(query: str, taken: bool) -> None:
    assert query_matches("action=Login", query) is taken


def test_every_parameter_written_must_be_there() -> None:
    assert query_matches("module=Users&action=Login", "action=Login&module=users")
    assert not query_matches("module=Users&action=Login", "action=Login")
    assert query_matches("", "anything=1")


def test_login_and_logout_paths_may_carry_a_query(tmp_path: Path) -> None:
    keys = tmp_path / "k"
    keys.write_text(new_key_line("k1") + "\n")
    base = "listen: 127.0.0.1:8080\nupstream: {url: 'http://127.0.0.1:8081'}\n"
    secrets = f"secrets: {{session_keys: {{file: {keys}}}, seal_keys: {{file: {keys}}}}}\n"
    login = PHP_LOGIN.replace("LOGOUT", "/index.php?action=Logout")
    config = parse_config(base + login + secrets)
    assert config.signin.login is not None
    assert config.signin.login.path == "/index.php?action=Login"
    assert config.signin.login.logout_path == "/index.php?action=Logout"
    with pytest.raises(ConfigError) as caught:
        parse_config(base + login.replace("action=Login", "action") + secrets)
    assert "login.path: must be a path such as /login or /index.php?action=Login" in str(
        caught.value
    )


@pytest.fixture
async def php() -> AsyncIterator[Served]:
    served = await serve_crm(php_crm_app())
    yield served
    await served.runner.cleanup()


async def test_only_the_login_of_a_php_crm_is_held_and_its_other_forms_pass(
    php: Served, start: Start, browsers: Browsers
) -> None:
    login = PHP_LOGIN.replace("LOGOUT", "/index.php?action=Logout")
    gw = await start(php.url, login=login)
    b = browsers(gw)
    status, html, _ = await b.get("/index.php?action=Login")
    assert status == 200 and 'name="user_name"' in html
    form = {"user_name": "jan", "username_password": "jan-geheim-1", "Login": "Log In"}
    status, _, r = await b.post("/index.php?action=Login", form)
    assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
    assert SESSION_COOKIE not in {c.split("=")[0] for c in r.headers.getall("Set-Cookie")}
    await b.enrol()
    r = await b.confirm_codes()
    assert r.headers["Location"] == "/index.php?action=Home"  # the CRM's absolute URL, relative
    # Another form to index.php is the CRM's, not a login: it reaches the CRM and is saved.
    status, _, r = await b.post("/index.php?action=SaveContact", {"name": "Olga Petrova"})
    assert status == 302 and r.headers["Location"] == "/index.php?action=Home"
    assert php.app[CONTACTS][-1] == "Olga Petrova"
    # The logout link (a GET with its query) ends the gateway's session too.
    status, _, r = await b.get("/index.php?action=Logout")
    assert status == 302
    cleared = [c for c in r.headers.getall("Set-Cookie") if c.startswith("crm_gateway=;")]
    assert cleared and "Max-Age=0" in cleared[0]
    status, _, r = await b.get("/index.php?action=Home")
    assert r.headers["Location"].endswith("index.php?action=Login")  # the CRM asks again


async def test_without_the_query_every_form_to_index_php_is_taken_for_a_login(
    php: Served, start: Start, browsers: Browsers
) -> None:
    """Why the query is needed: the path alone makes the CRM's other forms logins (400)."""
    login = PHP_LOGIN.replace("LOGOUT", "/index.php").replace("?action=Login", "")
    gw = await start(php.url, login=login)
    b = browsers(gw)
    status, _, _ = await b.post("/index.php?action=SaveContact", {"name": "Nobody"})
    assert status == 400


FORM_LOGIN = Login(mode="upstream", path="/index.php?action=Login", username_field="user_name")
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=XyZ"


def multipart(*fields: tuple[str, str]) -> bytes:
    parts = [
        f'--XyZ\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n' for n, v in fields
    ]
    return ("".join(parts) + "--XyZ--\r\n").encode()


@pytest.mark.parametrize(
    ("target", "body", "content_type", "taken"),
    [
        ("/index.php", b"action=Login&user_name=a", URLENCODED, True),
        ("/index.php?action=List", b"action=Login", URLENCODED, True),
        ("/index.php", b"ACTION=login", URLENCODED, True),
        ("/index.php", b"action%5B%5D=Login", URLENCODED, True),
        ("/index.php", b"act.ion=Login", URLENCODED, False),  # PHP reads act_ion, not action
        ("/index.php", b"+action=Login", URLENCODED, True),  # PHP drops the leading space
        ("/index.php", b"note=action%3DLogin", URLENCODED, False),
        ("/index.php", b"action=Save&user_name=a", URLENCODED, False),
        ("/index.php", multipart(("action", "Login")), MULTIPART, True),
        ("/index.php", multipart(("action", "Save"), ("note", "action=Login")), MULTIPART, False),
        # no boundary in the type: no server (PHP neither) reads a part of it
        ("/index.php", multipart(("action", "Login")), "multipart/form-data", False),
        ("/index.php", b'{"action": "Login"}', "application/json", True),
        ("/index.php", b'{"action": ["Login"]}', "application/json", False),
        ("/index.php", b"action=Login", "text/plain", False),
    ],
)
def test_form_names_login(target: str, body: bytes, content_type: str, taken: bool) -> None:
    """The pair `action=Login` of login.path, in the form instead of the query, read as
    generously as the query is (gateway.signin.identity.form_names_login)."""
    assert login_may_be_in_body(FORM_LOGIN, "POST", target)
    assert form_names_login(FORM_LOGIN, target, body, content_type) is taken


@pytest.mark.parametrize(
    ("method", "target", "asked"),
    [
        ("POST", "/index.php", True),
        ("POST", "/INDEX.PHP?module=Users", True),
        ("POST", "/index.php?action=Login", False),  # the login itself: names_login
        ("GET", "/index.php", False),
        ("POST", "/other.php", False),
    ],
)
def test_login_may_be_in_body(method: str, target: str, asked: bool) -> None:
    assert login_may_be_in_body(FORM_LOGIN, method, target) is asked
