"""A PHP CRM of the SugarCRM family, as the gateway meets it: every page and form through
index.php?action=…, a PHP session (PHPSESSID) started on every page and renewed at login
(session_regenerate_id: a second Set-Cookie), the fields `user_name` and `username_password`,
redirects to absolute URLs built from its configured site URL, logout by a GET link. A wrong
password shows the form again with an error (200), or, with `failure_redirects`, is sent back
to index.php?action=Login&login_error=1 as SugarCRM does (a new session cookie and all: to the
gateway it then looks like a right one). With `routed_by_form`, as SuiteCRM itself: its
forms post to plain index.php and route themselves with hidden fields (`module=Users`,
`action=Authenticate`), read from the form over the query as PHP's $_REQUEST does. Not PHP;
a test double of its shape."""

from __future__ import annotations

import secrets
from html import escape

from aiohttp import web

from tests.crms.common import Handler, new_app, page, redirect, site

SESSION_COOKIE = "PHPSESSID"
USERS = {"jan": "jan-geheim-1", "ingrid": "ingrid-passord-2"}
LOGIN_ERROR = "You must specify a valid username and password."

SESSIONS = web.AppKey("php_sessions", dict[str, dict[str, str]])  # id → $_SESSION
CONTACTS = web.AppKey("php_contacts", list[str])
FAILURE_REDIRECTS = web.AppKey("php_failure_redirects", bool)
ROUTED_BY_FORM = web.AppKey("php_routed_by_form", bool)
_SID = web.RequestKey("php_sid", str)
_NEW = web.RequestKey("php_new_session", bool)
_RENEWED = web.RequestKey("php_renewed", str)


@web.middleware
async def _session(request: web.Request, handler: Handler) -> web.StreamResponse:
    """session_start(): an unknown or missing PHPSESSID starts a new session and sends it."""
    sessions = request.app[SESSIONS]
    sid = request.cookies.get(SESSION_COOKIE, "")
    request[_NEW] = sid not in sessions
    if request[_NEW]:
        sid = secrets.token_hex(13)
        sessions[sid] = {}
    request[_SID] = sid
    response = await handler(request)
    if request[_NEW]:
        response.headers.add("Set-Cookie", f"{SESSION_COOKIE}={sid}; path=/")
    if _RENEWED in request:  # session_regenerate_id(true) after session_start()
        response.headers.add("Set-Cookie", f"{SESSION_COOKIE}={request[_RENEWED]}; path=/")
    return response


def _session_of(request: web.Request) -> dict[str, str]:
    return request.app[SESSIONS][request[_SID]]


def _to(request: web.Request, action: str) -> web.Response:
    return redirect(f"{site(request)}/index.php?action={action}")


def _login_form(request: web.Request, error: str = "") -> web.Response:
    message = f'<p class="error">{escape(error)}</p>' if error else ""
    routed = request.app[ROUTED_BY_FORM]
    target = "index.php" if routed else "index.php?action=Login"
    route = '<input type="hidden" name="action" value="Authenticate">' if routed else ""
    return page(
        "SuiteCRM",
        f'{message}<form action="{target}" method="post" name="DetailView">{route}'
        '<input type="hidden" name="module" value="Users">'
        '<input type="hidden" name="return_action" value="Home">'
        '<input type="hidden" name="login_language" value="en_us">'
        '<label for="user_name">Username:</label>'
        '<input type="text" id="user_name" name="user_name" value="">'
        '<label for="username_password">Password:</label>'
        '<input type="password" id="username_password" name="username_password" value="">'
        '<input type="submit" id="bigbutton" name="Login" value="Log In"></form>',
    )


def _home(request: web.Request, user: str) -> web.Response:
    rows = "".join(f"<li>{escape(name)}</li>" for name in request.app[CONTACTS])
    return page(
        "Home » SuiteCRM",
        f'<nav>{escape(user)} · <a href="index.php?action=Logout">Log Out</a></nav>'
        f"<h2>Contacts</h2><ul>{rows}</ul>"
        + (
            '<form action="index.php" method="post">'
            '<input type="hidden" name="action" value="SaveContact">'
            if request.app[ROUTED_BY_FORM]
            else '<form action="index.php?action=SaveContact" method="post">'
        )
        + '<input type="text" name="name"><input type="submit" value="Save"></form>',
    )


async def index(request: web.Request) -> web.StreamResponse:
    action = request.query.get("action", "")
    form = await request.post() if request.method == "POST" else None
    if form is not None and request.app[ROUTED_BY_FORM]:
        action = str(form.get("action", action))  # $_REQUEST: the form's over the query's
    login = "Authenticate" if request.app[ROUTED_BY_FORM] else "Login"
    user = _session_of(request).get("user", "")
    if form is not None and action == login:
        name, password = str(form.get("user_name", "")), str(form.get("username_password", ""))
        if name not in USERS or not secrets.compare_digest(USERS[name], password):
            if request.app[FAILURE_REDIRECTS]:
                return _to(request, "Login&login_error=1")
            return _login_form(request, LOGIN_ERROR)
        sessions = request.app[SESSIONS]
        renewed = secrets.token_hex(13)
        sessions[renewed] = {"user": name}
        del sessions[request[_SID]]
        request[_RENEWED] = renewed
        return _to(request, "Home")
    if action == "Login":
        return _login_form(request)
    if not user:
        return _to(request, "Login")
    if form is not None and action == "SaveContact":
        request.app[CONTACTS].append(str(form.get("name", "")))
        return _to(request, "Home")
    if action == "Logout":
        request.app[SESSIONS].pop(request[_SID], None)
        return _to(request, "Login")
    return _home(request, user)


async def root(request: web.Request) -> web.Response:
    return redirect(f"{site(request)}/index.php")


def php_crm_app(
    *, failure_redirects: bool = False, routed_by_form: bool = False
) -> web.Application:
    app = new_app(_session)
    app[SESSIONS] = {}
    app[FAILURE_REDIRECTS] = failure_redirects
    app[ROUTED_BY_FORM] = routed_by_form
    app[CONTACTS] = ["Jan de Vries", "Ingrid Hansen"]
    app.router.add_get("/", root)
    app.router.add_route("*", "/index.php", index)
    return app
