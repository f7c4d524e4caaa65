"""What crosses the proxy: which headers go on, which are removed, and which are rewritten.

Plain functions over header multidicts, so every rule is testable without a socket. The order
of operations is the point (shared/reference/security-tests.md B.4, HH-1): first drop what the
client's `Connection` names, then add the gateway's own headers, so no client can make the
gateway's headers hop-by-hop (Traefik CVE-2024-45410, Apache CVE-2022-31813).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import BadRequest
from gateway.headers import FORWARDING, HOP_BY_HOP, PATH_OVERRIDES, fold
from gateway.web.headplans import request_removals, response_plan

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The request's own framing and the ones we must not relay (the gateway answers Expect itself:
# gateway.web.bodies).
_REQUEST_DROP = frozenset({"expect", "content-length", "host"})

MAX_FORWARDED_HOPS = 32
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class ClientView(NamedTuple):
    """Who sent the request, as far as the gateway can believe it. A named tuple: made for
    every request, and a frozen dataclass costs a setattr call per field."""

    ip: str  # the client's address (TCP peer, or from forwarding headers of trusted proxies)
    peer: str  # the TCP peer
    proto: str  # "http" or "https", as seen by the client
    host: str  # the Host the client used (for X-Forwarded-Host), may be ""
    peer_trusted: bool
    request_id: str
    chain: tuple[str, ...] = ()  # addresses a trusted proxy named before itself


@lru_cache(maxsize=4096)  # the same few proxies and clients, request after request
def parse_ip(text: str) -> IPAddress | None:
    """An address from a forwarding header: bare, `[v6]`, `[v6]:port` or `v4:port`."""
    text = text.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return unmap(address)


def unmap(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address in net for net in networks)


def _forwarded_params(values: list[str], key: str) -> list[str]:
    """The `key=` parameters (for=, proto=) of RFC 7239 `Forwarded` lines, in order."""
    found: list[str] = []
    for line in values:
        for element in line.split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.strip().lower() == key:
                    found.append(value.strip())
    return found


# The two headers a proxy may write the client's address in; `trusted_proxy_header` says
# which one the trusted proxies write, and only that one is believed.
X_FORWARDED_FOR = "x-forwarded-for"
FORWARDED = "forwarded"


def _chain(headers: CIMultiDictProxy[str] | CIMultiDict[str], header: str) -> list[str]:
    if header == FORWARDED:
        return _forwarded_params(list(headers.getall("Forwarded", ())), "for")
    chain: list[str] = []
    for line in headers.getall("X-Forwarded-For", ()):
        chain.extend(part.strip() for part in line.split(","))
    return chain


def _addresses(chain: list[str]) -> list[IPAddress] | None:
    found = [parse_ip(part) for part in chain]
    return None if any(a is None for a in found) else [a for a in found if a is not None]


def _right_most_untrusted(addresses: list[IPAddress], trusted: tuple[IPNetwork, ...]) -> str:
    for address in reversed(addresses):
        if not is_trusted(address, trusted):
            return str(address)
    return str(addresses[0])


def plain_peer(peer: str) -> str:
    """The TCP peer as rules name it: a dual-stack listener shows IPv4 clients as
    ::ffff:a.b.c.d, which is a.b.c.d (also in the chain passed on to the CRM)."""
    if peer.startswith("::ffff:"):
        mapped = parse_ip(peer)
        return str(mapped) if mapped is not None else peer
    return peer


def client_ip(
    peer: str,
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    trusted: tuple[IPNetwork, ...],
    header: str = X_FORWARDED_FOR,
) -> tuple[str, bool, tuple[str, ...]]:
    """The client address, whether the TCP peer is a trusted proxy, and the forwarding chain
    believed (the addresses before the peer, passed on to the CRM).

    Forwarding headers are read only when the TCP peer is a trusted proxy, and only the one
    `header` it writes (a proxy that writes `Forwarded` may pass the client's own
    `X-Forwarded-For` through untouched); the client is the right-most address that is not a
    trusted proxy (XF-2). The other header, when present, must name the same client, or the
    request is refused: two answers to "who is this" is one too many. Anything unparsable
    fails closed with BadRequest (authentik CVE-2024-47070 failed open on
    `X-Forwarded-For: a`).
    """
    peer = plain_peer(peer)
    if not trusted:
        return peer, False, ()
    peer_address = parse_ip(peer)
    if peer_address is None or not is_trusted(peer_address, trusted):
        return peer, False, ()
    chain = _chain(headers, header)
    if len(chain) > MAX_FORWARDED_HOPS:
        raise BadRequest("too many forwarding hops", reason="forwarded_header_malformed")
    addresses = _addresses(chain)
    if addresses is None:
        raise BadRequest("malformed forwarding header", reason="forwarded_header_malformed")
    client = _right_most_untrusted([*addresses, peer_address], trusted)
    other = _chain(headers, FORWARDED if header == X_FORWARDED_FOR else X_FORWARDED_FOR)
    if other:
        others = _addresses(other[:MAX_FORWARDED_HOPS])
        if others is None or _right_most_untrusted([*others, peer_address], trusted) != client:
            raise BadRequest(
                "X-Forwarded-For and Forwarded name different clients",
                reason="forwarded_header_conflict",
            )
    return client, True, tuple(str(a) for a in addresses)


def check_header_bytes(headers: CIMultiDictProxy[str]) -> None:
    """BadRequest for a header whose bytes are not UTF-8. aiohttp reads such bytes as lone
    surrogates, every check of ours then compares a name or value that is not the one the
    CRM receives (its writer drops the surrogates: `crm_se\\xffssion` reaches the CRM as
    `crm_session`), so the request is refused before anything reads it."""
    if "".join(headers.values()).isascii() and "".join(headers.keys()).isascii():
        return  # the usual head, checked in two passes of C
    for name, value in headers.items():
        if not (value.isascii() and name.isascii()):
            try:
                name.encode("utf-8")
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("a header that is not UTF-8", reason="header_not_utf8") from None


def request_id(headers: CIMultiDictProxy[str], peer_trusted: bool, fresh: str) -> str:
    """A trusted proxy's X-Request-Id is kept so the logs join up; otherwise ours."""
    if peer_trusted:
        given = headers.get("X-Request-Id", "")
        if _REQUEST_ID.match(given):
            return given
    return fresh


@lru_cache(maxsize=16)
def _dropped(secret_name: str, extra: frozenset[str]) -> frozenset[str]:
    """Request headers never relayed: one set per configuration, not one per request."""
    secret = frozenset({secret_name}) if secret_name else frozenset()
    return HOP_BY_HOP | FORWARDING | PATH_OVERRIDES | _REQUEST_DROP | extra | secret


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    view: ClientView,
    *,
    upstream_host: str,
    host_header: str,
    extra_drop: frozenset[str] = frozenset(),
    secret: tuple[str, str] | None = None,
) -> CIMultiDict[str]:
    """The headers sent to the CRM: client's minus hop-by-hop and spoofable ones, plus ours."""
    drop = _dropped(fold(secret[0]) if secret else "", extra_drop)
    out = incoming.copy()
    for name in request_removals(incoming, drop):
        out.popall(name, None)
    # Content-Length is dropped above and set again by the client from the streamed payload,
    # so the CRM always gets framing the gateway generated itself (SM-2).
    content_length = incoming.get("Content-Length")
    if content_length is not None and "transfer-encoding" not in incoming:
        out["Content-Length"] = content_length
    if host_header == "client" and view.host:
        out["Host"] = view.host
    else:
        out["Host"] = upstream_host
    # The chain believed from the trusted proxy (whichever header it wrote), then its address.
    prior = ", ".join(view.chain) if view.peer_trusted else ""
    out["X-Forwarded-For"] = f"{prior}, {view.peer}" if prior else view.ip
    out["X-Forwarded-Proto"] = view.proto
    if view.host:
        out["X-Forwarded-Host"] = view.host
    out["X-Request-Id"] = view.request_id
    if secret is not None:
        out[secret[0]] = secret[1]
    return out


def forwarded_proto(
    headers: CIMultiDictProxy[str], peer_trusted: bool, own: str, header: str = X_FORWARDED_FOR
) -> str:
    """The scheme the client used, from the trusted proxy's header (`X-Forwarded-Proto`, or
    the last `proto=` of `Forwarded`)."""
    if peer_trusted:
        if header == FORWARDED:
            found = _forwarded_params(list(headers.getall("Forwarded", ())), "proto")
            claimed = found[-1].strip('"').lower() if found else ""
        else:
            claimed = headers.get("X-Forwarded-Proto", "").strip().lower()
        if claimed in ("http", "https"):
            return claimed
    return own


class OriginRewriter:
    """Rewrites absolute URLs and cookie domains that name the CRM into client-facing ones.

    With `public_url` configured, URLs become absolute on it; without, they become relative
    references (`/path?q`), which a browser resolves against the address it is using. The
    request's Host is never used to build an absolute URL (HO-1).
    """

    def __init__(self, upstream_url: str, public_url: str) -> None:
        upstream = urlsplit(upstream_url)
        default_port = 443 if upstream.scheme == "https" else 80
        hostname = upstream.hostname or ""
        shown = f"[{hostname}]" if ":" in hostname else hostname
        port = upstream.port or default_port
        self._origins = (
            f"{upstream.scheme}://{shown}:{port}",
            *((f"{upstream.scheme}://{shown}",) if port == default_port else ()),
        )
        self._upstream_hostname = hostname
        self._public = public_url.rstrip("/")
        self._public_hostname = urlsplit(public_url).hostname or "" if public_url else ""

    def url(self, value: str) -> str:
        lowered = value[:256].lower()
        for origin in self._origins:
            if lowered.startswith(origin):
                rest = value[len(origin) :]
                if rest == "" or rest[0] in "/?#":
                    path = rest if rest.startswith("/") else "/" + rest
                    return self._public + path
        return value

    def refresh(self, value: str) -> str:
        """`Refresh: 5; url=http://crm.internal/x`."""
        delay, sep, rest = value.partition(";")
        if not sep:
            return value
        key, eq, target = rest.strip().partition("=")
        target = target.strip()
        if not eq or key.strip().lower() != "url":
            return value
        quote = target[:1] if target[:1] in "'\"" else ""
        inner = target.strip(quote) if quote else target
        return f"{delay}; url={quote}{self.url(inner)}{quote}"

    def set_cookie(self, value: str) -> str:
        """Drop or rewrite a `Domain=` attribute that names the CRM's host."""
        parts = value.split(";")
        changed = False
        for index in range(1, len(parts)):
            name, eq, domain = parts[index].partition("=")
            names_upstream = domain.strip().lstrip(".").lower() == self._upstream_hostname
            if eq and name.strip().lower() == "domain" and names_upstream:
                public = self._public_hostname
                parts[index] = f" Domain={public}" if public else ""
                changed = True
        if not changed:
            return value
        return ";".join(p for p in parts if p != "")


REWRITTEN_URL_HEADERS = frozenset({"location", "content-location"})
_REWRITTEN = REWRITTEN_URL_HEADERS | {"set-cookie", "refresh"}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length"}


def downstream_response_headers(
    incoming: CIMultiDictProxy[str], rewriter: OriginRewriter
) -> CIMultiDict[str]:
    """The CRM's response headers as the client gets them: no hop-by-hop, origins rewritten.

    Content-Length is left out: the server sets framing from what it streams (SM-3).
    """
    out = incoming.copy()
    removed, kept = response_plan(incoming, _RESPONSE_DROP)
    for name in removed:
        out.popall(name, None)
    if not kept & _REWRITTEN:
        return out
    rewritten: CIMultiDict[str] = CIMultiDict()
    for name, value in out.items():
        folded = name.lower()
        if folded in REWRITTEN_URL_HEADERS:
            value = rewriter.url(value)
        elif folded == "set-cookie":
            value = rewriter.set_cookie(value)
        elif folded == "refresh":
            value = rewriter.refresh(value)
        rewritten.add(name, value)
    return rewritten


def wants_html(headers: CIMultiDictProxy[str]) -> bool:
    """Browsers get pages; API clients and anything that did not ask for HTML get JSON."""
    return "text/html" in headers.get("Accept", "")


def is_navigation(headers: CIMultiDictProxy[str]) -> bool:
    """A browser loading a page (a link, a form, the address bar), as opposed to a script of
    the page (fetch, XMLHttpRequest), which cannot follow a redirect to a page of ours: it
    gets JSON. Modern browsers say which (`Sec-Fetch-Mode`); older ones are read from
    `X-Requested-With` and whether they asked for HTML."""
    mode = headers.get("Sec-Fetch-Mode", "")
    if mode:
        return mode == "navigate"
    if headers.get("X-Requested-With", ""):
        return False
    return wants_html(headers)
