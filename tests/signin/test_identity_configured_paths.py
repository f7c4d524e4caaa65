"""login.path and logout.path as gateway.yaml takes them, compared with requests by
gateway.signin.identity: a path no request can name (`/login%C3`, half a UTF-8 letter) is
refused with its line; one made in code anyway is compared as written, never decoded into
a crash on every request."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import parse_config
from gateway.config.signin import Login
from gateway.crypto import new_key_line
from gateway.errors import ConfigError
from gateway.signin.identity import names_login, names_logout


def _login(tmp_path: Path, path: str, logout: str) -> Login:
    keys = tmp_path / "k"
    keys.write_text(new_key_line("k1") + "\n")
    text = (
        "listen: 127.0.0.1:8080\nupstream: {url: 'http://127.0.0.1:8081'}\n"
        "login:\n  mode: upstream\n"
        f"  path: {path}\n"
        "  username_field: user\n  success: {status: [302], cookie: sid}\n"
        f"  logout: {{path: {logout}, method: POST}}\n"
        f"secrets: {{session_keys: {{file: {keys}}}, seal_keys: {{file: {keys}}}}}\n"
    )
    login = parse_config(text).signin.login
    assert login is not None
    return login


@pytest.mark.parametrize(
    ("path", "logout", "line"),
    [("/login%C3", "/logout", 5), ("/login", "/logout%2Fx", 8)],
)
def test_gateway_yaml_refuses_a_path_no_request_can_name(
    tmp_path: Path, path: str, logout: str, line: int
) -> None:
    """`/login%C3` is half a letter: check-config names file, line and key."""
    with pytest.raises(ConfigError) as caught:
        _login(tmp_path, path, logout)
    (problem,) = caught.value.problems
    assert problem.line == line, problem
    assert "must be a path a request can name" in problem.message, problem


def test_a_configured_path_that_reads_two_ways_is_compared_as_written() -> None:
    """Should one reach the comparison anyway (a Login made in code), it is compared as
    written, never decoded into a crash on every request."""
    login = Login(mode="upstream", path="/login%C3", logout_path="/logout%C3")
    assert not names_login(login, "POST", "/contacts?x=1")
    assert not names_logout(login, "POST", "/contacts?", fold=True)
    assert not names_logout(login, "POST", "/contacts?", fold=False)


def test_configured_escapes_still_name_the_login_and_logout(tmp_path: Path) -> None:
    login = _login(tmp_path, "/anmeldung-%c3%bc", "/abmelden-%c3%bc")
    assert names_login(login, "POST", "/ANMELDUNG-%C3%9C")
    assert names_logout(login, "POST", "/abmelden-%C3%BC?", fold=False)
    assert names_logout(login, "POST", "/ABMELDEN-%C3%9C?", fold=True)
    assert not names_logout(login, "POST", "/ABMELDEN-%C3%9C?", fold=False)
    assert names_logout(login, "POST", "/abmelden-ü?", fold=False)  # nginx's raw bytes


def test_the_logout_is_compared_decoded_as_the_crm_reads_it(tmp_path: Path) -> None:
    """Every server reads `%21` as `!`: the logout is known in both spellings, as the rules
    and the login are; a double escape (`%2521`, which the CRM reads as `%21`) is not it."""
    login = _login(tmp_path, "/login", "/log!out")
    assert names_logout(login, "POST", "/log!out?", fold=False)
    assert names_logout(login, "POST", "/log%21out?", fold=False)
    assert names_logout(login, "POST", "/LOG%21OUT?", fold=True)
    assert not names_logout(login, "POST", "/log%2521out?", fold=False)
    assert not names_logout(login, "GET", "/log!out?", fold=False)


@pytest.mark.parametrize(
    ("configured", "target", "taken"),
    [
        # A front controller routes its script's path info from the script's folder.
        ("/login", "/index.php/login", True),
        ("/login", "/index.php//login/", True),
        ("/login", "/app.php/login", True),
        ("/crm/login", "/crm/index.php/login", True),
        ("/crm/login", "/crm/index.php//login", True),
        ("/login", "/public/index.php/login", True),  # routed from the script itself
        # Not the login: another route, another folder, a segment that names no script.
        ("/login", "/index.php/logins", False),
        ("/login", "/index.php/admin/login", False),
        ("/crm/login", "/index.php/login", False),
        ("/login", "/files.v2/login", False),
        ("/login", "/index.php", False),
    ],
)
def test_the_login_behind_a_front_controller_is_the_login(
    configured: str, target: str, taken: bool
) -> None:
    login = Login(mode="upstream", path=configured, success_cookie="sid")
    assert names_login(login, "POST", target) is taken
