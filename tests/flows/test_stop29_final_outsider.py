"""An outsider's last look at stop 29's changes (ce4e042..): the `_method` override read only
for a POST with a body, 100 Continue sent only on an Expect header, X-Original-URL and
X-Rewrite-URL never relayed, and other spellings of a refused method and path. Real gateways
over loopback and a CRM that is a plain socket noting every request head.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import GatewayFactory, Served, send_raw
from tests.flows.test_stop29_outsider_shortcuts import LineCrm, line_crm, status_line

__all__ = ["line_crm"]  # the fixture, by name

FORM = b"application/x-www-form-urlencoded"

METHOD_POLICY = """
roles:
  admin: {}
paths:
  - {path: /records/**, methods: [DELETE, PUT, PATCH], allow: [role:admin]}
  - {path: /records/**, allow: [anyone]}
"""


async def method_gateway(crm: LineCrm, start_gateway: GatewayFactory, tmp: Path) -> Served:
    folder = tmp / "policies"
    folder.mkdir()
    (folder / "policy.yaml").write_text(METHOD_POLICY)
    return await start_gateway(await crm.start(), f"policies: {folder}\n")


def final(answer: bytes) -> bytes:
    """The final answer's status line (after any 100 Continue)."""
    return status_line(answer.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))


def chunked(body: bytes) -> bytes:
    return f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


def post(target: bytes, headers: bytes, body: bytes) -> bytes:
    return (
        b"POST " + target + b" HTTP/1.1\r\nHost: gw\r\n" + headers + b"Connection: close\r\n\r\n"
    ) + body


MULTIPART = b'--XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n'
JSON = b'{"name": "x", "_method": "DELETE"}'

# A POST whose body asks the CRM for DELETE, which the rule refuses: refused, never sent.
OVERRIDES: dict[str, bytes] = {
    "form, chunked, no length": post(
        b"/records/7",
        b"Content-Type: " + FORM + b"\r\nTransfer-Encoding: chunked\r\n",
        chunked(b"_method=DELETE"),
    ),
    "form, chunked, Expect": post(
        b"/records/7",
        b"Content-Type: " + FORM + b"\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n",
        chunked(b"a=1&_method=delete"),
    ),
    "form, length, Expect": post(
        b"/records/7",
        b"Content-Type: " + FORM + b"\r\nContent-Length: 14\r\nExpect: 100-continue\r\n",
        b"_method=DELETE",
    ),
    "multipart, chunked": post(
        b"/records/7",
        b"Content-Type: multipart/form-data; boundary=XyZ\r\nTransfer-Encoding: chunked\r\n",
        chunked(MULTIPART),
    ),
    "multipart, length": post(
        b"/records/7",
        b"Content-Type: multipart/form-data; boundary=XyZ\r\n"
        + f"Content-Length: {len(MULTIPART)}\r\n".encode(),
        MULTIPART,
    ),
    "json, chunked": post(
        b"/records/7",
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
        chunked(JSON),
    ),
    "query repeated": post(b"/records/7?_method=GET&_method=DELETE", b"Content-Length: 0\r\n", b""),
    "query, no body at all": post(b"/records/7?_method=DELETE", b"", b""),
}


@pytest.mark.parametrize("raw", OVERRIDES.values(), ids=OVERRIDES.keys())
async def test_a_method_override_in_any_body_is_refused_before_the_crm(
    line_crm: LineCrm, start_gateway: GatewayFactory, tmp_path: Path, raw: bytes
) -> None:
    gw = await method_gateway(line_crm, start_gateway, tmp_path)
    answer = await send_raw(gw.port, raw)
    assert final(answer) in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 403 Forbidden"), answer[:300]
    assert line_crm.lines() == []


# A POST with no Content-Type: Rack reads its body as a form all the same
# (Rack::Request#form_data?: a POST whose media type is nil), so Rails' Rack::MethodOverride
# runs `_method=DELETE` from it; the gateway's body_fields reads no field from such a body.
UNTYPED: dict[str, bytes] = {
    "form, no content type": post(
        b"/records/7", b"Transfer-Encoding: chunked\r\n", chunked(b"_method=DELETE")
    ),
    "form, no content type, length": post(
        b"/records/7", b"Content-Length: 14\r\n", b"_method=DELETE"
    ),
    # Laravel reads a body as JSON whenever its Content-Type holds `/json` or `+json`.
    "json named outside the media type": post(
        b"/records/7",
        b"Content-Type: text/plain; x=/json\r\n" + f"Content-Length: {len(JSON)}\r\n".encode(),
        JSON,
    ),
    "json in a type of its own": post(
        b"/records/7",
        b"Content-Type: application/jsonl\r\n" + f"Content-Length: {len(JSON)}\r\n".encode(),
        JSON,
    ),
}


@pytest.mark.parametrize("raw", UNTYPED.values(), ids=UNTYPED.keys())
async def test_a_method_override_in_an_untyped_post_body_is_refused(
    line_crm: LineCrm, start_gateway: GatewayFactory, tmp_path: Path, raw: bytes
) -> None:
    gw = await method_gateway(line_crm, start_gateway, tmp_path)
    answer = await send_raw(gw.port, raw)
    assert final(answer) in (b"HTTP/1.1 400 Bad Request", b"HTTP/1.1 403 Forbidden"), answer[:300]
    assert line_crm.lines() == []


async def test_a_post_without_an_override_still_goes(
    line_crm: LineCrm, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await method_gateway(line_crm, start_gateway, tmp_path)
    raw = post(
        b"/records/7",
        b"Content-Type: " + FORM + b"\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n",
        chunked(b"name=x&method=DELETE"),
    )
    answer = await send_raw(gw.port, raw)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"), answer[:300]
    assert line_crm.lines() == [b"POST /records/7 HTTP/1.1"]


# Other spellings of DELETE on /records/7: refused, or sent only as the rule judged them.
SPELLINGS = [
    b"DELETE /records/7",
    b"DELETE //records/7",
    b"DELETE /./records/7",
    b"DELETE /x/../records/7",
    b"DELETE /records/./7",
    b"DELETE /%72ecords/7",
    b"DELETE /records%2F7",
    b"DELETE /records;x/7",
    b"DELETE /records/7?_method=GET",
    b"PUT /records/7",
    b"PATCH /records/7",
]


@pytest.mark.parametrize("line", SPELLINGS, ids=[s.decode() for s in SPELLINGS])
async def test_a_refused_method_in_another_spelling_never_reaches_the_crm(
    line_crm: LineCrm, start_gateway: GatewayFactory, tmp_path: Path, line: bytes
) -> None:
    gw = await method_gateway(line_crm, start_gateway, tmp_path)
    raw = line + b" HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    answer = await send_raw(gw.port, raw)
    assert not status_line(answer).startswith(b"HTTP/1.1 2"), answer[:300]
    assert line_crm.lines() == []


async def test_a_refused_request_with_expect_gets_no_100_continue(
    line_crm: LineCrm, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await method_gateway(line_crm, start_gateway, tmp_path)
    raw = (
        b"DELETE /records/7 HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\nhi"
    )
    answer = await send_raw(gw.port, raw)
    assert status_line(answer) == b"HTTP/1.1 403 Forbidden", answer[:300]
    assert b"100 Continue" not in answer
    assert line_crm.lines() == []


@pytest.mark.parametrize(
    "expect", [b"Expect: 100-continue\r\n", b"Expect: 100-Continue\r\nExpect: 100-continue\r\n"]
)
async def test_expect_without_a_body_is_answered_once_and_sent_once(
    line_crm: LineCrm, start_gateway: GatewayFactory, tmp_path: Path, expect: bytes
) -> None:
    gw = await method_gateway(line_crm, start_gateway, tmp_path)
    raw = b"GET /records/7 HTTP/1.1\r\nHost: gw\r\n" + expect + b"Connection: close\r\n\r\n"
    answer = await send_raw(gw.port, raw)
    assert b"200 OK" in answer, answer[:300]
    assert answer.count(b"200 OK") == 1
    assert line_crm.lines() == [b"GET /records/7 HTTP/1.1"]
    assert b"expect" not in line_crm.headers()


@pytest.mark.parametrize("name", [b"X-Original-URL", b"x-rewrite-url", b"X-ORIGINAL-URL"])
async def test_a_path_override_header_is_never_relayed(
    line_crm: LineCrm, start_gateway: GatewayFactory, tmp_path: Path, name: bytes
) -> None:
    gw = await method_gateway(line_crm, start_gateway, tmp_path)
    raw = (
        b"GET /records/7 HTTP/1.1\r\nHost: gw\r\n"
        + name
        + b": /admin/delete\r\n"
        + name
        + b": /admin/other\r\nConnection: close\r\n\r\n"
    )
    answer = await send_raw(gw.port, raw)
    assert status_line(answer) == b"HTTP/1.1 200 OK", answer[:300]
    sent = line_crm.headers()
    assert b"x-original-url" not in sent and b"x-rewrite-url" not in sent
