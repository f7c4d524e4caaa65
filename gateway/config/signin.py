"""The sign-in part of gateway.yaml: `login`, `sessions`, `secrets` and `limits`.

Parsed into frozen values with every problem collected (file, line, key), like the other
sections (gateway.config.load calls `read_signin`). Keys are checked here so a bad key never
reaches a running server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.config.yaml_reader import Value
from gateway.crypto import KeyRing, parse_keys
from gateway.errors import BadRequest, KeyProblem
from gateway.headers import MANAGED, fold
from gateway.paths import normalize_path

_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/\-]*$")
# The login's and logout's path may name query parameters too: a PHP CRM posts every form to
# index.php and tells its login apart by the query (`/index.php?action=Login`).
_PAIR = r"[A-Za-z0-9._~!$'()*+,:@%/\-]+=[A-Za-z0-9._~!$'()*+,:@%/\-]*"
_TARGET = re.compile(rf"^/[A-Za-z0-9._~!$&'()*+,;=:@%/\-]*(\?{_PAIR}(&{_PAIR})*)?$")
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FIELD = re.compile(r"^[^\s&=]{1,128}$")
_METHODS = ("POST", "GET", "PUT", "DELETE", "PATCH")


@dataclass(frozen=True)
class Login:
    mode: str  # "upstream": the CRM checks passwords; "gateway": our page and users file
    path: str = "/login"  # upstream: where the CRM's login form posts (`?a=b` must be in the query)
    method: str = "POST"
    username_field: str = "username"
    success_status: tuple[int, ...] = (301, 302, 303)
    success_cookie: str = ""  # the CRM's session cookie: its Set-Cookie means success
    failure_location: str = ""  # a Location starting here is a failed login (back to the form)
    crm_cookies: tuple[str, ...] = ()  # stripped from requests without a gateway session
    logout_path: str = ""
    logout_method: str = "POST"
    max_body: int = 64 * 1024
    users_file: str = ""  # gateway mode: user name → argon2id hash
    identity_header: str = "Remote-User"  # gateway mode: how the CRM learns the user


@dataclass(frozen=True)
class Sessions:
    cookie_name: str = "crm_gateway"
    idle_timeout: float = 30 * 60.0
    absolute_timeout: float = 12 * 3600.0
    hold_cookies: float = 5 * 60.0  # how long the CRM's cookies wait for the second factor
    step_up_window: float = 5 * 60.0  # how fresh a factor must be to change the account
    # Open sessions of one user: the oldest is ended when a new one would pass this (a
    # script signing in in a loop must not fill the store).
    max_per_user: int = 1000
    # A form or an upload that arrives when a verification is due is kept (sealed, one use,
    # a few minutes) and sent after the code, up to this size; a larger one is asked again.
    keep_body: int = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Failed codes: per user and per address, across sessions; then a doubling lockout."""

    user_failures: int = 5
    ip_failures: int = 20
    window: float = 5 * 60.0
    lockout: float = 60.0
    max_lockout: float = 3600.0
    # Failures in a day that lock a user for `max_lockout` even when each window stayed under
    # its limit: a patient guesser (4 tries every 5 minutes) is stopped too.
    daily_failures: int = 30
    # Wrong passwords for one account from any address within `account_window`: from
    # `account_slowdown` on, each pauses the account's password step (except from the user's
    # own devices and usual addresses) twice as long as the last, up to `account_hold`.
    account_slowdown: int = 10
    account_window: float = 3600.0
    account_hold: float = 15 * 60.0


@dataclass(frozen=True)
class Secrets:
    session_keys: KeyRing | None = None  # signs cookies
    seal_keys: KeyRing | None = None  # seals TOTP secrets and held CRM cookies at rest


@dataclass(frozen=True)
class SignIn:
    login: Login | None = None
    sessions: Sessions = field(default_factory=Sessions)
    limits: Limits = field(default_factory=Limits)
    secrets: Secrets = field(default_factory=Secrets)


def _text(keys: dict[str, Value], name: str, pattern: re.Pattern[str], what: str) -> str | None:
    if name not in keys:
        return None
    text = keys[name].text()
    if text is not None and not pattern.match(text):
        keys[name].fail(f"must be {what} but it's {text!r}")
        return None
    return text


def _readable(keys: dict[str, Value], name: str, text: str | None) -> str | None:
    """`text` (a path, with or without a query) when a request could name it: its path
    part read as the gateway reads a request's (gateway.paths.normalize_path), else the
    problem, and None. `/login%C3` (half a letter) or `/a%2Fb` would never be matched."""
    if text is None:
        return None
    try:
        normalize_path(text.partition("?")[0])
    except BadRequest as exc:
        keys[name].fail(f"must be a path a request can name ({exc.detail}) but it's {text!r}")
        return None
    return text


def _method(keys: dict[str, Value], name: str, default: str) -> str:
    if name not in keys:
        return default
    return keys[name].choice(_METHODS) or default


def _login(value: Value) -> Login | None:
    keys = value.mapping(
        {
            "mode",
            "path",
            "method",
            "username_field",
            "success",
            "crm_cookies",
            "logout",
            "max_body",
            "users_file",
            "identity_header",
        }
    )
    if keys is None:
        return None
    mode = keys["mode"].choice(("upstream", "gateway")) if "mode" in keys else "upstream"
    if mode is None:
        return None
    target = "a path such as /login or /index.php?action=Login"
    path = _readable(keys, "path", _text(keys, "path", _TARGET, target)) or "/login"
    method = _method(keys, "method", "POST")
    field_name = _text(keys, "username_field", _FIELD, "a form field name") or "username"
    statuses: tuple[int, ...] = (301, 302, 303)
    cookie = ""
    failure = ""
    if "success" in keys:
        success = keys["success"].mapping({"status", "cookie", "failure_location"}) or {}
        if "status" in success:
            items = success["status"].sequence() or []
            found = [item.integer(minimum=200, maximum=399) for item in items]
            statuses = tuple(s for s in found if s is not None) or statuses
        cookie = _text(success, "cookie", _COOKIE_NAME, "a cookie name") or ""
        found_path = _text(success, "failure_location", _PATH, "a path")
        failure = _readable(success, "failure_location", found_path) or ""
    if mode == "upstream" and not cookie:
        value.fail(
            "success.cookie: is required with mode upstream: the name of the session cookie "
            "the CRM sets when a login succeeds"
        )
    crm_cookies: list[str] = [cookie] if cookie else []
    for item in (keys["crm_cookies"].sequence() or []) if "crm_cookies" in keys else []:
        name = item.text()
        if name is not None and not _COOKIE_NAME.match(name):
            item.fail(f"must be a cookie name but it's {name!r}")
        elif name is not None and name not in crm_cookies:
            crm_cookies.append(name)
    logout_path, logout_method = "", "POST"
    if "logout" in keys:
        logout = keys["logout"].mapping({"path", "method"}) or {}
        found_path = _text(logout, "path", _TARGET, "a path such as /logout")
        logout_path = _readable(logout, "path", found_path) or ""
        logout_method = _method(logout, "method", "POST")
    max_body = keys["max_body"].size(minimum=1024) if "max_body" in keys else None
    users_file = keys["users_file"].file_path() if "users_file" in keys else None
    if mode == "gateway" and not users_file:
        value.fail("users_file: is required with mode gateway (see crm-gateway hash-password)")
    header = "Remote-User"
    if "identity_header" in keys:
        header = _text(keys, "identity_header", _COOKIE_NAME, "a header name") or header
        if fold(header) in MANAGED:
            keys["identity_header"].fail(f"must not be a header the gateway manages: {header!r}")
    return Login(
        mode=mode,
        path=path,
        method=method,
        username_field=field_name,
        success_status=statuses,
        success_cookie=cookie,
        failure_location=failure,
        crm_cookies=tuple(crm_cookies),
        logout_path=logout_path,
        logout_method=logout_method,
        max_body=max_body or 64 * 1024,
        users_file=users_file or "",
        identity_header=header,
    )


def _sessions(value: Value) -> Sessions:
    keys = value.mapping(
        {
            "cookie_name",
            "idle_timeout",
            "absolute_timeout",
            "hold_cookies",
            "step_up_window",
            "max_per_user",
            "keep_body",
        }
    )
    default = Sessions()
    if keys is None:
        return default

    def duration(name: str, fallback: float) -> float:
        found = keys[name].duration(minimum=1.0) if name in keys else None
        return fallback if found is None else found

    sessions = Sessions(
        cookie_name=_text(keys, "cookie_name", _COOKIE_NAME, "a cookie name")
        or default.cookie_name,
        idle_timeout=duration("idle_timeout", default.idle_timeout),
        absolute_timeout=duration("absolute_timeout", default.absolute_timeout),
        hold_cookies=duration("hold_cookies", default.hold_cookies),
        step_up_window=duration("step_up_window", default.step_up_window),
        max_per_user=(
            keys["max_per_user"].integer(minimum=1, maximum=100_000)
            if "max_per_user" in keys
            else None
        )
        or default.max_per_user,
        keep_body=_keep_body(keys["keep_body"]) if "keep_body" in keys else default.keep_body,
    )
    if sessions.idle_timeout > sessions.absolute_timeout:
        value.fail("idle_timeout: must not be longer than absolute_timeout")
    return sessions


def _keep_body(value: Value) -> int:
    """Up to 64 MiB: a kept body waits in the shared store (Redis: its memory)."""
    found = value.size()
    if found is not None and found > 64 * 1024 * 1024:
        value.fail(f"must be at most 64MiB but it's {value.node.value!r}")
        return Sessions().keep_body
    return Sessions().keep_body if found is None else found


def _limits(value: Value) -> Limits:
    keys = value.mapping(
        {
            "user_failures",
            "ip_failures",
            "window",
            "lockout",
            "max_lockout",
            "daily_failures",
            "account_slowdown",
            "account_window",
            "account_hold",
        }
    )
    default = Limits()
    if keys is None:
        return default

    def number(name: str, fallback: int) -> int:
        found = keys[name].integer(minimum=1, maximum=10000) if name in keys else None
        return fallback if found is None else found

    def duration(name: str, fallback: float) -> float:
        found = keys[name].duration(minimum=1.0) if name in keys else None
        return fallback if found is None else found

    return Limits(
        user_failures=number("user_failures", default.user_failures),
        ip_failures=number("ip_failures", default.ip_failures),
        window=duration("window", default.window),
        lockout=duration("lockout", default.lockout),
        max_lockout=duration("max_lockout", default.max_lockout),
        daily_failures=number("daily_failures", default.daily_failures),
        account_slowdown=number("account_slowdown", default.account_slowdown),
        account_window=duration("account_window", default.account_window),
        account_hold=duration("account_hold", default.account_hold),
    )


def _ring(value: Value) -> KeyRing | None:
    text = value.secret()
    if text is None:
        return None
    try:
        return parse_keys(text)
    except KeyProblem as exc:
        value.fail(f"{exc} (make one with: crm-gateway keys generate)")
        return None


def _secrets(value: Value) -> tuple[Secrets, set[str]]:
    """The rings, and which keys were written (a written but bad one is reported once)."""
    keys = value.mapping({"session_keys", "seal_keys"})
    if keys is None:
        return Secrets(), set()
    secrets = Secrets(
        session_keys=_ring(keys["session_keys"]) if "session_keys" in keys else None,
        seal_keys=_ring(keys["seal_keys"]) if "seal_keys" in keys else None,
    )
    return secrets, set(keys)


def read_signin(keys: dict[str, Value], root: Value) -> SignIn:
    login = _login(keys["login"]) if "login" in keys else None
    sessions = _sessions(keys["sessions"]) if "sessions" in keys else Sessions()
    limits = _limits(keys["limits"]) if "limits" in keys else Limits()
    secrets, written = _secrets(keys["secrets"]) if "secrets" in keys else (Secrets(), set())
    if login is not None:
        for name in ("session_keys", "seal_keys"):
            if name not in written:
                root.fail(
                    f"secrets.{name}: is required when login is configured "
                    "({file: PATH} or {env: NAME}; make one with: crm-gateway keys generate)"
                )
    return SignIn(login=login, sessions=sessions, limits=limits, secrets=secrets)
