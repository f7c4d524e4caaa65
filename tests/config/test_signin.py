"""The sign-in sections of gateway.yaml (gateway/config/signin.py) read through parse_config:
`login`, `sessions`, `limits` and `secrets`, with every problem located by file, line and key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.config.load import parse_config
from gateway.config.model import Config
from gateway.config.signin import Limits, Login, Sessions
from gateway.crypto import new_key_line, parse_keys
from gateway.errors import ConfigError

# Lines 1-3; anything appended starts at line 4.
MINIMAL = "listen: 127.0.0.1:8080\nupstream:\n  url: http://127.0.0.1:8081\n"
UPSTREAM_LOGIN = "login:\n  mode: upstream\n  success:\n    cookie: sid\n"  # lines 4-7


@pytest.fixture
def key_files(tmp_path: Path) -> tuple[Path, Path]:
    session, seal = tmp_path / "session.keys", tmp_path / "seal.keys"
    session.write_text(new_key_line("s1") + "\n")
    seal.write_text(new_key_line("k2") + "\n" + new_key_line("k1") + "\n")
    return session, seal


def secrets_yaml(session: Path, seal: Path) -> str:
    return (
        "secrets:\n"
        f"  session_keys: {{file: {json.dumps(str(session))}}}\n"
        f"  seal_keys: {{file: {json.dumps(str(seal))}}}\n"
    )


@pytest.fixture
def secrets(key_files: tuple[Path, Path]) -> str:
    return secrets_yaml(*key_files)


def problems(text: str, name: str = "gateway.yaml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, name)
    return [str(p) for p in caught.value.problems]


def login_of(config: Config) -> Login:
    assert config.signin.login is not None
    return config.signin.login


# -- a valid sign-in config -------------------------------------------------------------------


def test_upstream_login_with_keys_loads_with_defaults(secrets: str) -> None:
    config = parse_config(MINIMAL + UPSTREAM_LOGIN + secrets)

    assert login_of(config) == Login(mode="upstream", success_cookie="sid", crm_cookies=("sid",))
    assert config.signin.sessions == Sessions()
    assert config.signin.limits == Limits()
    assert config.warnings == ()


def test_key_rings_are_read_from_their_files_newest_first(
    secrets: str, key_files: tuple[Path, Path]
) -> None:
    config = parse_config(MINIMAL + UPSTREAM_LOGIN + secrets)

    session, seal = config.signin.secrets.session_keys, config.signin.secrets.seal_keys
    assert session == parse_keys(key_files[0].read_text())
    assert seal is not None and [name for name, _ in seal.keys] == ["k2", "k1"]
    assert seal.current[0] == "k2"


def test_key_material_never_shows_in_the_config_repr(
    secrets: str, key_files: tuple[Path, Path]
) -> None:
    config = parse_config(MINIMAL + UPSTREAM_LOGIN + secrets)
    ring = config.signin.secrets.session_keys
    assert ring is not None

    shown = repr(config)

    assert repr(ring.current[1]) not in shown
    assert key_files[0].read_text().split(":")[1].strip() not in shown
    assert "s1" in shown


def test_every_sign_in_key_is_read(secrets: str) -> None:
    text = (
        MINIMAL + "login:\n"
        "  mode: upstream\n"
        "  path: /auth/signin\n"
        "  method: PUT\n"
        "  username_field: login[email]\n"
        "  success:\n"
        "    status: [200, 302]\n"
        "    cookie: PHPSESSID\n"
        "    failure_location: /auth/signin\n"
        "  crm_cookies: [remember_me, PHPSESSID, XSRF-TOKEN]\n"
        "  logout: {path: /auth/logout, method: GET}\n"
        "  max_body: 128KiB\n"
        "  identity_header: X-Crm-User\n"
        "sessions:\n"
        "  cookie_name: __Host-gw\n"
        "  idle_timeout: 15m\n"
        "  absolute_timeout: 8h\n"
        "  hold_cookies: 2m\n"
        "  step_up_window: 10m\n"
        "limits:\n"
        "  user_failures: 3\n"
        "  ip_failures: 50\n"
        "  window: 10m\n"
        "  lockout: 30s\n"
        "  max_lockout: 2h\n" + secrets
    )

    config = parse_config(text)

    assert login_of(config) == Login(
        mode="upstream",
        path="/auth/signin",
        method="PUT",
        username_field="login[email]",
        success_status=(200, 302),
        success_cookie="PHPSESSID",
        failure_location="/auth/signin",
        crm_cookies=("PHPSESSID", "remember_me", "XSRF-TOKEN"),
        logout_path="/auth/logout",
        logout_method="GET",
        max_body=128 * 1024,
        identity_header="X-Crm-User",
    )
    assert config.signin.sessions == Sessions("__Host-gw", 900.0, 8 * 3600.0, 120.0, 600.0)
    assert config.signin.limits == Limits(3, 50, 600.0, 30.0, 7200.0)


def test_gateway_mode_reads_its_users_file_next_to_the_config(tmp_path: Path, secrets: str) -> None:
    text = MINIMAL + "login:\n  mode: gateway\n  users_file: users.yaml\n" + secrets

    config = parse_config(text, str(tmp_path / "gateway.yaml"))

    login = login_of(config)
    assert (login.mode, login.users_file) == ("gateway", str(tmp_path / "users.yaml"))
    assert login.success_cookie == ""


def test_gateway_mode_keeps_an_absolute_users_file(secrets: str) -> None:
    text = MINIMAL + "login:\n  mode: gateway\n  users_file: /etc/gw/users.yaml\n" + secrets

    assert login_of(parse_config(text, "/srv/gw/gateway.yaml")).users_file == "/etc/gw/users.yaml"


def test_keys_may_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, key_files: tuple[Path, Path]
) -> None:
    monkeypatch.setenv("GW_SESSION_KEYS", key_files[0].read_text().strip())
    monkeypatch.setenv("GW_SEAL_KEYS", key_files[1].read_text().replace("\n", ","))
    secrets = "secrets:\n  session_keys: {env: GW_SESSION_KEYS}\n  seal_keys: {env: GW_SEAL_KEYS}\n"

    config = parse_config(MINIMAL + UPSTREAM_LOGIN + secrets)

    seal = config.signin.secrets.seal_keys
    assert seal is not None and [name for name, _ in seal.keys] == ["k2", "k1"]


def test_inline_keys_are_accepted_with_a_warning(key_files: tuple[Path, Path]) -> None:
    session = key_files[0].read_text().strip()
    seal = key_files[1].read_text().split()[0]
    text = MINIMAL + UPSTREAM_LOGIN + f"secrets:\n  session_keys: {session}\n  seal_keys: {seal}\n"

    config = parse_config(text)

    assert [str(w) for w in config.warnings] == [
        "gateway.yaml:9: secrets.session_keys: is written inline; prefer {env: NAME} or {file: PATH}",
        "gateway.yaml:10: secrets.seal_keys: is written inline; prefer {env: NAME} or {file: PATH}",
    ]


def test_sign_in_sections_without_login_only_warn_that_nobody_signs_in() -> None:
    config = parse_config(MINIMAL + "sessions: {idle_timeout: 10m}\nworkers: 4\n")

    assert config.signin.login is None
    assert config.signin.sessions.idle_timeout == 600.0
    assert config.workers == 4
    assert [w.message for w in config.warnings] == [
        "no login section: nobody signs in and no second factor is asked; "
        "the gateway applies only IP and path rules"
    ]


# -- what login requires ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "login",
    ["login:\n  mode: upstream\n", "login:\n  path: /signin\n"],
    ids=["mode-upstream", "upstream-by-default"],
)
def test_upstream_login_requires_the_success_cookie(login: str, secrets: str) -> None:
    assert problems(MINIMAL + login + secrets) == [
        "gateway.yaml:5: login: success.cookie: is required with mode upstream: the name of the"
        " session cookie the CRM sets when a login succeeds"
    ]


def test_gateway_mode_requires_a_users_file(secrets: str) -> None:
    assert problems(MINIMAL + "login:\n  mode: gateway\n" + secrets) == [
        "gateway.yaml:5: login: users_file: is required with mode gateway"
        " (see crm-gateway hash-password)"
    ]


def test_login_requires_both_key_rings() -> None:
    required = (
        "is required when login is configured ({file: PATH} or {env: NAME};"
        " make one with: crm-gateway keys generate)"
    )

    assert problems(MINIMAL + UPSTREAM_LOGIN) == [
        f"gateway.yaml:1: secrets.session_keys: {required}",
        f"gateway.yaml:1: secrets.seal_keys: {required}",
    ]


def test_login_with_only_one_key_ring_names_the_missing_one(key_files: tuple[Path, Path]) -> None:
    text = MINIMAL + UPSTREAM_LOGIN + f"secrets:\n  session_keys: {{file: {key_files[0]}}}\n"

    found = problems(text)

    assert len(found) == 1
    assert found[0].startswith("gateway.yaml:1: secrets.seal_keys: is required when login")


def test_a_short_key_is_reported_once_on_its_line(
    tmp_path: Path, key_files: tuple[Path, Path]
) -> None:
    bad = tmp_path / "bad.keys"
    bad.write_text("s1:c2hvcnQ\n")

    assert problems(MINIMAL + UPSTREAM_LOGIN + secrets_yaml(bad, key_files[1])) == [
        "gateway.yaml:9: secrets.session_keys: key 's1' has 5 bytes; at least 32 needed"
        " (make one with: crm-gateway keys generate)"
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("# no keys yet\n", "holds no key"),
        ("k1 " + "A" * 43 + "\n", "entry 1 must look like id:base64key"),
        ("k1:" + "*" * 43 + "\n", "key 'k1' is not base64"),
    ],
)
def test_an_unusable_key_file_is_reported_with_its_reason(
    tmp_path: Path, key_files: tuple[Path, Path], content: str, message: str
) -> None:
    bad = tmp_path / "bad.keys"
    bad.write_text(content)

    assert problems(MINIMAL + UPSTREAM_LOGIN + secrets_yaml(key_files[0], bad)) == [
        f"gateway.yaml:10: secrets.seal_keys: {message} (make one with: crm-gateway keys generate)"
    ]


def test_a_missing_key_file_is_reported_on_its_line(
    tmp_path: Path, key_files: tuple[Path, Path]
) -> None:
    missing = tmp_path / "absent.keys"

    assert problems(MINIMAL + UPSTREAM_LOGIN + secrets_yaml(missing, key_files[1])) == [
        f"gateway.yaml:9: secrets.session_keys.file: cannot read {missing}: No such file or directory"
    ]


def test_the_same_key_id_twice_in_a_file_is_reported(
    tmp_path: Path, key_files: tuple[Path, Path]
) -> None:
    twice = tmp_path / "twice.keys"
    twice.write_text(f"{new_key_line('k1')}\n{new_key_line('k1')}\n")

    assert problems(MINIMAL + UPSTREAM_LOGIN + secrets_yaml(key_files[0], twice)) == [
        "gateway.yaml:10: secrets.seal_keys: key id 'k1' appears twice"
        " (make one with: crm-gateway keys generate)"
    ]


def test_key_errors_never_quote_key_material(tmp_path: Path, key_files: tuple[Path, Path]) -> None:
    bad = tmp_path / "bad.keys"
    bad.write_text("s1:c2l4dGVlbiBieXRlIGtleQ\n")

    found = problems(MINIMAL + UPSTREAM_LOGIN + secrets_yaml(bad, key_files[1]))

    assert "c2l4dGVlbiBieXRlIGtleQ" not in "\n".join(found)


# -- workers ----------------------------------------------------------------------------------


def test_several_workers_with_an_in_memory_shared_store_are_refused_once_login_is_on(
    secrets: str,
) -> None:
    assert problems(MINIMAL + "workers: 2\n" + UPSTREAM_LOGIN + secrets) == [
        "gateway.yaml:4: workers: more than 1 needs state.shared type redis once login is on:"
        " sessions and rate limits must be shared by every worker (or set workers: 1)"
    ]


def test_workers_auto_with_an_in_memory_shared_store_is_refused_on_any_machine(
    secrets: str,
) -> None:
    """Refused even where `auto` would mean one worker: a file valid on one host is valid
    on the next, whatever its cores."""
    [problem] = problems(MINIMAL + "workers: auto\n" + UPSTREAM_LOGIN + secrets)
    assert problem.startswith("gateway.yaml:4: workers: auto (one per core: ")
    assert problem.endswith(
        "needs state.shared type redis once login is on: sessions and "
        "rate limits must be shared by every worker (or set workers: 1)"
    )


def test_workers_auto_is_one_per_core_this_process_may_use() -> None:
    config = parse_config(MINIMAL + "workers: auto\n")
    assert (config.workers, config.workers_auto) == (len(os.sched_getaffinity(0)), True)
    assert (parse_config(MINIMAL + "workers: 3\n").workers_auto, parse_config(MINIMAL).workers) == (
        False,
        1,
    )


def test_one_worker_with_an_in_memory_shared_store_is_fine(secrets: str) -> None:
    text = MINIMAL + "workers: 1\nstate: {shared: {type: memory}}\n" + UPSTREAM_LOGIN + secrets

    assert parse_config(text).workers == 1


# -- bad values in login, sessions and limits -------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "  path: login\n",
            "gateway.yaml:8: login.path: must be a path such as /login or /index.php?action=Login"
            " but it's 'login'",
        ),
        (
            "  method: TRACE\n",
            "gateway.yaml:8: login.method: must be one of POST, GET, PUT, DELETE, PATCH"
            " but it's 'TRACE'",
        ),
        (
            "  username_field: user name\n",
            "gateway.yaml:8: login.username_field: must be a form field name but it's 'user name'",
        ),
        (
            "  crm_cookies: [ok, 'bad cookie']\n",
            "gateway.yaml:8: login.crm_cookies[1]: must be a cookie name but it's 'bad cookie'",
        ),
        (
            "  logout: {path: 'no-slash'}\n",
            "gateway.yaml:8: login.logout.path: must be a path such as /logout but it's 'no-slash'",
        ),
        (
            "  max_body: 10\n",
            "gateway.yaml:8: login.max_body: must be at least 1024 but it's 10",
        ),
        (
            "  identity_header: Cookie\n",
            "gateway.yaml:8: login.identity_header: must not be a header the gateway manages:"
            " 'Cookie'",
        ),
        (
            "  identity_header: x_forwarded_for\n",
            "gateway.yaml:8: login.identity_header: must not be a header the gateway manages:"
            " 'x_forwarded_for'",
        ),
        (
            "  single_sign_on: true\n",
            "gateway.yaml:8: login.single_sign_on: unknown key (known here: crm_cookies,"
            " identity_header, logout, max_body, method, mode, path, success, username_field,"
            " users_file)",
        ),
    ],
)
def test_a_bad_login_value_is_reported_with_its_line_and_path(
    secrets: str, extra: str, expected: str
) -> None:
    assert expected in problems(MINIMAL + UPSTREAM_LOGIN + extra + secrets)


@pytest.mark.parametrize(
    ("success", "expected"),
    [
        (
            "    status: [302, 404]\n",
            "gateway.yaml:8: login.success.status[1]: must be at most 399 but it's 404",
        ),
        (
            "    status: [199]\n",
            "gateway.yaml:8: login.success.status[0]: must be at least 200 but it's 199",
        ),
        (
            "    failure_location: login?error\n",
            "gateway.yaml:8: login.success.failure_location: must be a path but it's 'login?error'",
        ),
        (
            "    redirect: /home\n",
            "gateway.yaml:8: login.success.redirect: unknown key (known here: cookie,"
            " failure_location, status)",
        ),
    ],
)
def test_a_bad_success_rule_is_reported_with_its_line_and_path(
    secrets: str, success: str, expected: str
) -> None:
    assert expected in problems(MINIMAL + UPSTREAM_LOGIN + success + secrets)


def test_a_bad_success_cookie_name_is_reported_and_still_required(secrets: str) -> None:
    text = MINIMAL + "login:\n  mode: upstream\n  success:\n    cookie: 'a b'\n" + secrets

    assert problems(text) == [
        "gateway.yaml:5: login: success.cookie: is required with mode upstream: the name of the"
        " session cookie the CRM sets when a login succeeds",
        "gateway.yaml:7: login.success.cookie: must be a cookie name but it's 'a b'",
    ]


def test_an_unknown_login_mode_is_reported(secrets: str) -> None:
    text = MINIMAL + "login:\n  mode: sso\n  success: {cookie: sid}\n" + secrets

    assert problems(text) == [
        "gateway.yaml:5: login.mode: must be one of upstream, gateway but it's 'sso'"
    ]


def test_an_idle_timeout_longer_than_the_absolute_one_is_refused(secrets: str) -> None:
    text = MINIMAL + UPSTREAM_LOGIN + "sessions:\n  idle_timeout: 2h\n  absolute_timeout: 1h\n"

    assert problems(text + secrets) == [
        "gateway.yaml:9: sessions: idle_timeout: must not be longer than absolute_timeout"
    ]


@pytest.mark.parametrize(
    ("sessions", "expected"),
    [
        (
            "  idle_timeout: soon\n",
            "sessions.idle_timeout: must be a duration such as 30s, 5m, 12h or 7d but it's 'soon'",
        ),
        ("  hold_cookies: 0s\n", "sessions.hold_cookies: must be at least 1.0 but it's '0s'"),
        (
            "  cookie_name: 'gw session'\n",
            "sessions.cookie_name: must be a cookie name but it's 'gw session'",
        ),
        (
            "  lifetime: 1h\n",
            "sessions.lifetime: unknown key (known here: absolute_timeout, cookie_name,"
            " hold_cookies, idle_timeout, keep_body, max_per_user, step_up_window)",
        ),
        (
            "  max_per_user: 0\n",
            "sessions.max_per_user: must be at least 1 but it's 0",
        ),
    ],
)
def test_a_bad_sessions_value_is_reported_with_its_line_and_path(
    secrets: str, sessions: str, expected: str
) -> None:
    text = MINIMAL + UPSTREAM_LOGIN + "sessions:\n" + sessions + secrets

    assert problems(text) == [f"gateway.yaml:9: {expected}"]


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ("  user_failures: 0\n", "limits.user_failures: must be at least 1 but it's 0"),
        ("  ip_failures: 10001\n", "limits.ip_failures: must be at most 10000 but it's 10001"),
        ("  window: 5 minutes\n", "limits.window: must be a duration such as 30s, 5m, 12h or 7d"),
        ("  lockout: 0\n", "limits.lockout: must be at least 1.0 but it's 0"),
        ("  max_lockout: []\n", "limits.max_lockout: must be a duration"),
        ("  per_ip: 5\n", "limits.per_ip: unknown key (known here: account_hold, account_slowdown"),
        ("  account_hold: never\n", "limits.account_hold: must be a duration"),
    ],
)
def test_a_bad_limits_value_is_reported_with_its_line_and_path(
    secrets: str, limits: str, expected: str
) -> None:
    text = MINIMAL + UPSTREAM_LOGIN + "limits:\n" + limits + secrets

    found = problems(text)

    assert len(found) == 1
    assert found[0].startswith(f"gateway.yaml:9: {expected}"), found


def test_every_sign_in_problem_is_reported_at_once() -> None:
    text = (
        MINIMAL
        + "workers: 3\n"
        + "login:\n  mode: upstream\n  path: nowhere\n"
        + "sessions: {idle_timeout: never}\n"
        + "limits: {user_failures: -1}\n"
    )

    found = problems(text)

    assert [p.split(":")[1] for p in found] == ["1", "1", "4", "6", "7", "8", "9"]


def test_the_account_pause_and_the_session_cap_are_read(secrets: str) -> None:
    text = (
        MINIMAL
        + UPSTREAM_LOGIN
        + "limits: {account_slowdown: 20, account_window: 2h, account_hold: 30m}\n"
        + "sessions: {max_per_user: 50}\n"
        + secrets
    )
    config = parse_config(text)
    limits = config.signin.limits
    assert (limits.account_slowdown, limits.account_window, limits.account_hold) == (
        20,
        7200.0,
        1800.0,
    )
    assert config.signin.sessions.max_per_user == 50
