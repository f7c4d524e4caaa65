"""The table of the gateway's own pages under the reserved prefix: which sub-path and method
reach which page. Nothing else: each page is its own module."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import MethodNotAllowed
from gateway.signin.session import FULL, PASSWORD
from gateway.web.helpdesk import routes as helpdesk
from gateway.web.pages.account import (
    account,
    account_forget_device,
    account_interval,
    account_regenerate,
    account_remove,
)
from gateway.web.pages.challenge import challenge
from gateway.web.pages.code_sending import send_code
from gateway.web.pages.enrol import enrol, skip
from gateway.web.pages.frame import Handler, needs
from gateway.web.pages.login import login_page, logout, serve_stylesheet, switch_language
from gateway.web.pages.passkey import passkey, serve_script
from gateway.web.pages.recovery import recovery_codes, recovery_codes_file
from gateway.web.signin import SIGNIN

GET_ROUTES: dict[str, Handler] = {
    "challenge": challenge,
    "enrol": enrol,
    "passkey": passkey,
    "recovery-codes": recovery_codes,
    "recovery-codes.txt": recovery_codes_file,
    "account": account,
    "login": login_page,
    "lang": switch_language,
    "static/gateway.css": serve_stylesheet,
    "static/webauthn.js": serve_script,
}


POST_ROUTES: dict[str, Handler] = {
    "challenge": challenge,
    "challenge/send": needs(PASSWORD, FULL)(send_code),
    "enrol": enrol,
    "passkey": passkey,
    "skip": skip,
    "recovery-codes": recovery_codes,
    "account/remove": account_remove,
    "account/regenerate": account_regenerate,
    "account/forget-device": account_forget_device,
    "account/interval": account_interval,
    "login": login_page,
    "logout": logout,
}


async def dispatch(request: web.Request, sub: str) -> web.StreamResponse | None:
    """The page for a path under the prefix, or None when sign-in has no such page."""
    signin = request.app.get(SIGNIN)
    if signin is None:
        return None
    if sub == "admin" or sub.startswith("admin/"):  # the helpdesk console: its own table
        return await helpdesk.dispatch(request, signin, sub)
    handler = (GET_ROUTES if request.method in ("GET", "HEAD") else POST_ROUTES).get(sub)
    if handler is None:
        if sub in GET_ROUTES or sub in POST_ROUTES:
            raise MethodNotAllowed(f"{request.method} on {sub}")
        return None
    return await handler(request, signin)
