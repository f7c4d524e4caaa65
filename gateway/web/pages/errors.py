"""The gateway's own HTML and JSON answers: branded, translated, no script, no upstream detail."""

from __future__ import annotations

import json
from html import escape

from aiohttp import web

from gateway.config.model import Branding
from gateway.i18n import DEFAULT, translate

_STYLE = """
:root{--brand:%(colour)s}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1a1a;
background:#f4f5f7}
header{background:var(--brand);color:#fff;padding:.75rem 1rem;display:flex;align-items:center;
gap:.75rem}
header img{height:2rem}
header span{font-weight:600}
main{max-width:34rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:.5rem;
box-shadow:0 1px 3px rgba(0,0,0,.15)}
h1{font-size:1.4rem;margin:0 0 .75rem}
.ref{color:#555;font-size:.875rem}
a{color:var(--brand)}
a:focus,button:focus{outline:3px solid #ffbf47;outline-offset:2px}
@media (max-width:36rem){main{margin:0;border-radius:0;box-shadow:none}}
"""


# Several reason codes share one message for people; the code itself stays in logs and JSON.
MESSAGE_FOR_REASON = {
    "ip_not_allowed": "ip_denied",
    "token_ip_not_allowed": "ip_denied",
    "path_no_rule": "path_not_allowed",
    "path_ambiguous": "bad_request",
    "forwarded_header_malformed": "bad_request",
    "bad_request_target": "bad_request",
    "forwarded_header_conflict": "bad_request",
    "header_not_utf8": "bad_request",
    "credential_ambiguous": "bad_request",
    "method_ambiguous": "bad_request",
    "login_ambiguous": "bad_request",
    "form_too_large": "bad_request",
    "body_encoded": "bad_request",
    # The forward-auth endpoint (gateway.web.forwardauth).
    "forward_auth_untrusted": "bad_request",
    "forward_auth_headers": "bad_request",
    "identity_header_sent": "bad_request",
    "reserved_prefix": "not_found",
    "login_not_proxied": "bad_request",
    "crm_session_unverified": "signin_required",
}


def render_error_html(
    branding: Branding, lang: str, reason: str, request_id: str
) -> tuple[str, str]:
    """(language, page) for an error, in the visitor's language."""
    reason = MESSAGE_FOR_REASON.get(reason, reason)
    title_key = f"error.{reason}.title"
    title = translate(lang, title_key)
    if title == title_key:
        title, body = translate(lang, "error.title"), translate(lang, "error.internal_error.body")
    else:
        body = translate(lang, f"error.{reason}.body")
    logo = f'<img src="{escape(branding.logo_url)}" alt="">' if branding.logo_url else ""
    page = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{escape(title)} · {escape(branding.product_name)}</title>"
        f"<style>{_STYLE % {'colour': branding.colour}}</style></head><body>"
        f"<header>{logo}<span>{escape(branding.product_name)}</span></header>"
        f'<main role="main"><h1>{escape(title)}</h1><p>{escape(body)}</p>'
        f'<p class="ref">{escape(translate(lang, "error.request_id"))}: '
        f"<code>{escape(request_id)}</code></p>"
        f'<p><a href="/">{escape(translate(lang, "error.back"))}</a></p></main></body></html>'
    )
    return lang, page


def error_response(
    *,
    status: int,
    reason: str,
    request_id: str,
    html: bool,
    branding: Branding,
    language: str = DEFAULT,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """`language`: the visitor's (gateway.web.pages.render.language: the one they chose, or
    their browser's)."""
    extra = {"Cache-Control": "no-store", "X-Request-Id": request_id, **(headers or {})}
    if html:
        lang, page = render_error_html(branding, language, reason, request_id)
        extra["Content-Language"] = lang
        return web.Response(
            status=status, text=page, content_type="text/html", charset="utf-8", headers=extra
        )
    body = json.dumps({"error": reason, "status": status, "request_id": request_id})
    return web.Response(status=status, text=body, content_type="application/json", headers=extra)
