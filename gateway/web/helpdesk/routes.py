"""The console's table: which page a path under {prefix}admin/ reaches, and the one way in
for all of them: served here at all (gateway.web.helpdesk.access.console_of), the
administrator admitted (`admit`), and bad input (a field the page does not have, a user
named twice, a query string too long) answered with a page that says so and an audit event,
never a 500."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from gateway.config.console import Console
from gateway.errors import BadRequest, MethodNotAllowed
from gateway.web.helpdesk import actions, activity, ledger, users
from gateway.web.helpdesk.access import HOME, Admin, admit, console_of, refused
from gateway.web.pages.forms import read_form
from gateway.web.signin import SignIn

Page = Callable[[web.Request, SignIn, Console, Admin], Awaitable[web.StreamResponse]]

GET_PAGES: dict[str, Page] = {
    "": users.search,
    "user": users.user_page,
    "activity": activity.activity,
    "sms": ledger.ledger_page,
    "sms.csv": ledger.ledger_csv,
}
POST_PAGES: dict[str, Page] = {"act": actions.act}
STATUS = {"query_too_long": 414, "unknown_user": 404}


async def dispatch(request: web.Request, signin: SignIn, sub: str) -> web.StreamResponse | None:
    """The console's page for `sub` (the path under the prefix, `admin` or `admin/…`), or
    None where there is none (the console off, or served on the other listener): 404."""
    console = console_of(request)
    if console is None:
        return None
    if sub == "admin":
        return signin.redirect(f"{signin.prefix}{HOME}")
    name = sub.removeprefix(HOME)
    acting = request.method == "POST"  # a change is a form's POST, never PUT or DELETE
    reading = request.method in ("GET", "HEAD")
    page = POST_PAGES.get(name) if acting else GET_PAGES.get(name) if reading else None
    if page is None:
        if name in GET_PAGES or name in POST_PAGES:
            raise MethodNotAllowed(f"{request.method} on the console's {name!r}")
        return None
    query = request.rel_url.raw_query_string
    back = f"{HOME}{name}" + (f"?{query}" if query and len(query) <= console.max_query else "")
    if acting:
        form = await read_form(request)  # size, type and Origin; the CSRF token after `admit`
        target = form.get("user", "")
        back = f"{HOME}user?u={quote(target, safe='')}" if 0 < len(target) <= 256 else HOME
    admitted = await admit(request, signin, console, back, act=acting)
    if not isinstance(admitted, Admin):
        return admitted
    try:
        return await page(request, signin, console, admitted)
    except BadRequest as exc:
        return refused(
            request,
            exc.reason if exc.reason in REASONS else "tampered",
            status=STATUS.get(exc.reason, 400),
            detail=exc.detail[:200],
        )


# Every reason a console page may refuse for: each has its sentence (helpdesk.refused.*).
REASONS = (
    "network",
    "no_admin_role",
    "no_factor",
    "rate_limited",
    "tampered",
    "bulk",
    "query_too_long",
    "unknown_user",
    "self",
    "higher_role",
    "read_only",
    "no_contact",
    "no_authenticator",
    "unknown_device",
    "not_confirmed",
    "range",
)
