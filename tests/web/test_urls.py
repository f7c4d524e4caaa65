"""The gateway's reserved prefix is recognised however a client spells it (PN-2)."""

from __future__ import annotations

import pytest

from gateway.web.urls import reserved_subpath

PREFIX = "/_gateway/"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/_gateway/healthz", "healthz"),
        ("/_GATEWAY/healthz", "healthz"),
        ("/_Gateway/healthz", "healthz"),
        ("/%5fgateway/healthz", "healthz"),
        ("/%5Fgateway/healthz", "healthz"),
        ("/%5f%67ateway/healthz", "healthz"),
        ("//_gateway/healthz", "healthz"),
        ("///_gateway//healthz", "healthz"),
        ("/x/../_gateway/healthz", "healthz"),
        ("/x/%2e%2e/_gateway/healthz", "healthz"),
        ("/../_gateway/healthz", "healthz"),
        ("/./_gateway/./healthz", "healthz"),
        ("/_gateway/../_gateway/healthz", "healthz"),
        ("/_gateway%2fhealthz", "healthz"),
        ("/_gateway\\healthz", "healthz"),
        ("/_gateway%5chealthz", "healthz"),
        ("\\_gateway\\healthz", "healthz"),
        ("/_gateway/healthz?x=1", "healthz"),
        ("/_gateway/healthz?next=/contacts", "healthz"),
        ("/_gateway/healthz#frag", "healthz"),
        ("/_gateway/static/app.css", "static/app.css"),
        ("/_gateway/login/", "login/"),
        ("/_gateway", ""),
        ("/_gateway/", ""),
        ("/_GATEWAY", ""),
        ("/_gateway?x=1", ""),
        ("//_gateway//", ""),
    ],
)
def test_reserved_prefix_is_recognised_however_spelled(raw: str, expected: str) -> None:
    assert reserved_subpath(raw, PREFIX) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "/",
        "/contacts",
        "/index.php?module=Contacts",
        "/api/_gateway_x",
        "/api/_gateway/healthz",
        "/_gatewayx/",
        "/_gatewayx",
        "/_gateway_/healthz",
        "/x_gateway/healthz",
        "/contacts?next=/_gateway/healthz",
        "/contacts#/_gateway/healthz",
        "/_gateway/../contacts",
        "/%5fgatewayx/",
        "/files/a%20b",
        "/a\\b",
    ],
)
def test_ordinary_crm_path_is_not_reserved(raw: str) -> None:
    assert reserved_subpath(raw, PREFIX) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/.gw/healthz", "healthz"),
        ("/.GW/healthz", "healthz"),
        ("/%2egw/healthz", "healthz"),
        ("//.gw/healthz", "healthz"),
        ("/x/../.gw/healthz", "healthz"),
        ("/.gw", ""),
        ("/.gw/", ""),
        ("/.gw\\login", "login"),
    ],
)
def test_custom_prefix_is_recognised_however_spelled(raw: str, expected: str) -> None:
    assert reserved_subpath(raw, "/.gw/") == expected


@pytest.mark.parametrize("raw", ["/_gateway/healthz", "/.gwx/healthz", "/x.gw/healthz", "/gw/"])
def test_custom_prefix_does_not_claim_other_paths(raw: str) -> None:
    assert reserved_subpath(raw, "/.gw/") is None


def test_multi_segment_prefix_is_recognised_when_spelled_plainly() -> None:
    assert reserved_subpath("/auth/gw/healthz", "/auth/gw/") == "healthz"
    assert reserved_subpath("/AUTH/%67w/healthz", "/auth/gw/") == "healthz"
    assert reserved_subpath("/auth\\gw\\healthz", "/auth/gw/") == "healthz"


@pytest.mark.parametrize(
    "raw", ["/auth//gw/healthz", "/auth/./gw/healthz", "/auth/x/../gw/healthz"]
)
def test_multi_segment_prefix_is_recognised_however_spelled(raw: str) -> None:
    assert reserved_subpath(raw, "/auth/gw/") == "healthz"
