"""An outsider's attacks on the login looked for as a body streams (commit 94eb7bd): alice,
signed in, posts bodies over login.max_body (64 KiB, length announced) to `/index.php`; the
gateway scans them on the way (gateway.signin.formscan) and holds back the last chunk. The
stand-in CRM parses the form as PHP does (tests.flows.test_login_in_form_attacks) and, like
mod_php (sapi_apache2.c reads the body in 16 KiB blocks and runs the script on what arrived
when the connection ends early; a cut upload is UPLOAD_ERR_PARTIAL, not a refused request),
checks a password in a body cut short. The holes it found are mended (the cut bodies by the
reviewer's hold-back, 505bc06; the head lines PHP ends, the file with a Login line and the long
name by FormScan reading parts as rfc1867.c does): their tests pass."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web

from gateway.policy.tokens import digest
from gateway.web.keys import DURABLE
from tests.conftest import Served, serve_handler
from tests.flows.test_case_insensitive_paths import status_of
from tests.flows.test_login_in_form import OPEN_POLICY, raw_post, signed_in
from tests.flows.test_login_in_form_attacks import (
    PASSWORDS,
    multipart,
    part,
    php_answer,
    php_boundary,
    php_media_type,
    php_part_name,
    php_post,
)
from tests.flows.test_paths_case_attacks import PHP_LOGIN, PHP_POLICY
from tests.signin_kit import Browser, Start, audit_trail

# (action, user, password right, body bytes, whole) of each request the CRM ran
RAN = web.AppKey("ran", list[tuple[str, str, bool, int, bool]])
RECEIVED = web.AppKey("received", list[bytes])  # each body the CRM got, as it got it
BLOCK = 16 * 1024  # SAPI_POST_BLOCK_SIZE: mod_php keeps the whole blocks of a cut body
FORM = "application/x-www-form-urlencoded"
PADDING = "p" * 70_000
FILLUNIT = 5 * 1024  # rfc1867.c: the multipart buffer, and so its longest line


def php_lines(body: bytes, at: int, size: int) -> tuple[bytes | None, int]:
    """rfc1867.c get_line/next_line: the line at `at` (a CR before its LF dropped) and where
    the next starts; a line with no LF in the buffer's `size` bytes is those bytes ("return
    entire buffer as a partial line"), what follows a line of its own; None at the end."""
    lf = body.find(b"\n", at, at + size)
    if lf >= 0:
        line = body[at:lf]
        return (line[:-1] if line.endswith(b"\r") else line), lf + 1
    if len(body) - at < size:
        return None, len(body)
    return body[at : at + size], at + size


def php_multipart_buffered(body: bytes, boundary: str) -> list[tuple[str, str]]:
    """rfc1867.c as it reads: find_boundary and multipart_buffer_headers line by line
    through the FILLUNIT buffer (headers end at an empty line, a line starting with
    whitespace continues the one before, one starting with NUL is empty as a C string),
    each part's content up to `\n--boundary`, one
    CR before it dropped."""
    size = max(FILLUNIT, len(boundary) + 6)
    delimiter, at, fields = b"--" + boundary.encode("latin-1"), 0, []
    for _ in range(10_000):
        line, at = php_lines(body, at, size)
        while line is not None and line != delimiter:
            line, at = php_lines(body, at, size)
        if line is None:
            break
        headers: list[list[str]] = []
        line, at = php_lines(body, at, size)
        while line and not line.startswith(b"\x00"):  # a C string: NUL first is empty
            text = line.partition(b"\x00")[0].decode("latin-1")
            if text[0].isspace() and headers:
                headers[-1][1] += text
            elif ":" in text:
                key, _, value = text.partition(":")
                headers.append([key, value.lstrip()])
            line, at = php_lines(body, at, size)
        end = body.find(b"\n" + delimiter, at)
        content = body[at : end if end >= 0 else len(body)]
        at = end if end >= 0 else len(body)
        for key, value in headers:
            name = php_part_name(value) if key.lower() == "content-disposition" else None
            if name is not None:
                fields.append((name, content.removesuffix(b"\r").decode("latin-1")))
    return fields


def php_form(body: bytes, content_type: str) -> dict[str, str]:
    """$_POST, multipart read through rfc1867.c's buffer (php_multipart_buffered)."""
    boundary = php_boundary(content_type)
    if php_media_type(content_type) != "multipart/form-data" or not boundary:
        return php_post(body, content_type)
    pairs = php_multipart_buffered(body, boundary)
    return {name.lstrip(" ").partition("\x00")[0]: value for name, value in pairs}


async def php_crm(request: web.Request) -> web.StreamResponse:
    """A PHP CRM reading $_REQUEST that runs a POST on the body it got, whole or cut short
    (then its whole 16 KiB blocks only, as mod_php)."""
    chunks: list[bytes] = []
    whole = True
    try:
        while chunk := await request.content.readany():
            chunks.append(chunk)
    except (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError):
        whole = False
    body = b"".join(chunks)
    if not whole:
        body = body[: len(body) // BLOCK * BLOCK]
    form = php_form(body, request.headers.get("Content-Type", ""))
    action = dict(parse_qsl(request.query_string, keep_blank_values=True)).get("action", "")
    if request.method == "POST":
        action = form.get("action", action)
    user = form.get("username", "")
    right = user in PASSWORDS and PASSWORDS[user] == form.get("password")
    request.app[RAN].append((action, user, right, len(body), whole))
    request.app[RECEIVED].append(body)
    return php_answer(request, action, form, f"every contact ({len(body)} bytes)")


@pytest.fixture
async def crm() -> AsyncIterator[Served]:
    served = await serve_handler(php_crm, RAN, RECEIVED)
    yield served
    await served.runner.cleanup()


def checked(crm: Served) -> list[str]:
    """The users whose password the CRM checked (a Login it ran)."""
    return [user for action, user, _, _, _ in crm.app[RAN] if action == "Login"]


async def paced(*pieces: bytes, stop: bool = False) -> AsyncIterator[bytes]:
    """Each piece its own write, a pause between (the gateway reads each as a chunk of its
    own); `stop`: the client gives up after the last one (its body short)."""
    for at, piece in enumerate(pieces):
        if at:
            await asyncio.sleep(0.15)
        yield piece
    if stop:
        await asyncio.sleep(0.15)
        raise ConnectionResetError("the client gives up")


async def send(
    b: Browser, body: bytes | AsyncIterator[bytes], content_type: str, length: int, **extra: str
) -> tuple[int, str]:
    headers = {"Content-Type": content_type, "Content-Length": str(length), **extra}
    async with b.http.post(
        b.gw.url + "/index.php?action=List", data=body, headers=headers, allow_redirects=False
    ) as r:
        return r.status, await r.text()


async def refused(b: Browser, crm: Served, content_type: str, body: bytes, **extra: str) -> None:
    """The body names the login to PHP; the gateway refuses it (413) and the CRM never runs a
    login: no password checked uncounted."""
    assert php_form(body, content_type).get("action") == "Login"
    before = checked(crm)
    status, text = await send(b, body, content_type, len(body), **extra)
    assert status == 413, text[:300]
    assert checked(crm) == before
    [event] = await audit_trail(b.gw.served, "signin.refused")
    assert event.reason == "login_in_upload"


BOB = "&username=bob&password=bob-demo"

# What held: spellings of the pair PHP reads, padded past 64 KiB.
URLENCODED = [
    pytest.param(f"pad={PADDING}{BOB}&%20action=Login", id="leading-%20-last-pair"),
    pytest.param(f"pad={PADDING}{BOB}&{'+' * 6000}action=Login&x=1", id="6000-plus-before"),
    pytest.param(f"pad={PADDING}{BOB}&{'%20' * 3000}action=Login&x=1", id="3000-%20-before"),
    pytest.param(f"pad={PADDING}{BOB}&action%00{'x' * 6000}=Login&x=1", id="nul-long-name"),
    pytest.param(f"pad={PADDING}{BOB}&act%69on=%4C%6F%67%69%6E&x=1", id="all-escaped"),
    pytest.param(f"action=Login{BOB}&pad={PADDING}", id="login-first"),
    pytest.param(f"pad={PADDING}&action=List{BOB}&action=Login", id="last-one-wins"),
]


@pytest.mark.parametrize("body", URLENCODED)
async def test_a_padded_urlencoded_login_in_any_spelling_is_refused(
    crm: Served, start: Start, body: str
) -> None:
    b = await signed_in(crm, start)
    try:
        await refused(b, crm, FORM, body.encode())
    finally:
        await b.close()


@pytest.mark.parametrize(
    "content_type",
    [f"{FORM}; charset=latin1", f"{FORM}, text/plain", "Application/X-WWW-Form-Urlencoded"],
)
async def test_a_padded_login_under_any_form_type_php_reads_is_refused(
    crm: Served, start: Start, content_type: str
) -> None:
    b = await signed_in(crm, start)
    try:
        await refused(b, crm, content_type, f"pad={PADDING}{BOB}&action=Login".encode())
    finally:
        await b.close()


MULTIPART = [
    pytest.param(
        "\n",
        'Content-Disposition: form-data; name="action"',
        id="lf-only",
    ),
    pytest.param(
        "\r\n",
        "Content-Disposition: form-data;\r\n name=action",
        id="folded-bare-name",
    ),
    pytest.param(
        "\r\n",
        'Content-Disposition: form-data; name=" action"',
        id="leading-space-name",
    ),
]


@pytest.mark.parametrize(("end", "header"), MULTIPART)
async def test_a_padded_multipart_login_is_refused(
    crm: Served, start: Start, end: str, header: str
) -> None:
    body = multipart(
        "AAA",
        part('Content-Disposition: form-data; name="pad"', PADDING, end),
        part('Content-Disposition: form-data; name="username"', "bob", end),
        part('Content-Disposition: form-data; name="password"', "bob-demo", end),
        part(header, "Login", end),
        end=end,
    )
    b = await signed_in(crm, start)
    try:
        await refused(b, crm, "multipart/form-data; boundary=AAA", body)
    finally:
        await b.close()


async def test_a_login_split_across_chunks_is_refused(crm: Served, start: Start) -> None:
    """The pair cut between writes (`act` | `ion=Lo` | `gin`), the last without `&`."""
    pieces = (f"pad={PADDING}{BOB}&act".encode(), b"ion=Lo", b"gin")
    b = await signed_in(crm, start)
    try:
        status, text = await send(b, paced(*pieces), FORM, sum(map(len, pieces)))
        assert status == 413, text[:300]
        assert "bob" not in checked(crm)
    finally:
        await b.close()


async def test_a_padded_login_with_expect_continue_is_refused(crm: Served, start: Start) -> None:
    b = await signed_in(crm, start)
    try:
        body = f"pad={PADDING}{BOB}&action=Login".encode()
        await refused(b, crm, FORM, body, Expect="100-continue")
    finally:
        await b.close()


async def test_large_uploads_reach_the_crm_whole(crm: Served, start: Start) -> None:
    """alice's own uploads over 64 KiB, sent in uneven writes: every byte, in order."""
    note = f"action=Save&note={'n' * 100_000}&x=Login".encode()
    upload = multipart(
        "BBB",
        part('Content-Disposition: form-data; name="action"', "Save"),
        part('Content-Disposition: form-data; name="file"; filename="a.bin"', "\x01" * 90_000),
    )
    b = await signed_in(crm, start)
    try:
        for content_type, body in ((FORM, note), ("multipart/form-data; boundary=BBB", upload)):
            pieces = (body[:7], body[7:70_001], body[70_001:70_002], body[70_002:])
            status, text = await send(b, paced(*pieces), content_type, len(body))
            assert (status, text) == (200, f"Save: every contact ({len(body)} bytes)")
            assert crm.app[RAN][-1] == ("Save", "", False, len(body), True)
            assert crm.app[RECEIVED][-1] == body  # in order, nothing lost or doubled
    finally:
        await b.close()


async def test_a_file_with_a_login_line_reaches_the_crm(crm: Served, start: Start) -> None:
    document = "Manual\r\n" + "text\r\n" * 12_000 + "\r\nLogin\r\nclick the button\r\n"
    body = multipart(
        "BBB",
        part('Content-Disposition: form-data; name="action"', "Save"),
        part('Content-Disposition: form-data; name="file"; filename="manual.txt"', document),
    )
    assert php_form(body, "multipart/form-data; boundary=BBB")["action"] == "Save"
    b = await signed_in(crm, start)
    try:
        status, text = await send(b, body, "multipart/form-data; boundary=BBB", len(body))
        assert (status, text) == (200, f"Save: every contact ({len(body)} bytes)")
    finally:
        await b.close()


async def test_a_long_body_with_no_pair_reaches_the_crm(crm: Served, start: Start) -> None:
    body = json.dumps({"notes": ["n" * 100] * 800}).encode()
    assert b"=" not in body and len(body) > 70_000
    b = await signed_in(crm, start)
    try:
        status, text = await send(b, body, f"{FORM}; charset=UTF-8", len(body))
        assert (status, text) == (200, f"List: every contact ({len(body)} bytes)")
    finally:
        await b.close()


def cut_login(blocks: int = 5) -> bytes:
    """A prefix of whole 16 KiB blocks ending in bob's login, `action=Login` last."""
    tail = f"{BOB}&action=Login".encode()
    return b"pad=" + b"p" * (blocks * BLOCK - 4 - len(tail)) + tail


async def test_a_refused_upload_leaves_no_login_at_the_crm(crm: Served, start: Start) -> None:
    pieces = (cut_login(), b"x", b"&action=Login&end=" + b"e" * 100)
    b = await signed_in(crm, start)
    try:
        status, text = await send(b, paced(*pieces), FORM, sum(map(len, pieces)))
        assert status == 413, text[:300]
        await asyncio.sleep(0.2)  # the CRM runs what it got
        assert "bob" not in checked(crm)
    finally:
        await b.close()


async def test_a_client_that_stops_leaves_no_login_at_the_crm(crm: Served, start: Start) -> None:
    pieces = (cut_login(), b"x")
    b = await signed_in(crm, start)
    try:
        with pytest.raises(aiohttp.ClientError):
            await send(b, paced(*pieces, stop=True), FORM, len(pieces[0]) + 1000)
        await asyncio.sleep(0.3)
        assert "bob" not in checked(crm)
    finally:
        await b.close()


LONG_LINE = "X-Note: " + "x" * (FILLUNIT - len("X-Note: ")) + "\n"
HEAD_ENDS = [
    pytest.param(LONG_LINE, id="a-line-of-FILLUNIT-bytes"),
    pytest.param("\x00\r\n", id="a-line-starting-with-NUL"),
]


def split_head(head_end: str, padding: str = "") -> bytes:
    """bob's login, `action` last, its part's head ending in a line PHP reads as the empty
    one that ends it, and `Login` its content: a line of exactly FILLUNIT bytes (PHP reads
    it as a partial line, then the LF after it as an empty one), or a line starting with
    NUL (empty as a C string). Read line by line, `Login` follows no empty line."""
    return multipart(
        "AAA",
        *([part('Content-Disposition: form-data; name="pad"', padding)] if padding else []),
        part('Content-Disposition: form-data; name="username"', "bob"),
        part('Content-Disposition: form-data; name="password"', "bob-demo"),
        f'Content-Disposition: form-data; name="action"\r\n{head_end}Login\r\n',
    )


@pytest.mark.parametrize("head_end", HEAD_ENDS)
def test_the_stand_in_reads_a_head_line_past_its_buffer_as_php(head_end: str) -> None:
    """The stand-in's parser: the same parts as a browser's, and the split head."""
    plain = multipart("AAA", part('Content-Disposition: form-data; name="action"', "Save"))
    assert php_form(plain, "multipart/form-data; boundary=AAA") == {"action": "Save"}
    form = php_form(split_head(head_end), "multipart/form-data; boundary=AAA")
    assert form == {"username": "bob", "password": "bob-demo", "action": "Login"}


@pytest.mark.parametrize("head_end", HEAD_ENDS)
async def test_a_padded_login_behind_a_head_line_past_php_buffer(
    crm: Served, start: Start, head_end: str
) -> None:
    b = await signed_in(crm, start)
    try:
        body = split_head(head_end, PADDING)
        headers = {"Content-Type": "multipart/form-data; boundary=AAA"}
        async with b.http.post(
            b.gw.url + "/index.php?action=List", data=body, headers=headers, allow_redirects=False
        ) as r:
            status, cookies = r.status, r.headers.getall("Set-Cookie", [])
        assert not any("bob-session" in c for c in cookies), cookies
        assert "bob" not in checked(crm)
        assert status == 413
    finally:
        await b.close()


@pytest.mark.parametrize("head_end", HEAD_ENDS)
async def test_a_small_login_behind_a_head_line_past_php_buffer(
    crm: Served, start: Start, head_end: str
) -> None:
    gw = await start(crm.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    body = split_head(head_end)
    head = f"Content-Type: multipart/form-data; boundary=AAA\r\nContent-Length: {len(body)}\r\n"
    answer = await raw_post(gw, "/index.php?action=List", head, body)
    assert status_of(answer) != 500, answer[:300]
    assert "bob" not in checked(crm)


ODD = [
    pytest.param(FORM, f"pad={PADDING}&%ff%fe=%&%=%zz&action=L%".encode(), id="bad-escapes"),
    pytest.param(FORM, b"\xff\xfe=" + b"\xff" * 70_000 + b"&action=Login", id="not-utf8"),
    pytest.param(FORM, b"&;" * 40_000 + b"action=Login", id="only-separators"),
    pytest.param("multipart/form-data", f"action\r\n\r\nLogin\r\n{PADDING}".encode(), id="mp-bare"),
    pytest.param("multipart/form-data; boundary=", b"\n" * 70_000 + b"action", id="mp-lf"),
    pytest.param(f"{FORM}; charset=\xff", f"pad={PADDING}".encode(), id="odd-charset"),
]


@pytest.mark.parametrize(("content_type", "body"), ODD)
async def test_odd_padded_bodies_get_no_500(
    crm: Served, start: Start, content_type: str, body: bytes
) -> None:
    """Bodies no browser sends: an answer, never a 500; no password checked uncounted."""
    b = await signed_in(crm, start)
    try:
        status, text = await send(b, body, content_type, len(body))
        assert status != 500, text[:300]
        assert "bob" not in checked(crm)
    finally:
        await b.close()


async def test_a_padded_login_with_an_api_token_is_refused(crm: Served, start: Start) -> None:
    """alice's API token instead of a session: the padded body streams the same way, and
    is refused the same way."""
    gw = await start(crm.url, login=PHP_LOGIN, policy=PHP_POLICY)
    token = "alice-sync-" + "k" * 32
    await gw.served.app[DURABLE].add_token("tok_alice", "alice", digest(token), "", 0.0)
    await gw.signin.guard.refresh_tokens()
    body = f"pad={PADDING}{BOB}&action=Login".encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FORM}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{gw.url}/index.php", data=body, headers=headers, allow_redirects=False) as r,
    ):
        assert r.status == 413, (await r.text())[:300]
    assert checked(crm) == []
    # and the token's own large form still goes
    upload = f"action=Save&note={PADDING}".encode()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{gw.url}/index.php", data=upload, headers=headers, allow_redirects=False) as r,
    ):
        assert r.status != 413, (await r.text())[:300]
    assert crm.app[RAN][-1] == ("Save", "", False, len(upload), True)


async def test_a_kept_login_behind_a_nul_head_line_is_never_replayed(
    crm: Served, start: Start
) -> None:
    b = Browser(await start(crm.url, login=PHP_LOGIN, policy=PHP_POLICY))
    try:
        form = {"username": "alice", "password": "alice-demo"}
        assert (await b.post("/index.php?action=Login", form))[0] == 303
        secret, _ = await b.enrol()
        await b.confirm_codes()
        b.gw.clock.advance(660)  # reverify 10m: due
        body = split_head("\x00\r\n")
        headers = {"Content-Type": "multipart/form-data; boundary=AAA"}
        async with b.http.post(
            b.gw.url + "/index.php", data=body, headers=headers, allow_redirects=False
        ) as r:
            assert r.status in (303, 400, 413), (await r.text())[:300]  # 400: taken for the login
        assert "bob" not in checked(crm)  # kept, not yet at the CRM
        if r.status == 303:
            await b.answer(b.code(secret, 31))
        assert "bob" not in checked(crm)
    finally:
        await b.close()
