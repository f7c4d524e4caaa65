"""Server-rendered pages: Jinja2 with autoescaping, the visitor's language, strict headers.

Owns how a page looks and which language it speaks (a chosen language cookie, else
Accept-Language). Forms work without JavaScript; the one page part that needs it (a passkey:
the browser's WebAuthn API) loads a static script of ours, allowed by the page's nonce and
nothing else (no inline script, no other source).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.i18n import LANGUAGES, NAMES, negotiate, time_until, translate
from gateway.web.cookies import LANGUAGE_COOKIE, cookie_name
from gateway.web.keys import CLOCK, CONFIG

if TYPE_CHECKING:
    import jinja2

_HERE = Path(__file__).parent
STATIC = _HERE / "static"


@functools.cache
def _environment() -> jinja2.Environment:
    """The templates' environment, built for the first page shown: jinja2 (with markupsafe)
    is about 2 MB of a worker's memory, which a worker that shows no page (an anonymous
    gateway, one serving API tokens) never needs."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a missing value is a bug we want to see, not a blank
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # templates ship with the code: no stat of the file on every view
    )


@functools.cache
def stylesheet() -> bytes:
    """gateway.css, read once on first use rather than on every request for it."""
    return (STATIC / "gateway.css").read_bytes()


# Our scripts under static/: only these are served, each read once.
SCRIPTS = frozenset({"webauthn.js"})


@functools.cache
def script(name: str) -> bytes:
    assert name in SCRIPTS
    return (STATIC / name).read_bytes()


def language(request: web.Request) -> str:
    chosen = request.cookies.get(cookie_name(request, LANGUAGE_COOKIE), "")
    if chosen in LANGUAGES:
        return chosen
    return negotiate(request.headers.get("Accept-Language", ""))


def when(timestamp: float) -> str:
    """A time people read the same anywhere: `2026-11-22 14:05 UTC`."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def locked_text(request: web.Request, until: float, key: str) -> str:
    """ "… Try again in 3 minutes": a lockout said the same on every page, counted on the
    gateway's clock (a clock time would be in a zone the visitor has to convert)."""
    lang = language(request)
    return translate(lang, key, wait=time_until(lang, until - request.app[CLOCK].now()))


def retry_after(request: web.Request, until: float) -> str:
    """The Retry-After value (seconds, rounded up) for a lockout ending at `until`."""
    return str(max(1, int(until - request.app[CLOCK].now()) + 1))


def security_headers(nonce: str, *, scripted: bool = False) -> dict[str, str]:
    """`scripted`: the page loads one of our SCRIPTS (by its nonce, the only script allowed)."""
    scripts = f"; script-src 'nonce-{nonce}'" if scripted else ""
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'self' 'nonce-"
            + nonce
            + "'; img-src 'self' https: data:; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'" + scripts
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        # Return paths and enrolment pages must not leak to a logo host or a clicked link.
        "Referrer-Policy": "no-referrer",
    }


def page(
    request: web.Request,
    template: str,
    title: str,
    *,
    status: int = 200,
    csrf: str = "",
    signed_in: bool = False,
    **context: Any,
) -> web.Response:
    """A translated page. `title` and context strings are already translated by the caller
    (with `t = translator(request)`); templates translate their own fixed labels."""
    lang = language(request)
    config = request.app[CONFIG]
    nonce = secrets.token_urlsafe(16)
    values: dict[str, Any] = {
        "lang": lang,
        "t": functools.partial(translate, lang),
        "title": title,
        "brand": config.branding,
        "prefix": config.path_prefix,
        "nonce": nonce,
        "languages": [(code, NAMES[code]) for code in LANGUAGES],
        "here": request.rel_url.path_qs,
        "csrf": csrf,
        "signed_in": signed_in,
        "error": "",
        "notice": "",
        # Our pages answer 429 only for a lockout: shown as an alert, with nothing to press
        # that leads straight back into it (templates/notice.html, login.html, challenge.html).
        "locked_out": status == 429,
        "script": "",  # one of SCRIPTS, for a page part that needs the browser's own API
        **context,
    }
    assert not values["script"] or values["script"] in SCRIPTS
    body = _environment().get_template(template).render(values)
    headers = security_headers(nonce, scripted=bool(values["script"]))
    headers["Content-Language"] = lang
    return web.Response(
        status=status, text=body, content_type="text/html", charset="utf-8", headers=headers
    )


def translator(request: web.Request) -> Callable[..., str]:
    """`t(key, **params)`: the catalog in the visitor's language."""
    return functools.partial(translate, language(request))
