"""A trusted proxy's forwarding headers: only the one it writes is believed (issue #12,
item 5). A proxy that writes `Forwarded: for=…` while passing the client's own
`X-Forwarded-For` used to let the client choose its address. Real gateway, real echo CRM,
an address rule that only the office passes; the test client stands in for the proxy.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from gateway.config.load import parse_config
from tests.conftest import GatewayFactory, Served

POLICY = """
networks:
  office: [10.0.0.0/8]
organisation:
  networks: [office]
paths:
  - {path: /**, allow: [anyone]}
"""

OFFICE, OUTSIDE = "10.0.0.5", "203.0.113.9"


async def gateway(
    upstream: Served, start_gateway: GatewayFactory, tmp_path: Path, header: str
) -> Served:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "policy.yaml").write_text(POLICY)
    extra = f"policies: {folder}\ntrusted_proxies: [127.0.0.1/32]\n"
    if header:
        extra += f"trusted_proxy_header: {header}\n"
    return await start_gateway(upstream.url, extra)


async def get(gw: Served, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gw.url}/contacts", headers=headers) as r,
    ):
        return r.status, json.loads(await r.text())


async def test_a_proxy_writing_forwarded_is_believed_by_forwarded_only(
    upstream: Served, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await gateway(upstream, start_gateway, tmp_path, "Forwarded")
    status, seen = await get(gw, {"Forwarded": f"for={OFFICE};proto=https"})
    assert status == 200
    assert ["X-Forwarded-For", f"{OFFICE}, 127.0.0.1"] in seen["headers"]  # type: ignore[operator]
    assert ["X-Forwarded-Proto", "https"] in seen["headers"]  # type: ignore[operator]
    # The client's own X-Forwarded-For, passed through untouched by that proxy:
    status, body = await get(gw, {"Forwarded": f"for={OUTSIDE}", "X-Forwarded-For": OFFICE})
    assert (status, body["error"]) == (400, "forwarded_header_conflict")
    status, body = await get(gw, {"Forwarded": f"for={OUTSIDE}"})
    assert (status, body["error"]) == (403, "ip_not_allowed")


@pytest.mark.parametrize("header", ["", "X-Forwarded-For"])
async def test_a_proxy_writing_x_forwarded_for_is_believed_by_it_only(
    upstream: Served, start_gateway: GatewayFactory, tmp_path: Path, header: str
) -> None:
    gw = await gateway(upstream, start_gateway, tmp_path, header)
    assert (await get(gw, {"X-Forwarded-For": OFFICE}))[0] == 200
    status, body = await get(gw, {"X-Forwarded-For": OUTSIDE, "Forwarded": f"for={OFFICE}"})
    assert (status, body["error"]) == (400, "forwarded_header_conflict")
    status, body = await get(gw, {"Forwarded": f"for={OFFICE}"})  # not what it writes
    assert status == 400


@pytest.mark.parametrize("everything", ["0.0.0.0/0", "::/0"])
def test_trusting_every_address_as_a_proxy_is_warned_about(everything: str) -> None:
    config = parse_config(
        f"listen: 127.0.0.1:8080\nupstream: {{url: http://127.0.0.1:9}}\n"
        f"trusted_proxies: [192.0.2.1/32, '{everything}']\n"
    )
    (warning,) = [w for w in config.warnings if w.path == "trusted_proxies"]
    assert warning.line == 3
    assert "any client can then choose its own address" in warning.message


def test_the_proxy_header_is_one_of_two() -> None:
    with pytest.raises(Exception, match="trusted_proxy_header: must be one of X-Forwarded-For"):
        parse_config(
            "listen: 127.0.0.1:8080\nupstream: {url: http://127.0.0.1:9}\n"
            "trusted_proxy_header: X-Real-IP\n"
        )
