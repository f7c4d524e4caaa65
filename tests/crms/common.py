"""Serving a test CRM whose pages need their own address (absolute redirects, a site URL),
and the quirks any of them may be given: a clock set wrong, a cookie domain of elsewhere."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate

from aiohttp import web

from tests.conftest import Served, serve

# What the CRM knows of itself once it listens: "origin" (http://127.0.0.1:PORT), and "site",
# the address its own configuration names for absolute URLs (its origin unless a test plants
# another), "skew" (seconds its clock is off) and "cookie_domain" (a Domain= it adds).
SELF = web.AppKey("crm_self", dict[str, object])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_app(*middlewares: object) -> web.Application:
    app = web.Application(middlewares=[_quirks, *middlewares])  # type: ignore[list-item]
    app[SELF] = {"origin": "", "site": "", "skew": 0.0, "cookie_domain": ""}
    return app


def site(request: web.Request) -> str:
    """The CRM's configured site URL: where its absolute redirects point."""
    return str(request.app[SELF]["site"])


def redirect(location: str, status: int = 302) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


def page(title: str, body: str, status: int = 200) -> web.Response:
    html = (
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{title}</title></head>"
        f"<body>{body}</body></html>"
    )
    return web.Response(text=html, content_type="text/html", status=status)


@web.middleware
async def _quirks(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A clock off by `skew` seconds (its Date header says so); a cookie domain of elsewhere."""
    response = await handler(request)
    me = request.app[SELF]
    skew = float(me["skew"])  # type: ignore[arg-type]
    if skew:
        response.headers["Date"] = formatdate(time.time() + skew, usegmt=True)
    domain = str(me["cookie_domain"])
    if domain and "Set-Cookie" in response.headers:
        cookies = response.headers.getall("Set-Cookie")
        response.headers.popall("Set-Cookie")
        for cookie in cookies:
            response.headers.add("Set-Cookie", f"{cookie}; Domain={domain}")
    return response


async def serve_crm(
    app: web.Application, *, site: str = "", skew: float = 0.0, cookie_domain: str = ""
) -> Served:
    """The CRM on 127.0.0.1:0; `site` replaces its own address in its absolute URLs
    (`{port}` is filled in), as a CRM configured with another name for itself does."""
    served = await serve(app)
    me = app[SELF]
    me.update(
        origin=served.url,
        site=(site or served.url).format(port=served.port),
        skew=skew,
        cookie_domain=cookie_domain,
    )
    return served
