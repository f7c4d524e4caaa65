"""What the access log and the metrics say of requests that do not end as a plain answer: a
CRM answer cut mid-body (the status the client got, decision upstream_cut, not the 499 of a
client that left), a CRM answer whose head may not be sent on (the 502 the client got), and heads refused below the app by the parser (400, 414, 431, 505: one
line and one count each, decision refused, never the client's line). Real gateway, real
upstream, both on loopback."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from gateway.config.load import parse_config
from gateway.web.app import build_app
from gateway.web.keys import ACCESS_LOG
from tests.conftest import Served, send_raw, serve
from tests.upstreams import EVENTS

ACCESS = re.compile(
    r"INFO gateway\.access: (?P<rid>[0-9a-f]{16}) (?P<ip>\S+) (?P<method>\S+) (?P<path>\S+) "
    r"(?P<status>\d{3}) \d+\.\dms user=(?P<user>\S+) decision=(?P<decision>\S+)$"
)


def _count(decision: str) -> float:
    value = REGISTRY.get_sample_value("crm_gateway_requests_total", {"decision": decision})
    return value or 0.0


@pytest.fixture
async def gateway_logging(
    upstream: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Served]:
    """The gateway with its access log on (logging.level: info), in front of the upstream
    with faults."""
    served = await _logging_gateway(upstream.url, tmp_path, caplog)
    yield served
    await served.runner.cleanup()


async def _logging_gateway(
    upstream_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Served:
    caplog.set_level(logging.INFO, logger="gateway.access")
    caplog.set_level(logging.INFO, logger="gateway.protocol")
    config = parse_config(
        "listen: 127.0.0.1:0\n"
        f"upstream: {{url: {upstream_url}}}\n"
        f"state: {{durable: {{type: sqlite, path: {tmp_path}/gateway.db}}}}\n"
        "logging: {access_log: true}\n",
        "test gateway.yaml",
    )
    return await serve(build_app(config), handler_cancellation=True)


async def _lines(
    gw: Served, capsys: pytest.CaptureFixture[str], wanted: int
) -> list[re.Match[str]]:
    """The access-log lines written so far, once `wanted` of them are (the scope records a
    line just after the response is out: a few turns of the loop at most)."""
    written: list[str] = []
    for _ in range(100):
        gw.app[ACCESS_LOG].flush()
        written += capsys.readouterr().err.splitlines()
        found = [m for m in map(ACCESS.search, written) if m]
        if len(found) >= wanted:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{wanted} access-log lines were not written: {written}")


@pytest.mark.parametrize("chunked", ["0", "1"])
async def test_a_crm_answer_cut_mid_body_is_logged_with_its_status_not_as_a_client_that_left(
    gateway_logging: Served,
    upstream: Served,
    capsys: pytest.CaptureFixture[str],
    chunked: str,
) -> None:
    gw = gateway_logging
    capsys.readouterr()
    cut_before, forward_before = _count("upstream_cut"), _count("forward")

    # The CRM sends its headers (200) and 16 KiB, then closes: the client's connection is cut.
    raw = await send_raw(
        gw.port, f"GET /reset-mid-body?chunked={chunked} HTTP/1.1\r\nHost: gw\r\n\r\n".encode()
    )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    [cut] = await _lines(gw, capsys, 1)
    assert (cut["method"], cut["path"], cut["status"], cut["decision"]) == (
        "GET",
        "/reset-mid-body",
        "200",
        "upstream_cut",
    )
    assert cut["rid"].encode() in raw  # the X-Request-Id the client got
    assert _count("upstream_cut") == cut_before + 1
    assert _count("forward") == forward_before

    # A client that leaves mid-download is still 499, decision forward.
    async with aiohttp.ClientSession() as http, http.get(f"{gw.url}/slow-body") as response:
        await response.content.read(65536)
    for _ in range(100):  # the CRM sees the abort once the gateway has let go
        if upstream.app[EVENTS]:
            break
        await asyncio.sleep(0.05)
    assert upstream.app[EVENTS] == ["download-aborted"]
    [left] = await _lines(gw, capsys, 1)
    assert (left["path"], left["status"], left["decision"]) == ("/slow-body", "499", "forward")
    assert _count("upstream_cut") == cut_before + 1
    assert _count("forward") == forward_before + 1


HEADS = {
    # name: (what the client sends, with a secret where a token could be; the status)
    "malformed-header": (b"GET /x?token=s3cret HTTP/1.1\r\nHost: gw\r\nX-A: a\x00b\r\n\r\n", "400"),
    "unknown-method": (b"get /x?token=s3cret HTTP/1.1\r\nHost: gw\r\n\r\n", "400"),
    "long-target": (b"GET /s3cret" + b"a" * 9_000 + b" HTTP/1.1\r\nHost: gw\r\n\r\n", "414"),
    "large-header": (
        b"GET /x HTTP/1.1\r\nHost: gw\r\nCookie: s3cret" + b"a" * 17_000 + b"\r\n\r\n",
        "431",
    ),
}


async def test_heads_the_parser_refuses_are_each_one_line_and_one_count_without_their_line(
    gateway_logging: Served,
    upstream: Served,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = gateway_logging
    capsys.readouterr()
    refused_before = _count("refused")
    answers = {}
    for name, (raw, _) in HEADS.items():
        answers[name] = await send_raw(gw.port, raw)
    # Not to the parser: a version we do not speak, answered before the app (505).
    answers["http-2.0"] = await send_raw(
        gw.port, b"POST /v2/page?token=s3cret HTTP/2.0\r\nHost: gw\r\nContent-Length: 0\r\n\r\n"
    )
    expected = {name: status for name, (_, status) in HEADS.items()} | {"http-2.0": "505"}
    lines = await _lines(gw, capsys, len(expected))
    assert len(lines) == len(expected)
    assert _count("refused") == refused_before + len(expected)
    for (name, status), line in zip(expected.items(), lines, strict=True):
        assert answers[name].split(b" ", 2)[1].decode() == status, name
        assert (line["status"], line["ip"], line["user"], line["decision"]) == (
            status,
            "127.0.0.1",
            "-",
            "refused",
        ), name
        if name == "http-2.0":  # the head was read: its method and path, not its query
            assert (line["method"], line["path"]) == ("POST", "/v2/page")
        else:  # the head was not: neither is known
            assert (line["method"], line["path"]) == ("-", "-"), name
        # A fresh id, the one the client got and the protocol log line names.
        assert f"X-Request-Id: {line['rid']}".encode() in answers[name], name
    assert len({line["rid"] for line in lines}) == len(lines)
    protocol = [r.getMessage() for r in caplog.records if r.name == "gateway.protocol"]
    assert len(protocol) == len(expected)
    assert all(line["rid"] in text for line, text in zip(lines, protocol, strict=True))
    written = "\n".join(m.string for m in lines) + "\n".join(protocol)
    assert "s3cret" not in written and "aaaaaaaaaa" not in written
    assert upstream.app[EVENTS] == []


@pytest.mark.parametrize("body", [b"x", b"x" * 70_000], ids=["relayed", "streamed"])
async def test_a_crm_head_that_may_not_be_sent_on_is_logged_as_the_502_the_client_got(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    body: bytes,
) -> None:
    """A control character in a CRM header: the client gets a 502 (gateway.web.proxy), and
    the access log and the metrics say so, not the CRM's 200."""

    async def crm(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: %d\r\n\r\n" % len(body))
        writer.write(body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(crm, "127.0.0.1", 0)
    gw = await _logging_gateway(
        f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", tmp_path, caplog
    )
    try:
        capsys.readouterr()
        errors_before, forward_before = _count("error"), _count("forward")
        raw = await send_raw(gw.port, b"GET /p HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 502 ")
        [line] = await _lines(gw, capsys, 1)
        assert (line["path"], line["status"], line["decision"]) == ("/p", "502", "error")
        assert line["rid"].encode() in raw
        assert (_count("error"), _count("forward")) == (errors_before + 1, forward_before)
    finally:
        await gw.runner.cleanup()
        server.close()
        await server.wait_closed()
