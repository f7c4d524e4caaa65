"""Names of headers with a special meaning to a proxy; values only, shared by config and core."""

from __future__ import annotations

# RFC 9110 §7.6.1 plus the de-facto ones (Proxy-Connection, Keep-Alive) and HTTP2-Settings
# (h2c upgrade smuggling, WS-3). Transfer-Encoding is re-framed by us, never copied.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "http2-settings",
    }
)

# Headers only the gateway (or a trusted proxy before it) may speak. Compared after folding
# case and `_` to `-`, because CGI/WSGI upstreams read X_Forwarded_For as X-Forwarded-For.
FORWARDING = frozenset(
    {
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-uri",
        "x-forwarded-ssl",
        "x-real-ip",
        "forwarded",
        "x-request-id",
    }
)

# Headers whose meaning the gateway or the CRM's session depends on: never a name an operator
# may give to a header the gateway injects.
MANAGED = (
    HOP_BY_HOP
    | FORWARDING
    | frozenset({"host", "content-length", "content-type", "cookie", "authorization", "expect"})
)


# Headers (and a query parameter) through which frameworks let a POST stand for another
# method (Symfony, Laravel, Rails, ASP.NET, Google APIs): a rule judged on POST would not be
# the rule for the method the CRM runs, so a request carrying one is refused.
METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
METHOD_OVERRIDE_PARAM = "_method"
# Headers through which frameworks let a request stand for another path (Zend Framework 1,
# Symfony before CVE-2018-14773, Drupal 7 before SA-CORE-2018-005, IIS's URL Rewrite): a rule
# judged on the path would not be the rule for the page the CRM runs. Never relayed by the
# proxy (IIS's Application Request Routing in front may add one: the CRM gets the path
# judged); refused at the forward-auth endpoint, whose front proxy relays the client's.
PATH_OVERRIDES = frozenset({"x-original-url", "x-rewrite-url"})


def fold(name: str) -> str:
    """A header name as compared: lower case, `_` read as `-`."""
    return name.lower().replace("_", "-")
