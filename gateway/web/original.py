"""The request a front proxy is about to send to the CRM, as it names it to the forward-auth
endpoint (gateway.web.forwardauth): nginx's `X-Original-Method`/`X-Original-URI` (our deploy/
config writes them), Caddy's and Traefik's `X-Forwarded-Method`/`X-Forwarded-Uri`. Plain
functions over headers; whether the peer may be believed is the caller's question.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from multidict import CIMultiDictProxy

from gateway.errors import BadRequest
from gateway.headers import fold

# The original request as each proxy names it: nginx's by our deploy/ config (nginx sends
# nothing of its own), Caddy's and Traefik's as they send it.
NGINX = ("x-original-method", "x-original-uri")
FORWARDED = ("x-forwarded-method", "x-forwarded-uri")
_ORIGINAL = frozenset(NGINX + FORWARDED)
_METHOD = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$")  # an RFC 9110 token


@dataclass(frozen=True)
class Original:
    """The request the front proxy is about to send to the CRM."""

    method: str  # as the client sent it, in capitals (another case is refused, as by the proxy)
    target: str  # path and query, as the client sent them
    host: str
    nginx: bool  # asked by nginx's auth_request: its answers are 2xx, 401 and 403 only


def read_original(headers: CIMultiDictProxy[str]) -> Original:
    """The original method, target and host; BadRequest when they are missing or read two
    ways: a header twice (in any spelling), or both nginx's and Caddy's/Traefik's names (a
    client may send one family through a proxy that writes the other: oauth2-proxy
    CVE-2026-40575 judged a client's X-Forwarded-Uri while another path went upstream)."""
    seen = {name: found for name in _ORIGINAL if (found := headers.getall(name, []))}
    if any("_" in name for name in headers):  # rare: `X_Original_URI` read as X-Original-URI
        for name, value in headers.items():
            if "_" in name and (folded := fold(name)) in _ORIGINAL:
                seen.setdefault(folded, []).append(value)
    if any(len(values) > 1 for values in seen.values()):
        raise _unreadable("an original-request header given twice")
    nginx = any(name in seen for name in NGINX)
    if nginx and any(name in seen for name in FORWARDED):
        raise _unreadable("both X-Original-* and X-Forwarded-Method/-Uri")
    method_name, target_name = NGINX if nginx else FORWARDED
    method = seen.get(method_name, [""])[0].strip()
    target = seen.get(target_name, [""])[0]
    if not _METHOD.match(method) or not target:
        raise _unreadable(f"no usable {method_name} and {target_name}")
    if not method.isupper():
        # The proxy refuses such a request line (400); Caddy and Traefik pass a client's
        # method on as sent, and Laravel, Django, Flask and ASP.NET Core run `post` as POST
        # and `delete` as DELETE: judged as written, a rule on POST or DELETE would not hold.
        raise _unreadable(f"a method not in capitals in {method_name}")
    host = headers.get("X-Forwarded-Host", "") or headers.get("Host", "")
    return Original(method, target, host.strip()[:256], nginx)


def asked_by_nginx(headers: CIMultiDictProxy[str]) -> bool:
    """Whether the question names the original request as nginx does (X-Original-*, in any
    spelling): its auth_request hears any answer but 2xx, 401 and 403 as its own 500."""
    return any(fold(name).startswith("x-original-") for name in headers)


def _unreadable(detail: str) -> BadRequest:
    return BadRequest(detail, reason="forward_auth_headers")
