"""What crosses the proxy: client address, headers sent on, headers returned, URLs rewritten."""

from __future__ import annotations

import ipaddress

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import BadRequest
from gateway.web.forwarding import (
    ClientView,
    OriginRewriter,
    client_ip,
    downstream_response_headers,
    forwarded_proto,
    request_id,
    upstream_request_headers,
    wants_html,
)

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
PROXY = "10.0.0.1"  # a trusted proxy in front of the gateway
CLIENT = "198.51.100.7"
UPSTREAM_HOST = "127.0.0.1:8081"


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def view(**changes: object) -> ClientView:
    fields: dict[str, object] = {
        "ip": CLIENT,
        "peer": CLIENT,
        "proto": "https",
        "host": "crm.example.com",
        "peer_trusted": False,
        "request_id": "req-1",
    }
    fields.update(changes)
    return ClientView(**fields)  # type: ignore[arg-type]


def to_upstream(
    incoming: CIMultiDictProxy[str],
    client: ClientView | None = None,
    *,
    host_header: str = "client",
    extra_drop: frozenset[str] = frozenset(),
    secret: tuple[str, str] | None = None,
) -> CIMultiDict[str]:
    return upstream_request_headers(
        incoming,
        client or view(),
        upstream_host=UPSTREAM_HOST,
        host_header=host_header,
        extra_drop=extra_drop,
        secret=secret,
    )


# -- client_ip -----------------------------------------------------------------------------


def test_without_trusted_proxies_the_peer_is_the_client_and_headers_are_ignored() -> None:
    spoofed = headers(("X-Forwarded-For", "10.1.2.3"), ("Forwarded", "for=10.1.2.3"))

    assert client_ip(CLIENT, spoofed, ())[:2] == (CLIENT, False)


def test_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    spoofed = headers(("X-Forwarded-For", "10.1.2.3"), ("Forwarded", "for=10.1.2.3"))

    assert client_ip(CLIENT, spoofed, TRUSTED)[:2] == (CLIENT, False)


def test_untrusted_peer_with_malformed_forwarding_header_is_not_an_error() -> None:
    assert client_ip(CLIENT, headers(("X-Forwarded-For", "a")), TRUSTED)[:2] == (CLIENT, False)


def test_trusted_peer_without_forwarding_headers_is_the_client() -> None:
    assert client_ip(PROXY, headers(), TRUSTED)[:2] == (PROXY, True)


def test_trusted_peer_gives_the_right_most_untrusted_forwarded_address() -> None:
    # XF-2: the trusted proxy appended the real peer; the left entry is the client's claim.
    incoming = headers(("X-Forwarded-For", "10.1.2.3, 198.51.100.7"))

    assert client_ip(PROXY, incoming, TRUSTED)[:2] == ("198.51.100.7", True)


def test_trusted_hops_at_the_right_of_the_chain_are_skipped() -> None:
    incoming = headers(("X-Forwarded-For", "203.0.113.9, 198.51.100.7, 10.0.0.2, 10.0.0.3"))

    assert client_ip(PROXY, incoming, TRUSTED)[:2] == ("198.51.100.7", True)


def test_forwarded_for_chain_spans_multiple_header_lines() -> None:
    incoming = headers(
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-For", "198.51.100.7, 10.0.0.2"),
    )

    assert client_ip(PROXY, incoming, TRUSTED)[:2] == ("198.51.100.7", True)


def test_when_every_hop_is_trusted_the_left_most_is_the_client() -> None:
    incoming = headers(("X-Forwarded-For", "10.0.0.3, 10.0.0.2"))

    assert client_ip(PROXY, incoming, TRUSTED)[:2] == ("10.0.0.3", True)


def test_address_with_a_port_in_x_forwarded_for_is_read_without_it() -> None:
    incoming = headers(("X-Forwarded-For", "198.51.100.7:4711"))

    assert client_ip(PROXY, incoming, TRUSTED)[:2] == ("198.51.100.7", True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
        ("For=192.0.2.60", "192.0.2.60"),
        ('for="192.0.2.60:8080"', "192.0.2.60"),
        ('for="[2001:db8::1]:443"', "2001:db8::1"),
        ('for="[2001:db8::1]"', "2001:db8::1"),
        ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
        ("for=198.51.100.17, for=10.0.0.2", "198.51.100.17"),
        ("proto=https;for=192.0.2.60", "192.0.2.60"),
    ],
)
def test_forwarded_for_is_read_from_a_proxy_that_writes_forwarded(
    value: str, expected: str
) -> None:
    found = client_ip(PROXY, headers(("Forwarded", value)), TRUSTED, "forwarded")
    assert found[:2] == (expected, True)


def test_a_proxy_that_writes_one_header_is_not_believed_by_the_other() -> None:
    """The header the proxy does not write is the client's own, passed through: a client
    behind a proxy that writes only `Forwarded` chose its own `X-Forwarded-For`."""
    incoming = headers(("Forwarded", "for=192.0.2.60"))
    with pytest.raises(BadRequest):  # and names another client than the peer: refused
        client_ip(PROXY, incoming, TRUSTED)
    incoming = headers(("X-Forwarded-For", "192.0.2.60"), ("Forwarded", "for=198.51.100.7"))
    with pytest.raises(BadRequest):
        client_ip(PROXY, incoming, TRUSTED, "forwarded")


@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded"])
def test_headers_naming_two_clients_are_refused(header: str) -> None:
    incoming = headers(("Forwarded", "for=192.0.2.60"), ("X-Forwarded-For", "198.51.100.7"))
    with pytest.raises(BadRequest) as refused:
        client_ip(PROXY, incoming, TRUSTED, header)
    assert refused.value.reason == "forwarded_header_conflict"


@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded"])
def test_headers_naming_the_same_client_are_fine(header: str) -> None:
    incoming = headers(
        ("Forwarded", 'for="198.51.100.7:5000";proto=https'), ("X-Forwarded-For", "198.51.100.7")
    )
    assert client_ip(PROXY, incoming, TRUSTED, header) == ("198.51.100.7", True, ("198.51.100.7",))


def test_forwarded_without_for_leaves_the_trusted_peer_as_the_client() -> None:
    found = client_ip(PROXY, headers(("Forwarded", "proto=https")), TRUSTED, "forwarded")
    assert found[:2] == (PROXY, True)


def test_the_scheme_comes_from_the_header_the_proxy_writes() -> None:
    incoming = headers(("Forwarded", "for=198.51.100.7;proto=https"), ("X-Forwarded-Proto", "http"))
    assert forwarded_proto(incoming, True, "http", "forwarded") == "https"
    assert forwarded_proto(incoming, True, "https", "x-forwarded-for") == "http"


@pytest.mark.parametrize(
    "value",
    [
        "a",
        "unknown",
        "010.0.0.1",
        "010.001.002.003",
        "0x0a010203",
        "167838211",
        "1.2.3.4, , 5.6.7.8",
        "1.2.3.4,",
        "",
        "[2001:db8::1",
        "198.51.100.7, a",
        "1.2.3.4.5",
    ],
)
def test_malformed_x_forwarded_for_from_a_trusted_peer_fails_closed(value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        client_ip(PROXY, headers(("X-Forwarded-For", value)), TRUSTED)

    assert caught.value.reason == "forwarded_header_malformed"
    assert caught.value.status == 400


@pytest.mark.parametrize("value", ["for=a", "for=unknown", "for=_hidden", "for=", 'for="[::1"'])
def test_malformed_forwarded_from_a_trusted_peer_fails_closed(value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        client_ip(PROXY, headers(("Forwarded", value)), TRUSTED, "forwarded")

    assert caught.value.reason == "forwarded_header_malformed"


def test_thirty_two_forwarding_hops_are_accepted() -> None:
    chain = ", ".join(f"198.51.100.{i}" for i in range(32))

    assert client_ip(PROXY, headers(("X-Forwarded-For", chain)), TRUSTED)[:2] == (
        "198.51.100.31",
        True,
    )


def test_more_than_thirty_two_forwarding_hops_fail_closed() -> None:
    chain = ", ".join(f"198.51.100.{i}" for i in range(33))

    with pytest.raises(BadRequest) as caught:
        client_ip(PROXY, headers(("X-Forwarded-For", chain)), TRUSTED)

    assert caught.value.reason == "forwarded_header_malformed"


def test_hop_limit_counts_every_header_line_together() -> None:
    line = ", ".join(f"198.51.100.{i}" for i in range(17))

    with pytest.raises(BadRequest) as caught:
        client_ip(PROXY, headers(("X-Forwarded-For", line), ("X-Forwarded-For", line)), TRUSTED)

    assert caught.value.reason == "forwarded_header_malformed"


def test_hop_limit_applies_to_forwarded_too() -> None:
    line = ", ".join(f"for=198.51.100.{i}" for i in range(33))

    with pytest.raises(BadRequest):
        client_ip(PROXY, headers(("Forwarded", line)), TRUSTED, "forwarded")


def test_ipv6_trusted_peer_reads_the_forwarded_address() -> None:
    incoming = headers(("X-Forwarded-For", "2001:db8::5"))

    assert client_ip("fd00::1", incoming, TRUSTED)[:2] == ("2001:db8::5", True)


def test_ipv6_forwarded_address_with_brackets_and_port() -> None:
    incoming = headers(("X-Forwarded-For", "[2001:db8::5]:4711"))

    assert client_ip("fd00::1", incoming, TRUSTED)[:2] == ("2001:db8::5", True)


def test_ipv6_untrusted_peer_is_the_client() -> None:
    incoming = headers(("X-Forwarded-For", "10.1.2.3"))

    assert client_ip("2001:db8::7", incoming, TRUSTED)[:2] == ("2001:db8::7", False)


def test_ipv4_mapped_peer_is_matched_against_ipv4_trusted_networks() -> None:
    incoming = headers(("X-Forwarded-For", CLIENT))

    assert client_ip("::ffff:10.0.0.1", incoming, TRUSTED)[:2] == (CLIENT, True)


def test_ipv4_mapped_forwarded_address_is_reported_as_ipv4() -> None:
    incoming = headers(("X-Forwarded-For", "::ffff:198.51.100.7"))

    assert client_ip(PROXY, incoming, TRUSTED)[:2] == ("198.51.100.7", True)


def test_ipv4_mapped_trusted_hop_is_skipped_as_trusted() -> None:
    incoming = headers(("X-Forwarded-For", "198.51.100.7, ::ffff:10.0.0.9"))

    assert client_ip(PROXY, incoming, TRUSTED)[:2] == ("198.51.100.7", True)


def test_trusted_ipv4_mapped_peer_without_headers_is_reported_as_ipv4() -> None:
    assert client_ip("::ffff:10.0.0.1", headers(), TRUSTED)[:2] == ("10.0.0.1", True)


@pytest.mark.parametrize("trusted", [(), TRUSTED], ids=["no-trusted-proxies", "untrusted-peer"])
def test_ipv4_mapped_untrusted_peer_is_reported_as_ipv4(
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> None:
    assert client_ip("::ffff:198.51.100.7", headers(), trusted)[:2] == ("198.51.100.7", False)


# -- request_id and forwarded_proto ---------------------------------------------------------


def test_request_id_of_a_trusted_proxy_is_kept() -> None:
    assert request_id(headers(("X-Request-Id", "abc-123.x_y")), True, "fresh") == "abc-123.x_y"


@pytest.mark.parametrize("given", ["", "has space", "a" * 65, "id\r\nX-Evil: 1", "ü"])
def test_unsafe_request_id_of_a_trusted_proxy_is_replaced(given: str) -> None:
    assert request_id(headers(("X-Request-Id", given)), True, "fresh") == "fresh"


def test_request_id_of_an_untrusted_client_is_replaced() -> None:
    assert request_id(headers(("X-Request-Id", "abc")), False, "fresh") == "fresh"


@pytest.mark.parametrize(
    ("claimed", "trusted", "expected"),
    [
        ("https", True, "https"),
        (" HTTPS ", True, "https"),
        ("http", True, "http"),
        ("https", False, "http"),
        ("gopher", True, "http"),
        ("", True, "http"),
    ],
)
def test_forwarded_proto_is_believed_only_from_a_trusted_peer(
    claimed: str, trusted: bool, expected: str
) -> None:
    assert forwarded_proto(headers(("X-Forwarded-Proto", claimed)), trusted, "http") == expected


# -- upstream_request_headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Authorization",
        "Proxy-Authenticate",
        "HTTP2-Settings",
        "Expect",
    ],
)
def test_hop_by_hop_request_header_is_not_forwarded(name: str) -> None:
    out = to_upstream(headers((name, "x"), ("Accept", "text/html")))

    assert name not in out
    assert out["Accept"] == "text/html"


def test_end_to_end_request_headers_are_forwarded_in_order() -> None:
    incoming = headers(
        ("Cookie", "a=1"),
        ("Authorization", "Basic eA=="),
        ("Accept", "text/html"),
        ("Accept", "application/json"),
        ("X-Custom", "kept"),
    )

    out = to_upstream(incoming)

    assert out.getall("Accept") == ["text/html", "application/json"]
    assert out["Cookie"] == "a=1"
    assert out["Authorization"] == "Basic eA=="
    assert out["X-Custom"] == "kept"


def test_headers_named_in_connection_are_not_forwarded() -> None:
    incoming = headers(
        ("Connection", "close, X-Custom"),
        ("Connection", "cookie"),
        ("X-Custom", "1"),
        ("Cookie", "a=1"),
        ("X-Other", "kept"),
    )

    out = to_upstream(incoming)

    assert "X-Custom" not in out
    assert "Cookie" not in out
    assert out["X-Other"] == "kept"


@pytest.mark.parametrize(
    "connection",
    [
        "close, X-Forwarded-For",
        "keep-alive, X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Request-Id",
        "x_forwarded_for, X_Forwarded_Host, x-forwarded-proto, x-request-id",
        "Host",
    ],
)
def test_connection_cannot_remove_headers_the_gateway_adds(connection: str) -> None:
    # Traefik CVE-2024-45410 / Apache CVE-2022-31813 (HH-1).
    out = to_upstream(headers(("Connection", connection)))

    assert out.getall("X-Forwarded-For") == [CLIENT]
    assert out.getall("X-Forwarded-Proto") == ["https"]
    assert out.getall("X-Forwarded-Host") == ["crm.example.com"]
    assert out.getall("X-Request-Id") == ["req-1"]
    assert out.getall("Host") == ["crm.example.com"]


def test_connection_cannot_remove_the_secret_header() -> None:
    out = to_upstream(
        headers(("Connection", "X-Gateway-Secret")), secret=("X-Gateway-Secret", "real")
    )

    assert out.getall("X-Gateway-Secret") == ["real"]


@pytest.mark.parametrize(
    "name",
    [
        "X-Forwarded-For",
        "x-forwarded-for",
        "X_Forwarded_For",
        "x_forwarded_for",
        "X-Forwarded-Proto",
        "X_FORWARDED_PROTO",
        "X-Forwarded-Host",
        "x_forwarded_host",
        "X-Forwarded-Port",
        "X-Forwarded-Prefix",
        "X_Forwarded_Prefix",
        "X-Forwarded-Server",
        "X-Forwarded-Uri",
        "X-Forwarded-Ssl",
        "X-Real-IP",
        "x_real_ip",
        "Forwarded",
        "X-Request-Id",
        "X_Request_ID",
    ],
)
def test_client_supplied_forwarding_header_is_dropped_in_any_spelling(name: str) -> None:
    out = to_upstream(headers((name, "spoofed")))

    assert "spoofed" not in out.values()
    assert out.getall("X-Forwarded-For") == [CLIENT]


def test_host_header_client_passes_the_clients_host() -> None:
    out = to_upstream(headers(("Host", "evil.example")), host_header="client")

    # The view's host is what the client used; the raw Host header is never copied twice.
    assert out.getall("Host") == ["crm.example.com"]
    assert out["X-Forwarded-Host"] == "crm.example.com"


def test_host_header_upstream_sends_the_crms_host_and_x_forwarded_host() -> None:
    out = to_upstream(headers(("Host", "crm.example.com")), host_header="upstream")

    assert out.getall("Host") == [UPSTREAM_HOST]
    assert out.getall("X-Forwarded-Host") == ["crm.example.com"]


def test_without_a_client_host_the_upstream_host_is_sent_and_no_x_forwarded_host() -> None:
    out = to_upstream(headers(), view(host=""), host_header="client")

    assert out.getall("Host") == [UPSTREAM_HOST]
    assert "X-Forwarded-Host" not in out


def test_x_forwarded_for_is_overwritten_for_an_untrusted_peer() -> None:
    out = to_upstream(headers(("X-Forwarded-For", "10.1.2.3")), view(peer_trusted=False))

    assert out.getall("X-Forwarded-For") == [CLIENT]


def test_x_forwarded_for_is_appended_to_for_a_trusted_peer() -> None:
    client = view(ip=CLIENT, peer=PROXY, peer_trusted=True, chain=(CLIENT,))

    out = to_upstream(headers(("X-Forwarded-For", CLIENT)), client)

    assert out.getall("X-Forwarded-For") == [f"{CLIENT}, {PROXY}"]


def test_x_forwarded_for_lines_of_a_trusted_peer_are_joined_then_appended() -> None:
    client = view(ip=CLIENT, peer=PROXY, peer_trusted=True, chain=("203.0.113.9", CLIENT))
    incoming = headers(("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", CLIENT))

    out = to_upstream(incoming, client)

    assert out.getall("X-Forwarded-For") == [f"203.0.113.9, {CLIENT}, {PROXY}"]


def test_trusted_peer_without_a_chain_sends_the_client_address() -> None:
    client = view(ip=CLIENT, peer=PROXY, peer_trusted=True)

    out = to_upstream(headers(("Forwarded", f"for={CLIENT}")), client)

    assert out.getall("X-Forwarded-For") == [CLIENT]
    assert "Forwarded" not in out


def test_the_chain_believed_is_the_chain_sent_whatever_header_carried_it() -> None:
    """A proxy that writes `Forwarded` while passing the client's own `X-Forwarded-For`:
    the CRM gets the chain the gateway believed, not the client's."""
    client = view(ip=CLIENT, peer=PROXY, peer_trusted=True, chain=(CLIENT,))
    incoming = headers(("X-Forwarded-For", "6.6.6.6"), ("Forwarded", f"for={CLIENT}"))

    out = to_upstream(incoming, client)

    assert out.getall("X-Forwarded-For") == [f"{CLIENT}, {PROXY}"]


def test_x_forwarded_proto_and_request_id_come_from_the_view() -> None:
    incoming = headers(("X-Forwarded-Proto", "http"), ("X-Request-Id", "client-chosen"))

    out = to_upstream(incoming, view(proto="https", request_id="ours"))

    assert out.getall("X-Forwarded-Proto") == ["https"]
    assert out.getall("X-Request-Id") == ["ours"]


def test_secret_header_is_forced_whatever_the_client_sent() -> None:
    incoming = headers(
        ("X-Gateway-Secret", "forged"),
        ("x-gateway-secret", "forged-again"),
        ("X_Gateway_Secret", "forged-underscore"),
    )

    out = to_upstream(incoming, secret=("X-Gateway-Secret", "real"))

    assert out.getall("X-Gateway-Secret") == ["real"]
    assert "X_Gateway_Secret" not in out


def test_without_a_secret_a_client_header_of_that_name_is_forwarded() -> None:
    out = to_upstream(headers(("X-Gateway-Secret", "whatever")))

    assert out["X-Gateway-Secret"] == "whatever"


def test_content_length_is_kept_for_a_length_delimited_body() -> None:
    out = to_upstream(headers(("Content-Length", "5")))

    assert out.getall("Content-Length") == ["5"]


def test_content_length_is_dropped_when_transfer_encoding_is_present() -> None:
    out = to_upstream(headers(("Content-Length", "5"), ("Transfer-Encoding", "chunked")))

    assert "Content-Length" not in out
    assert "Transfer-Encoding" not in out


def test_extra_drop_removes_named_headers() -> None:
    out = to_upstream(headers(("Cookie", "a=1"), ("X-Keep", "1")), extra_drop=frozenset({"cookie"}))

    assert "Cookie" not in out
    assert out["X-Keep"] == "1"


# -- downstream_response_headers -------------------------------------------------------------


REWRITER = OriginRewriter("http://127.0.0.1:8081", "")


@pytest.mark.parametrize(
    "name",
    [
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "HTTP2-Settings",
        "Content-Length",
    ],
)
def test_hop_by_hop_and_framing_response_header_is_not_returned(name: str) -> None:
    out = downstream_response_headers(headers((name, "x"), ("Content-Type", "text/html")), REWRITER)

    assert name not in out
    assert out["Content-Type"] == "text/html"


def test_response_headers_named_in_connection_are_not_returned() -> None:
    incoming = headers(
        ("Connection", "keep-alive, X-Internal-Debug"),
        ("X-Internal-Debug", "db=primary"),
        ("Cache-Control", "no-store"),
    )

    out = downstream_response_headers(incoming, REWRITER)

    assert "X-Internal-Debug" not in out
    assert out["Cache-Control"] == "no-store"


def test_location_and_content_location_naming_the_crm_become_relative() -> None:
    incoming = headers(
        ("Location", "http://127.0.0.1:8081/index.php?module=Home"),
        ("Content-Location", "http://127.0.0.1:8081/doc/1"),
    )

    out = downstream_response_headers(incoming, REWRITER)

    assert out["Location"] == "/index.php?module=Home"
    assert out["Content-Location"] == "/doc/1"


def test_location_naming_the_crm_becomes_absolute_on_the_public_url() -> None:
    rewriter = OriginRewriter("http://127.0.0.1:8081", "https://crm.example.com")

    out = downstream_response_headers(
        headers(("Location", "http://127.0.0.1:8081/login")), rewriter
    )

    assert out["Location"] == "https://crm.example.com/login"


def test_location_naming_another_site_is_returned_untouched() -> None:
    out = downstream_response_headers(
        headers(("Location", "https://sso.example.org/auth?x=1")), REWRITER
    )

    assert out["Location"] == "https://sso.example.org/auth?x=1"


def test_refresh_naming_the_crm_is_rewritten() -> None:
    out = downstream_response_headers(
        headers(("Refresh", "5; url=http://127.0.0.1:8081/next")), REWRITER
    )

    assert out["Refresh"] == "5; url=/next"


def test_set_cookie_domains_naming_the_crm_are_dropped_and_others_kept() -> None:
    incoming = headers(
        ("Set-Cookie", "sid=1; Domain=127.0.0.1; Path=/; HttpOnly"),
        ("Set-Cookie", "lang=en; Path=/"),
        ("Set-Cookie", "t=2; Domain=example.org"),
    )

    out = downstream_response_headers(incoming, REWRITER)

    assert out.getall("Set-Cookie") == [
        "sid=1; Path=/; HttpOnly",
        "lang=en; Path=/",
        "t=2; Domain=example.org",
    ]


# -- OriginRewriter ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "value", "expected"),
    [
        ("http://crm.internal", "http://crm.internal/a", "/a"),
        ("http://crm.internal", "http://crm.internal:80/a", "/a"),
        ("http://crm.internal:80", "http://crm.internal/a", "/a"),
        ("http://crm.internal:80", "http://crm.internal:80/a?b=1", "/a?b=1"),
        ("http://crm.internal", "http://crm.internal", "/"),
        ("http://crm.internal", "http://crm.internal?x=1", "/?x=1"),
        ("http://crm.internal", "http://crm.internal#top", "/#top"),
        ("https://crm.internal", "https://crm.internal/a", "/a"),
        ("https://crm.internal", "https://crm.internal:443/a", "/a"),
        ("https://crm.internal:443", "https://crm.internal/a", "/a"),
        ("http://127.0.0.1:8081", "http://127.0.0.1:8081/x", "/x"),
        ("http://127.0.0.1:8081", "HTTP://127.0.0.1:8081/X", "/X"),
        ("http://crm.internal", "HTTP://CRM.Internal/Path?Q=1", "/Path?Q=1"),
        ("http://CRM.internal", "http://crm.internal/a", "/a"),
        ("http://[::1]:8081", "http://[::1]:8081/x", "/x"),
        ("http://[2001:db8::1]", "http://[2001:db8::1]:80/x", "/x"),
        ("http://[2001:DB8::1]", "http://[2001:db8::1]/x", "/x"),
    ],
)
def test_url_naming_the_upstream_origin_becomes_relative(
    upstream: str, value: str, expected: str
) -> None:
    assert OriginRewriter(upstream, "").url(value) == expected


@pytest.mark.parametrize(
    ("upstream", "value"),
    [
        ("http://127.0.0.1:8081", "http://127.0.0.1:80812/x"),
        ("http://127.0.0.1:8081", "http://127.0.0.1:8081.evil.example/x"),
        ("http://127.0.0.1:8081", "http://127.0.0.1/x"),
        ("http://127.0.0.1:8081", "https://127.0.0.1:8081/x"),
        ("http://crm.internal", "http://crm.internal.evil.example/x"),
        ("http://crm.internal", "http://crm.internal:8080/x"),
        ("http://crm.internal", "http://crm.internal@evil.example/x"),
        ("http://crm.internal", "https://crm.internal/x"),
        ("https://crm.internal", "http://crm.internal/x"),
        ("https://crm.internal", "https://crm.internal:8443/x"),
        ("http://crm.internal", "https://other.example/x"),
        ("http://crm.internal", "/relative/path"),
        ("http://crm.internal", "relative"),
        ("http://crm.internal", ""),
        ("http://[::1]:8081", "http://[::1]:80812/x"),
        ("http://[::1]:8081", "http://[::2]:8081/x"),
    ],
)
def test_url_not_naming_the_upstream_origin_is_untouched(upstream: str, value: str) -> None:
    assert OriginRewriter(upstream, "").url(value) == value


@pytest.mark.parametrize(
    ("public", "value", "expected"),
    [
        ("https://crm.example.com", "http://crm.internal/a?b=1", "https://crm.example.com/a?b=1"),
        ("https://crm.example.com/", "http://crm.internal/a", "https://crm.example.com/a"),
        ("https://crm.example.com:8443", "http://crm.internal", "https://crm.example.com:8443/"),
    ],
)
def test_url_naming_the_upstream_becomes_absolute_on_the_public_url(
    public: str, value: str, expected: str
) -> None:
    assert OriginRewriter("http://crm.internal", public).url(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5; url=http://crm.internal/x", "5; url=/x"),
        ("0;URL=http://crm.internal/x", "0; url=/x"),
        ("0; url='http://crm.internal/x'", "0; url='/x'"),
        ('0; url="http://crm.internal/x"', '0; url="/x"'),
        ("5; url=https://other.example/x", "5; url=https://other.example/x"),
        ("5", "5"),
        ("5; foo=http://crm.internal/x", "5; foo=http://crm.internal/x"),
    ],
)
def test_refresh_url_naming_the_crm_is_rewritten(value: str, expected: str) -> None:
    assert OriginRewriter("http://crm.internal", "").refresh(value) == expected


def test_refresh_with_spaces_around_the_equals_sign_is_rewritten() -> None:
    assert (
        OriginRewriter("http://crm.internal", "").refresh("5; url = http://crm.internal/x")
        == "5; url=/x"
    )


@pytest.mark.parametrize(
    ("public", "value", "expected"),
    [
        ("", "sid=1; Domain=crm.internal; Path=/", "sid=1; Path=/"),
        ("", "sid=1; Path=/; domain=.CRM.Internal", "sid=1; Path=/"),
        ("", "sid=1; Domain = crm.internal ; Secure", "sid=1; Secure"),
        (
            "https://crm.example.com:8443",
            "sid=1; Domain=crm.internal; Path=/",
            "sid=1; Domain=crm.example.com; Path=/",
        ),
        ("", "sid=1; Domain=example.org; Path=/", "sid=1; Domain=example.org; Path=/"),
        ("", "sid=1; Domain=sub.crm.internal", "sid=1; Domain=sub.crm.internal"),
        ("", "Domain=crm.internal; Path=/", "Domain=crm.internal; Path=/"),
        ("", "sid=1; Path=/", "sid=1; Path=/"),
    ],
)
def test_set_cookie_domain_naming_the_crm_is_rewritten(
    public: str, value: str, expected: str
) -> None:
    assert OriginRewriter("http://crm.internal", public).set_cookie(value) == expected


# -- wants_html ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("text/html", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_wants_html_only_when_html_is_accepted(accept: str, expected: bool) -> None:
    assert wants_html(headers(("Accept", accept))) is expected


def test_wants_html_is_false_without_accept() -> None:
    assert wants_html(headers()) is False


# -- plans remembered per head -----------------------------------------------------------------


def test_a_remembered_plan_is_never_used_for_a_head_whose_connection_lines_differ() -> None:
    """The same names, and a Connection line naming another header: the plan remembered for
    the first head must not keep the header the second one names."""
    first = headers(("Connection", "keep-alive"), ("X-Debug", "1"), ("Accept", "*/*"))
    second = headers(("Connection", "X-Debug"), ("X-Debug", "1"), ("Accept", "*/*"))

    assert to_upstream(first)["X-Debug"] == "1"
    assert "X-Debug" not in to_upstream(second)
    assert to_upstream(first)["X-Debug"] == "1"  # and the first's plan still holds


def test_remembered_plans_drop_every_spelling_of_a_dropped_name() -> None:
    """Names equal but for case and `_` are dropped alike however often the head is seen."""
    incoming = headers(
        ("x-forwarded-for", "6.6.6.6"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X-FORWARDED-FOR", "6.6.6.6"),
        ("Accept", "*/*"),
    )
    for _ in range(3):
        out = to_upstream(incoming)
        assert out.getall("X-Forwarded-For") == [CLIENT]
        assert "X_Forwarded_For" not in out
        assert out["Accept"] == "*/*"


def test_long_heads_are_planned_every_time_and_not_remembered() -> None:
    """Heads whose names add up past PLANNED_LENGTH get the same answer, but are not kept:
    the plans a worker remembers stay small whatever clients send."""
    from gateway.web import headplans

    before = len(headplans._plans.known)
    long_name = "X-" + "a" * headplans.PLANNED_LENGTH
    incoming = headers((long_name, "1"), ("Connection", long_name), ("Accept", "*/*"))

    out = to_upstream(incoming)

    assert long_name not in out
    assert out["Accept"] == "*/*"
    assert len(headplans._plans.known) == before


def test_response_plans_rewrite_only_heads_that_need_it() -> None:
    plain = headers(("Content-Type", "text/html"), ("Connection", "close"))
    moved = headers(("Location", "http://127.0.0.1:8081/a"), ("Connection", "close"))
    named_away = headers(("Connection", "Location"), ("Location", "http://127.0.0.1:8081/a"))

    for _ in range(2):
        assert list(downstream_response_headers(plain, REWRITER).items()) == [
            ("Content-Type", "text/html")
        ]
        assert downstream_response_headers(moved, REWRITER)["Location"] == "/a"
        assert "Location" not in downstream_response_headers(named_away, REWRITER)


def test_remembered_plans_stay_within_a_few_mb_whatever_heads_clients_send() -> None:
    """The worst heads that are still remembered (as many names and characters as allowed,
    each head new), requests and responses: at most PLANNED plans, about 3 MB; a head with
    one name too many is planned, not remembered."""
    import tracemalloc

    from gateway.web import headplans

    def head(i: int, count: int) -> CIMultiDictProxy[str]:
        size = (headplans.PLANNED_LENGTH - len("Connection") - 1) // count
        names = [f"{i:06d}{n:03d}".ljust(size, "x") for n in range(count)]
        return headers(*[(name, "1") for name in names], ("Connection", "x"))

    most = headplans.PLANNED_NAMES - 2  # with Connection and its one line
    headplans._plans.known.clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(headplans.PLANNED):
            to_upstream(head(i, most))
            downstream_response_headers(head(i, most), REWRITER)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(headplans._plans.known) == headplans.PLANNED
    assert grown < 4_000_000, grown
    oldest = next(iter(headplans._plans.known))
    to_upstream(head(headplans.PLANNED, most + 1))  # one name too many: not kept
    assert next(iter(headplans._plans.known)) == oldest
    to_upstream(head(headplans.PLANNED + 1, most))  # a new one: the oldest goes
    assert oldest not in headplans._plans.known
