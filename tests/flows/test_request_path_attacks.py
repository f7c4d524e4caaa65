"""An outsider's attacks on this session's changes to the request path: header plans
remembered per head (gateway.web.headplans, e8b4313, 9935d0d, 6a3e0f6), the header byte
check's fast path, the access-log line and metric recorded after the response (0cf10df,
26bf0a9) and no invented Content-Type without on_response_prepare (bccac8b). Real gateway,
a raw CRM that shows the bytes it received and answers with bytes a test chose, raw sockets
where aiohttp's client would tidy what is sent."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from gateway.config.load import parse_config
from gateway.crypto import hash_password
from gateway.headers import FORWARDING, fold
from gateway.web.accesslog import AccessLog
from gateway.web.app import build_app
from gateway.web.headplans import PLANNED, PLANNED_LENGTH, PLANNED_NAMES
from gateway.web.keys import ACCESS_LOG
from tests.conftest import GatewayFactory, Served, serve
from tests.flows.test_signin_gateway_mode import POLICY
from tests.signin_kit import Browsers, Start
from tests.signin_kit import field as form_field

# -- a CRM that shows the bytes it got -------------------------------------------------------


@dataclass
class RawCrm:
    """Answers each request with the bytes `answers` holds for its path, else 200 with the
    request head it read as the body. `/hold` is never answered: `abandoned` is set once the
    gateway lets go of it; `/drop` closes the connection without a word."""

    answers: dict[str, bytes] = field(default_factory=dict)
    heads: list[bytes] = field(default_factory=list)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    abandoned: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                await _skip_body(reader, head)
                path = head.split(b" ", 2)[1].split(b"?")[0].decode()
                if path == "/hold":
                    self.held.set()
                    await reader.read()  # until the gateway closes it
                    self.abandoned.set()
                    return
                if path == "/drop":
                    return
                answer = self.answers.get(path)
                if answer is None:
                    answer = (
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(head), head)
                    )
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.partition(b"\r\n\r\n")[0].lower().split(b"\r\n"):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _skip_body(reader: asyncio.StreamReader, head: bytes) -> None:
    lowered = head.lower()
    length = re.search(rb"\r\ncontent-length: *(\d+)", lowered)
    if length:
        await reader.readexactly(int(length[1]))
    elif b"\r\ntransfer-encoding: chunked" in lowered:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return


@pytest.fixture
async def crm() -> AsyncIterator[RawCrm]:
    raw = RawCrm()
    server = await asyncio.start_server(raw.serve, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    yield raw
    server.close()
    await server.wait_closed()


# -- a client that sends bytes -----------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx statuses before it

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def crm_saw(self) -> list[tuple[str, str]]:
        """The header lines of the CRM's request (the raw CRM's default answer)."""
        lines = self.body.decode("utf-8", "surrogateescape").split("\r\n")[1:]
        return [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines if line)]


def _parse(raw: bytes, head_request: bool = False) -> Answer:
    interim: list[int] = []
    while raw.startswith(b"HTTP/1.1 1"):
        interim.append(int(raw[9:12]))
        raw = raw.partition(b"\r\n\r\n")[2]
    answer = _final(raw, head_request)
    answer.interim = interim
    return answer


def _final(raw: bytes, head_request: bool) -> Answer:
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    found = {k.lower(): v for k, v in headers}
    if head_request or status in (204, 304):
        return Answer(status, headers, rest)
    if found.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
        return Answer(status, headers, body)
    if "content-length" in found:
        return Answer(status, headers, rest[: int(found["content-length"])])
    return Answer(status, headers, rest)


async def exchange(port: int, request: bytes, *, head_request: bool = False) -> Answer:
    """One request on its own connection, the answer read up to the gateway closing it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return _parse(raw, head_request)


def request(target: str, *lines: str, method: str = "GET") -> bytes:
    head = "".join(f"{line}\r\n" for line in lines)
    return (
        f"{method} {target} HTTP/1.1\r\nHost: gw.test\r\n{head}Connection: close\r\n\r\n".encode()
    )


def folded(seen: list[tuple[str, str]], name: str) -> list[str]:
    """Values of every header the CRM got whose name folds (case, `_`) to `name`."""
    return [v for k, v in seen if fold(k) == name]


def assert_only_ours(answer: Answer, host: str = "gw.test") -> None:
    """What the CRM got of the forwarding headers: the gateway's, once, and nothing else."""
    assert answer.status == 200, answer
    seen = answer.crm_saw()
    assert folded(seen, "x-forwarded-for") == ["127.0.0.1"], seen
    assert folded(seen, "x-forwarded-proto") == ["http"], seen
    assert folded(seen, "x-forwarded-host") == [host], seen
    assert folded(seen, "x-request-id") == answer.all("X-Request-Id"), seen
    ours = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
    for name in FORWARDING - ours:
        assert folded(seen, name) == [], (name, seen)
    assert [k for k, _ in seen if "_" in k] == [], seen


def _title(name: str) -> str:
    return "-".join(p.capitalize() for p in name.split("-"))


def _underscore(name: str) -> str:
    return name.replace("-", "_")


def _mixed(name: str) -> str:
    return name.replace("-", "_", 1).upper()


SPELLINGS: dict[str, Callable[[str], str]] = {
    "as-is": str,
    "upper": str.upper,
    "title": _title,
    "underscore": _underscore,
    "mixed": _mixed,
}


# -- request headers: spoofing through remembered plans ---------------------------------------


@pytest.mark.parametrize("spelling", list(SPELLINGS))
async def test_spoofed_forwarding_headers_never_reach_the_crm_fresh_or_remembered(
    crm: RawCrm, start_gateway: GatewayFactory, spelling: str
) -> None:
    """Every forwarding header in one spelling, X-Forwarded-For twice, in a head small enough
    to be remembered: the first request plans it, the next two use the plan (with other
    values), and the CRM never gets a client's value."""
    gw = await start_gateway(crm.url)
    spell = SPELLINGS[spelling]
    for attempt in range(3):
        lines = [f"{spell(name)}: 6.6.6.{attempt}" for name in sorted(FORWARDING)]
        lines.insert(0, f"{spell('x-forwarded-for')}: 10.0.0.{attempt}")
        lines += [f"{spell('x-request-id')}: chosen-{attempt}", "Accept: */*"]
        answer = await exchange(gw.port, request("/x", *lines))
        assert_only_ours(answer)
        assert folded(answer.crm_saw(), "accept") == ["*/*"]


async def test_every_spelling_of_every_forwarding_header_in_one_head(
    crm: RawCrm, start_gateway: GatewayFactory
) -> None:
    """All spellings at once, twice each (far over PLANNED_NAMES: planned every time), then
    a remembered-size head of the same sort: same answer."""
    gw = await start_gateway(crm.url)
    lines = [
        f"{spell(name)}: 6.6.6.6" for name in sorted(FORWARDING) for spell in SPELLINGS.values()
    ]
    for _ in range(2):
        assert_only_ours(await exchange(gw.port, request("/x", *lines, *lines)))
    assert_only_ours(await exchange(gw.port, request("/x", *lines[:20])))


@pytest.mark.parametrize(
    "connection",
    [
        ["X-Forwarded-For, Host, X-Request-Id"],
        ["X_Forwarded_For", "x-forwarded-host", "X-FORWARDED-PROTO"],
        ["keep-alive", "Host", "keep-alive, X-Request-Id, x_forwarded_proto"],
    ],
)
async def test_connection_naming_the_gateways_headers_takes_none_of_them_away(
    crm: RawCrm, start_gateway: GatewayFactory, connection: list[str]
) -> None:
    """HH-1 with remembered plans: Connection lines (one or several) naming what the gateway
    adds drop the client's copies and never the gateway's, the first time and the next."""
    gw = await start_gateway(crm.url)
    lines = [f"Connection: {line}" for line in connection]
    for _ in range(3):
        answer = await exchange(
            gw.port, request("/x", *lines, "X-Forwarded-For: 6.6.6.6", "X-Request-Id: mine")
        )
        assert_only_ours(answer)
        assert len(folded(answer.crm_saw(), "host")) == 1


async def test_a_plan_is_never_used_for_the_same_names_with_other_connection_lines(
    crm: RawCrm, start_gateway: GatewayFactory
) -> None:
    """Same names in the same order; only what the Connection lines say differs. A plan made
    for the first (X-Debug kept) must not keep X-Debug for the second, nor the reverse."""
    gw = await start_gateway(crm.url)

    def head(first: str, second: str) -> bytes:
        return (
            "GET /x HTTP/1.1\r\nHost: gw.test\r\nX-Debug: internal\r\n"
            f"Connection: {first}\r\nConnection: {second}\r\n\r\n"
        ).encode()

    cases = [
        (("keep-alive", "close"), ["internal"]),
        (("keep-alive", "close, X-Debug"), []),
        (("x_debug", "close"), []),
        (("keep-alive", "close"), ["internal"]),
        (("close", "keep-alive"), ["internal"]),
        (("close", "X-DEBUG"), []),
    ]
    for (first, second), expected in cases * 2:
        answer = await exchange(gw.port, head(first, second))
        assert folded(answer.crm_saw(), "x-debug") == expected, (first, second)


def _head_of(count: int, length: int) -> list[str]:
    """Header lines (after Host) for a head of `count` names and Connection lines together,
    whose names and Connection values add up to `length` characters (headplans' measure);
    a spoof and a header its Connection line names come last."""
    fixed = ["Host", "Connection", "X_Forwarded_For", "X-Hop"]
    connection = "close, X-Hop"
    pads = count - len(fixed) - 1  # the one Connection line counts too
    room = length - sum(map(len, fixed)) - len(connection)
    names = [f"X-P{i:02d}-" for i in range(pads)]
    short = room - sum(map(len, names))
    assert short >= 0
    names = [
        name + "p" * (short // pads + (1 if i < short % pads else 0))
        for i, name in enumerate(names)
    ]
    assert sum(map(len, names)) == room
    return [f"{name}: 1" for name in names] + [
        f"Connection: {connection}",
        "X_Forwarded_For: 6.6.6.6",
        "X-Hop: hop-by-hop",
    ]


@pytest.mark.parametrize(
    ("count", "length"),
    [
        (PLANNED_NAMES, PLANNED_LENGTH),
        (PLANNED_NAMES + 1, PLANNED_LENGTH),
        (PLANNED_NAMES, PLANNED_LENGTH + 1),
        (PLANNED_NAMES - 1, PLANNED_LENGTH - 1),
    ],
)
async def test_heads_at_and_over_the_memo_bounds_drop_alike(
    crm: RawCrm, start_gateway: GatewayFactory, count: int, length: int
) -> None:
    gw = await start_gateway(crm.url)
    lines = _head_of(count, length)
    for _ in range(3):
        head = "GET /x HTTP/1.1\r\nHost: gw.test\r\n" + "".join(f"{x}\r\n" for x in lines)
        answer = await exchange(gw.port, (head + "\r\n").encode())
        assert_only_ours(answer)
        seen = answer.crm_saw()
        assert folded(seen, "x-hop") == []
        assert len([k for k, _ in seen if k.startswith("X-P")]) == count - 5


async def test_an_evicted_plan_is_worked_out_again(
    crm: RawCrm, start_gateway: GatewayFactory, http: aiohttp.ClientSession
) -> None:
    """A plan planted, PLANNED other heads after it (it goes), then its names again with a
    Connection line that names X-Debug: dropped; and the planted head still keeps it."""
    gw = await start_gateway(crm.url)

    def head(connection: str) -> bytes:
        return request("/x", "X-Debug: internal", f"Connection: {connection}")

    assert folded((await exchange(gw.port, head("keep-alive"))).crm_saw(), "x-debug") == [
        "internal"
    ]
    for i in range(PLANNED + 1):
        async with http.get(f"{gw.url}/fill", headers={f"X-Fill-{i}": "1"}) as r:
            assert r.status == 200
    assert folded((await exchange(gw.port, head("X-Debug"))).crm_saw(), "x-debug") == []
    assert folded((await exchange(gw.port, head("keep-alive"))).crm_saw(), "x-debug") == [
        "internal"
    ]


async def test_a_plan_of_a_gateway_without_a_secret_is_not_used_by_one_with_it(
    crm: RawCrm, start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two apps in one process (the memo is per process): the same head, planned first where
    X-Crm-Secret is any header, never lets the client's value through where it is ours."""
    monkeypatch.setenv("SESSION_ATTACK_SECRET", "the-real-one")
    plain = await start_gateway(crm.url)
    guarded = await start_gateway(
        crm.url,
        upstream_extra="secret_header:\n  name: X-Crm-Secret\n  value: {env: SESSION_ATTACK_SECRET}",
    )
    forged = request("/x", "X_Crm_Secret: forged", "X-Crm-Secret: forged")
    plain_seen = (await exchange(plain.port, forged)).crm_saw()
    assert folded(plain_seen, "x-crm-secret") == ["forged", "forged"]
    for _ in range(2):
        seen = (await exchange(guarded.port, forged)).crm_saw()
        assert folded(seen, "x-crm-secret") == ["the-real-one"], seen


# -- the header byte check's fast path ---------------------------------------------------------

PADDING = [f"X-Pad-{i}: {'a' * 20}" for i in range(10)]


@pytest.mark.parametrize(
    "line",
    [
        b"X-Note: caf\xe9",  # Latin-1
        b"X-Note: \xed\xa0\x80",  # a surrogate, encoded
        b"X-Note: \xc3\x28",  # a broken sequence
        b"X-Note: ok\xff",
        b"Cookie: crm_se\xffssion=1",
        b"X-Forwarded-For: 6.6.6.6\xff",
        b"User-Agent: \xf0\x9f\x98",  # cut short
        b"X-Note: \xc0\xaf",  # overlong '/'
    ],
)
async def test_header_values_that_are_not_utf8_are_refused_whatever_surrounds_them(
    crm: RawCrm, start_gateway: GatewayFactory, line: bytes
) -> None:
    gw = await start_gateway(crm.url)
    for before, after in (([], PADDING), (PADDING, []), (PADDING[:5], PADDING[5:])):
        raw = (
            b"GET /x HTTP/1.1\r\nHost: gw.test\r\n"
            + b"".join(x.encode() + b"\r\n" for x in before)
            + line
            + b"\r\n"
            + b"".join(x.encode() + b"\r\n" for x in after)
            + b"Connection: close\r\n\r\n"
        )
        answer = await exchange(gw.port, raw)
        assert answer.status == 400, answer
        assert json.loads(answer.body)["error"] == "header_not_utf8"
    assert crm.heads == []


@pytest.mark.parametrize(
    "line", [b"X-N\xe9: 1", b"X-Forwarded-F\xf6r: 6.6.6.6", b"X-\xc3\xa9t\xc3\xa9: 1"]
)
async def test_header_names_with_bytes_beyond_ascii_are_refused(
    crm: RawCrm, start_gateway: GatewayFactory, line: bytes
) -> None:
    """Latin-1 or UTF-8 in a name: refused before anything reads it (by aiohttp's parser:
    not a token), and never relayed."""
    gw = await start_gateway(crm.url)
    raw = b"GET /x HTTP/1.1\r\nHost: gw.test\r\n" + line + b"\r\nConnection: close\r\n\r\n"
    answer = await exchange(gw.port, raw)
    assert answer.status == 400, answer
    assert crm.heads == []


async def test_utf8_header_values_pass_unchanged(
    crm: RawCrm, start_gateway: GatewayFactory
) -> None:
    gw = await start_gateway(crm.url)
    raw = b"GET /x HTTP/1.1\r\nHost: gw.test\r\nX-Note: caf\xc3\xa9 \xf0\x9f\x98\x80\r\n\r\n"
    answer = await exchange(gw.port, raw[:-2] + b"Connection: close\r\n\r\n")
    assert answer.status == 200
    assert b"\r\nX-Note: caf\xc3\xa9 \xf0\x9f\x98\x80\r\n" in answer.body


# -- response headers: rewriting after a plan was made -----------------------------------------


def _crm_answer(*lines: str, status: str = "200 OK", body: bytes = b"ok") -> bytes:
    head = "".join(f"{line}\r\n" for line in lines)
    return f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def test_crm_urls_and_cookie_domains_are_rewritten_whatever_was_planned_before(
    crm: RawCrm, start_gateway: GatewayFactory
) -> None:
    """A plain answer planned first, then answers naming the CRM in every header that is
    rewritten, in any case, each seen twice (the second from the plan)."""
    gw = await start_gateway(crm.url)
    origin = crm.url
    crm.answers["/plain"] = _crm_answer("Content-Type: text/plain", "X-Other: 1")
    crm.answers["/moved"] = _crm_answer(
        f"LOCATION: {origin}/after?x=1",
        f"content-location: {origin}/content",
        f"ReFresh: 5; url={origin}/refreshed",
        "Set-Cookie: sid=abc; Domain=127.0.0.1; Path=/; HttpOnly",
        "set-cookie: b=2; domain=.127.0.0.1",
        "SET-COOKIE: c=3; Domain=example.org",
        status="302 Found",
    )
    crm.answers["/cookie"] = _crm_answer("Set-Cookie: sid=abc; Domain=127.0.0.1; Path=/")
    for _ in range(2):
        plain = await exchange(gw.port, request("/plain"))
        assert plain.all("X-Other") == ["1"]
        moved = await exchange(gw.port, request("/moved"))
        assert moved.status == 302
        assert moved.all("Location") == ["/after?x=1"]
        assert moved.all("Content-Location") == ["/content"]
        assert moved.all("Refresh") == ["5; url=/refreshed"]
        assert moved.all("Set-Cookie") == [
            "sid=abc; Path=/; HttpOnly",
            "b=2",
            "c=3; Domain=example.org",
        ]
        cookie = await exchange(gw.port, request("/cookie"))
        assert cookie.all("Set-Cookie") == ["sid=abc; Path=/"]


async def test_a_response_plan_is_never_used_for_other_connection_lines(
    crm: RawCrm, start_gateway: GatewayFactory
) -> None:
    gw = await start_gateway(crm.url)
    crm.answers["/kept"] = _crm_answer("Connection: keep-alive", "X-Internal: secret")
    crm.answers["/named"] = _crm_answer("Connection: X_Internal", "X-Internal: secret")
    crm.answers["/location"] = _crm_answer(
        "Connection: Location", f"Location: {crm.url}/x", status="302 Found"
    )
    for _ in range(2):
        assert (await exchange(gw.port, request("/kept"))).all("X-Internal") == ["secret"]
        assert (await exchange(gw.port, request("/named"))).all("X-Internal") == []
        assert (await exchange(gw.port, request("/location"))).all("Location") == []


@pytest.mark.parametrize(
    ("framing", "body"),
    [
        ("Content-Length: 5", b"hello"),
        ("Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n"),
        ("Transfer-Encoding: chunked\r\nConnection: Transfer-Encoding", b"5\r\nhello\r\n0\r\n\r\n"),
        ("Content-Length: 5\r\nContent-Length: 5", b"hello"),
        ("Content-Length: 5\r\nConnection: Content-Length", b"hello"),
    ],
)
async def test_the_crms_framing_is_never_passed_on_as_sent(
    crm: RawCrm, start_gateway: GatewayFactory, framing: str, body: bytes
) -> None:
    """SM-3: the client gets one framing the gateway chose, and the body whole (or a 502)."""
    gw = await start_gateway(crm.url)
    crm.answers["/framed"] = f"HTTP/1.1 200 OK\r\n{framing}\r\n\r\n".encode() + body
    for _ in range(2):
        answer = await exchange(gw.port, request("/framed"))
        lengths, codings = answer.all("Content-Length"), answer.all("Transfer-Encoding")
        assert len(lengths) + len(codings) == 1, answer.headers
        if answer.status == 200:
            assert answer.body == b"hello"
        else:
            assert answer.status == 502, answer


# -- Content-Type: the CRM's, none when it sent none, ours on our pages ------------------------


def _typed_answer(status: str, typed: bool, size: int, chunked: bool) -> bytes:
    lines = ["Content-Type: text/csv; charset=latin-1"] if typed else []
    body = b"x" * size
    if status.startswith(("204", "304")):
        return f"HTTP/1.1 {status}\r\n{''.join(x + chr(13) + chr(10) for x in lines)}\r\n".encode()
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        framed = b"%x\r\n%s\r\n0\r\n\r\n" % (size, body) if size else b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {size}")
        framed = body
    head = "".join(f"{x}\r\n" for x in lines)
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + framed


@pytest.mark.parametrize("typed", [True, False])
@pytest.mark.parametrize(
    ("method", "status", "size", "chunked"),
    [
        ("GET", "200 OK", 5, False),
        ("GET", "200 OK", 0, False),
        ("GET", "200 OK", 200_000, False),
        ("GET", "200 OK", 5, True),
        ("GET", "200 OK", 200_000, True),
        ("GET", "404 Not Found", 5, False),
        ("HEAD", "200 OK", 5, False),
        ("HEAD", "200 OK", 200_000, False),
        ("GET", "204 No Content", 0, False),
        ("GET", "304 Not Modified", 0, False),
    ],
)
async def test_the_crms_content_type_is_kept_and_none_is_invented(
    crm: RawCrm,
    start_gateway: GatewayFactory,
    typed: bool,
    method: str,
    status: str,
    size: int,
    chunked: bool,
) -> None:
    gw = await start_gateway(crm.url)
    crm.answers["/t"] = _typed_answer(status, typed, size, chunked)
    if method == "HEAD":  # the CRM's answer to HEAD: the length, no body
        crm.answers["/t"] = crm.answers["/t"].partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    answer = await exchange(gw.port, request("/t", method=method), head_request=method == "HEAD")
    assert answer.status == int(status[:3])
    expected = ["text/csv; charset=latin-1"] if typed else []
    assert answer.all("Content-Type") == expected, answer.headers
    if method == "GET" and answer.status not in (204, 304):
        assert answer.body == b"x" * size
    else:
        assert answer.body == b""


async def test_the_gateways_own_answers_keep_their_content_type(
    crm: RawCrm, start_gateway: GatewayFactory
) -> None:
    gw = await start_gateway(crm.url)
    refused = await exchange(gw.port, request("http://evil.example/x"))
    assert (refused.status, refused.all("Content-Type")) == (
        400,
        ["application/json; charset=utf-8"],
    )
    page = await exchange(gw.port, request("http://evil.example/x", "Accept: text/html"))
    assert (page.status, page.all("Content-Type")) == (400, ["text/html; charset=utf-8"])
    gone = await exchange(gw.port, request("/drop"))
    assert (gone.status, gone.all("Content-Type")) == (502, ["application/json; charset=utf-8"])
    health = await exchange(gw.port, request("/_gateway/healthz"))
    assert health.status == 200
    assert len(health.all("Content-Type")) == 1
    assert health.all("Content-Type") != ["application/octet-stream"]


# -- the access log and the metric, recorded after the answer ----------------------------------


@dataclass
class Logged:
    """Every access-log line the gateway records (the real AccessLog's record, seen)."""

    access: AccessLog
    lines: list[tuple[object, ...]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def watch(self, monkeypatch: pytest.MonkeyPatch) -> None:
        record = self.access.record

        def seen(*args: object) -> None:
            record(*args)  # type: ignore[arg-type]
            self.lines.append(args)
            self.changed.set()

        monkeypatch.setattr(self.access, "record", seen)

    async def line(self, index: int) -> tuple[object, ...]:
        """The `index`th line recorded, once it is (and no line after it)."""
        while len(self.lines) <= index:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)
        assert len(self.lines) == index + 1, self.lines
        return self.lines[index]


def _requests(decision: str) -> float:
    return REGISTRY.get_sample_value("crm_gateway_requests_total", {"decision": decision}) or 0.0


def _observed(decision: str) -> float:
    name = "crm_gateway_request_duration_seconds_count"
    return REGISTRY.get_sample_value(name, {"decision": decision}) or 0.0


def _buckets(decision: str) -> dict[float, float]:
    """The duration histogram's cumulative buckets of `decision`, by bound."""
    found: dict[float, float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if (
                sample.name == "crm_gateway_request_duration_seconds_bucket"
                and sample.labels.get("decision") == decision
            ):
                found[float(sample.labels["le"])] = sample.value
    return found


@pytest.fixture
async def logged(
    crm: RawCrm,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[Served, Logged, io.StringIO]]:
    caplog.set_level(logging.INFO, logger="gateway.access")
    config = parse_config(
        "listen: 127.0.0.1:0\n"
        f"upstream: {{url: {crm.url}}}\n"
        f"state: {{durable: {{type: sqlite, path: {tmp_path}/gateway.db}}}}\n"
        "logging: {access_log: true}\n",
        "test gateway.yaml",
    )
    served = await serve(build_app(config), handler_cancellation=True)
    access = served.app[ACCESS_LOG]
    out = io.StringIO()
    monkeypatch.setattr(access, "_stream", out)
    seen = Logged(access)
    seen.watch(monkeypatch)
    yield served, seen, out
    await served.runner.cleanup()


TOKEN = "api_token=SECRET-TOKEN-123"


@pytest.mark.parametrize(
    ("raw", "status", "decision"),
    [
        (request(f"/page?{TOKEN}"), 200, "forward"),
        (request(f"http://evil.example/page?{TOKEN}"), 400, "refused"),
        (request(f"/page?{TOKEN}", "X-Note: \xff").replace(b"\xc3\xbf", b"\xff"), 400, "refused"),
        (request(f"/drop?{TOKEN}"), 502, "error"),
        (
            request(
                f"http://evil.example/up?{TOKEN}",
                "Expect: 100-continue",
                "Content-Length: 5",
                method="POST",
            )
            + b"hello",  # sent at once: aiohttp would wait its lingering time for it
            400,
            "refused",
        ),
        (
            request(f"/page?{TOKEN}", "X-Forwarded-For: 6.6.6.6", "Connection: X-Forwarded-For"),
            200,
            "forward",
        ),
    ],
    ids=["forwarded", "absolute-form", "not-utf8", "crm-gone", "continue-refused", "conn-xff"],
)
async def test_every_answer_is_logged_and_counted_once_without_its_query(
    crm: RawCrm,
    logged: tuple[Served, Logged, io.StringIO],
    raw: bytes,
    status: int,
    decision: str,
) -> None:
    gw, seen, out = logged
    before = (_requests(decision), _observed(decision))
    buckets = _buckets(decision)
    answer = await exchange(gw.port, raw)
    assert answer.status == status
    line = await seen.line(0)
    rid, ip, _method, path, logged_status, seconds, user, logged_decision = line
    assert isinstance(seconds, float)
    assert (ip, logged_status, user, logged_decision) == ("127.0.0.1", status, "-", decision)
    assert rid == answer.all("X-Request-Id")[0]
    assert "SECRET" not in str(path)
    assert (_requests(decision), _observed(decision)) == (before[0] + 1, before[1] + 1)
    # 26bf0a9: the bucket bisected is the first whose bound is at least the duration logged
    after = _buckets(decision)
    assert after, decision
    assert {bound: after[bound] - buckets.get(bound, 0.0) for bound in after} == {
        bound: float(seconds <= bound) for bound in after
    }
    seen.access.flush()
    written = out.getvalue()
    assert f" {status} " in written and f"decision={decision}" in written
    assert "SECRET" not in written
    if status == 400:  # refused: the CRM never asked
        assert crm.heads == []


async def test_a_client_that_leaves_mid_request_is_logged_as_499_once(
    crm: RawCrm, logged: tuple[Served, Logged, io.StringIO]
) -> None:
    gw, seen, out = logged
    before = _requests("forward")
    _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(request(f"/hold?{TOKEN}"))
    await asyncio.wait_for(crm.held.wait(), 10)
    writer.transport.abort()
    line = await seen.line(0)
    # 499, and the decision made before the client left: forward (the CRM was asked)
    assert (line[3], line[4], line[6], line[7]) == ("/hold", 499, "-", "forward"), line
    await asyncio.wait_for(crm.abandoned.wait(), 10)  # and the CRM's request was let go
    assert _requests("forward") == before + 1
    seen.access.flush()
    assert " 499 " in out.getvalue()
    assert "SECRET" not in out.getvalue()
    assert len(seen.lines) == 1


async def test_an_expectation_refused_by_aiohttp_is_logged_and_counted(
    crm: RawCrm, logged: tuple[Served, Logged, io.StringIO]
) -> None:
    """`Expect: <anything but 100-continue>` is answered 417 inside the pipeline (it was
    aiohttp's, before the middleware chain): logged and counted like any refusal, and the
    connection closed (the client may still send the body it announced)."""
    gw, seen, _ = logged
    counted = sum(_requests(d) for d in ("refused", "error", "forward", "gone", "page"))
    answer = await exchange(
        gw.port,
        request(f"/up?{TOKEN}", "Expect: something-else", "Content-Length: 5", method="POST")
        + b"hello",
    )
    assert answer.status == 417
    assert crm.heads == []
    # The line is queued before the answer is written (call_soon): by the time the client
    # has read it all, a request the scope saw has been recorded.
    total = sum(_requests(d) for d in ("refused", "error", "forward", "gone", "page"))
    assert (len(seen.lines), total) == (1, counted + 1)
    line = seen.lines[0]
    assert (line[3], line[4], line[7]) == ("/up", 417, "refused"), line
    assert json.loads(answer.body)["error"] == "expectation_failed"
    assert "close" in [v.lower() for v in answer.all("Connection")]


# -- the identity header (gateway login), with remembered plans --------------------------------

# test_signin_gateway_mode's policy: erin signs in without a second factor; /public/** is open.


async def test_identity_header_spellings_and_connection_never_speak_for_the_client(
    crm: RawCrm, start: Start, browsers: Browsers, tmp_path: Path
) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"erin: '{hash_password('erin-password')}'\n")
    login = f"login:\n  mode: gateway\n  users_file: {users}\n  identity_header: X-Remote-User\n"
    gw = await start(crm.url, login=login, policy=POLICY)
    spoofs = [
        "X-Remote-User: admin",
        "x_remote_user: admin",
        "X_REMOTE-USER: root",
        "Connection: X-Remote-User",
    ]
    for _ in range(2):  # anonymous, on an open path: no identity at all
        answer = await exchange(gw.served.port, request("/public/x", *spoofs))
        assert answer.status == 200
        assert folded(answer.crm_saw(), "x-remote-user") == []
    b = browsers(gw)
    status, html, _ = await b.get("/_gateway/login?next=/reports")
    assert status == 200
    status, _, _ = await b.post(
        "/_gateway/login",
        {
            "csrf": form_field(html, "csrf"),
            "next": "/reports",
            "username": "erin",
            "password": "erin-password",
        },
    )
    assert status == 303
    cookie = "; ".join(f"{c.key}={c.value}" for c in b.jar)
    for extra in ([], ["Connection: x_remote_user"], ["Connection: keep-alive"]):
        answer = await exchange(
            gw.served.port, request("/reports", f"Cookie: {cookie}", *spoofs[:3], *extra)
        )
        assert answer.status == 200, answer
        assert folded(answer.crm_saw(), "x-remote-user") == ["erin"]
        assert [k for k, _ in answer.crm_saw() if fold(k) == "x-remote-user"] == ["X-Remote-User"]


async def test_a_trusted_proxys_chain_is_believed_and_the_clients_spellings_are_not(
    crm: RawCrm, start_gateway: GatewayFactory
) -> None:
    """From a trusted proxy: its X-Forwarded-For and X-Request-Id are used, the `_`
    spellings the client slipped past it are dropped, fresh and from the plan."""
    gw = await start_gateway(crm.url, "trusted_proxies: [127.0.0.0/8]\n")
    for _ in range(3):
        answer = await exchange(
            gw.port,
            request(
                "/x",
                "X-Forwarded-For: 203.0.113.7",
                "X_Forwarded_For: 6.6.6.6",
                "X-Request-Id: edge-42",
                "X_Request_Id: evil",
                "x_real_ip: 6.6.6.6",
            ),
        )
        seen = answer.crm_saw()
        assert folded(seen, "x-forwarded-for") == ["203.0.113.7, 127.0.0.1"], seen
        assert folded(seen, "x-request-id") == ["edge-42"] == answer.all("X-Request-Id")
        assert folded(seen, "x-real-ip") == []
        assert [k for k, _ in seen if "_" in k] == []
