"""An https:// CRM: its certificate is verified as aiohttp's client verified it (the system's
CAs, or SSL_CERT_FILE; the host name checked), for requests and WebSocket upgrades alike.
A CA and a certificate for 127.0.0.1 made here with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import GatewayFactory
from tests.upstreams import INFO, build_upstream_app
from tests.web.client.conftest import upstream_errors


def _certificate(
    subject: str, issuer_key: ec.EllipticCurvePrivateKey | None, issuer: x509.Name | None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            False,
        )
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
async def tls_crm(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """The echo upstream over TLS on 127.0.0.1, and the file of the CA that signed it."""
    ca_key, ca = _certificate("test CA", None, None)
    key, leaf = _certificate("crm", ca_key, ca.subject)
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "crm.pem").write_bytes(_pem(leaf))
    (tmp_path / "crm.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "crm.pem", tmp_path / "crm.key")
    app = build_upstream_app()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    app[INFO].update(origin=f"https://127.0.0.1:{port}", hostname="127.0.0.1")
    await web.SockSite(runner, sock, ssl_context=context).start()
    yield port, tmp_path / "ca.pem"
    await runner.cleanup()


async def test_an_https_crm_signed_by_a_trusted_ca_is_proxied(
    tls_crm: tuple[int, Path], start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, ca = tls_crm
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    gw = await start_gateway(f"https://127.0.0.1:{port}")
    async with aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(f"{gw.url}/over-tls?q=1", data=b"secret") as response:
                assert response.status == 200
                seen = await response.json()
                assert (seen["raw_path"], seen["body_bytes"]) == ("/over-tls?q=1", 6)
        async with http.ws_connect(f"{gw.url}/ws") as ws:
            await ws.send_str("hi")
            assert await ws.receive_str(timeout=5) == "echo: hi"


async def test_an_https_crm_whose_certificate_is_not_trusted_is_a_502(
    tls_crm: tuple[int, Path], start_gateway: GatewayFactory
) -> None:
    """Verification is on: a certificate from a CA the machine does not trust is refused,
    for requests and upgrades alike, and counted as a connect failure."""
    port, _ = tls_crm
    before = upstream_errors("connect")
    gw = await start_gateway(f"https://127.0.0.1:{port}")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/x") as response:
            assert response.status == 502
            assert (await response.json())["error"] == "upstream_unavailable"
        async with http.get(
            f"{gw.url}/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade"}
        ) as response:
            assert response.status == 502
    assert upstream_errors("connect") == before + 2
