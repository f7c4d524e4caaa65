"""An outsider's attacks on FormScan (6f01410, 28b90ca) read against PHP 8's rfc1867.c: bodies
real PHP reads as `action=Login` with bob's password that the scan (form_names_login whole,
FormScan streamed) called no login, and a browser's upload the scan took for one. All five
were strict xfails; mended by the scan looking for the boundary anywhere before a part and in
a part's content, keeping a head's names across a boundary line inside it, keeping as much of
a line as the boundary is long, and counting only the lines it reads one by one.

What PHP does that the attacks lean on (main/rfc1867.c):
- find_boundary reads line by line (get_line) and takes a line for the delimiter when it
  equals `--boundary` (strcmp, one CR before the LF dropped); a line with no LF in a full
  buffer (FILLUNIT, 5 KiB, from the line's start) is a line of its own, and its rest another.
- multipart_buffer_headers reads the head line by line until an empty one and never looks
  for the boundary in it: a `--boundary` line there is a header line without `:`, added to
  the header before it.
- the boundary may be any length (multipart_buffer_new sizes the buffer to fit it).

Holes are strict xfails that pass once mended; what held passes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from gateway.config.signin import Login
from gateway.signin.formscan import FormScan, form_names_login
from tests.conftest import Served, serve_handler
from tests.flows.test_case_insensitive_paths import status_of
from tests.flows.test_login_in_form import OPEN_POLICY, raw_post, signed_in
from tests.flows.test_login_in_form_attacks import part
from tests.flows.test_login_scan_attacks import (
    RAN,
    RECEIVED,
    checked,
    php_crm,
    php_form,
    send,
)
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.signin_kit import Start

LOGIN = Login(mode="upstream", path="/index.php?action=Login", username_field="username")
FILLUNIT = 5 * 1024  # rfc1867.c: the buffer, and so the longest line get_line returns
CD = 'Content-Disposition: form-data; name="{}"'
PADDING = "p" * 70_000  # past login.max_body (64 KiB): a signed-in user's upload streams
Shape = Callable[[bool], tuple[str, bytes]]  # padded or not: (Content-Type, body)


def delimited(boundary: str, *parts: str, preamble: str = "") -> bytes:
    """Parts each after their own `--boundary` line, the close delimiter last."""
    body = preamble + "".join(f"--{boundary}\r\n{p}" for p in parts) + f"--{boundary}--\r\n"
    return body.encode()


def bob(pad: bool) -> list[str]:
    """bob's username and password as parts, a part of PADDING before them if `pad`."""
    padding = [part(CD.format("pad"), PADDING)] if pad else []
    return [*padding, part(CD.format("username"), "bob"), part(CD.format("password"), "bob-demo")]


def scanned(body: bytes, content_type: str, size: int = 0) -> bool:
    """Whether FormScan finds the login, fed `body` whole (`size` 0) or in `size`-byte chunks;
    form_names_login (the body read whole) must agree with the whole feed."""
    scan = FormScan(LOGIN, "/index.php", content_type)
    for at in range(0, len(body), size or len(body) or 1):
        scan.feed(body[at : at + (size or len(body))])
    scan.finish()
    if not size:
        assert form_names_login(LOGIN, "/index.php", body, content_type) is scan.found
    return scan.found


# -- the shapes ---------------------------------------------------------------------------


def preamble_line(pad: bool = False) -> tuple[str, bytes]:
    """A preamble of exactly FILLUNIT bytes with no LF, the first delimiter right after it on
    the same line: PHP's get_line returns the full buffer as a line, then `--AAA` as the
    next, which find_boundary takes (strcmp). The scan, before the first part, skips to the
    next `\\n--AAA` and so never reads the first part, `action=Login`."""
    body = delimited("AAA", part(CD.format("action"), "Login"), *bob(pad), preamble="x" * FILLUNIT)
    return "multipart/form-data; boundary=AAA", body


def epilogue_line(pad: bool = False) -> tuple[str, bytes]:
    """The same cut line after the close delimiter: PHP's loop goes on to find_boundary
    after `--AAA--` (it reads parts until the body ends), skips `junk` and the FILLUNIT-byte
    piece, and takes `--AAA`. The scan, in what it reads as the content of a part that
    `--AAA--` began, skips to the next `\\n--AAA`: the close delimiter after the action part."""
    hidden = "x" * FILLUNIT + "--AAA\r\n" + part(CD.format("action"), "Login") + "--AAA--\r\n"
    body = delimited("AAA", *bob(pad)) + b"\r\njunk\r\n" + hidden.encode()
    return "multipart/form-data; boundary=AAA", body


LONG = "b" * 600


def long_boundary(pad: bool = False) -> tuple[str, bytes]:
    """A boundary of 600 bytes (RFC 2046 says 70 at most; PHP takes any length and sizes its
    buffer to fit it). The scan keeps 512 bytes of a line (_LINE_START), so a line never
    starts with the 602-byte delimiter: no part is ever read."""
    body = delimited(LONG, part(CD.format("action"), "Login"), *bob(pad))
    return f"multipart/form-data; boundary={LONG}", body


def delimiter_in_head(pad: bool = False) -> tuple[str, bytes]:
    """`--AAA` as a line of the action part's head, after its Content-Disposition: PHP's
    multipart_buffer_headers looks for no boundary there (a line without `:` is added to
    the header before it, `name="action"--AAA`, and the quoted name stays `action`); the
    empty line after it ends the head and `Login` is the value. The scan takes the line for
    a new part and forgets the name it saw."""
    action = CD.format("action") + "\r\n--AAA\r\n\r\nLogin\r\n"
    return "multipart/form-data; boundary=AAA", delimited("AAA", *bob(pad), action)


SHAPES = [
    pytest.param(preamble_line, id="preamble-of-FILLUNIT-then-delimiter"),
    pytest.param(epilogue_line, id="after-the-close-a-line-of-FILLUNIT-then-delimiter"),
    pytest.param(long_boundary, id="boundary-longer-than-512"),
    pytest.param(delimiter_in_head, id="delimiter-line-inside-a-head"),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_stand_in_reads_each_shape_as_bobs_login(shape: Shape) -> None:
    """The stand-in CRM (rfc1867.c through its buffer) reads each shape as bob's login,
    small and padded: logins PHP runs, which the scan must find."""
    for pad in (False, True):
        content_type, body = shape(pad)
        form = php_form(body, content_type)
        assert (form["action"], form["username"], form["password"]) == ("Login", "bob", "bob-demo")


PHP_READS = [
    pytest.param(
        preamble_line,
        id="preamble-of-FILLUNIT-then-delimiter",
    ),
    pytest.param(
        epilogue_line,
        id="after-the-close-a-line-of-FILLUNIT-then-delimiter",
    ),
    pytest.param(
        long_boundary,
        id="boundary-longer-than-512",
    ),
    pytest.param(
        delimiter_in_head,
        id="delimiter-line-inside-a-head",
    ),
]


@pytest.mark.parametrize("shape", PHP_READS)
def test_the_scan_finds_what_php_reads_as_the_login(shape: Shape) -> None:
    content_type, body = shape(False)
    assert scanned(body, content_type)
    assert scanned(body, content_type, size=1000)


@pytest.mark.parametrize("shape", PHP_READS)
async def test_an_anonymous_small_login_in_the_shape_never_reaches_the_crm(
    php_site: Served, start: Start, shape: Shape
) -> None:
    """Anonymous, the body read whole (form_names_login): a multipart login is refused
    before the CRM (test_login_in_form), so no password of bob's is checked uncounted."""
    content_type, body = shape(False)
    gw = await start(php_site.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    head = f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    answer = await raw_post(gw, "/index.php?action=List", head, body)
    assert status_of(answer) != 500, answer[:300]
    assert "bob" not in checked(php_site)


@pytest.mark.parametrize("shape", PHP_READS)
async def test_a_padded_login_in_the_shape_is_refused(
    php_site: Served, start: Start, shape: Shape
) -> None:
    """alice, signed in, streams the shape padded past 64 KiB (FormScan fed chunk by
    chunk): it must be refused (413), bob's password never checked."""
    content_type, body = shape(True)
    b = await signed_in(php_site, start)
    try:
        status, text = await send(b, body, content_type, len(body))
        assert "bob" not in checked(php_site), (status, text[:200])
        assert status == 413
    finally:
        await b.close()


async def test_a_second_content_type_is_refused(php_site: Served, start: Start) -> None:
    """`multipart/form-data` then `text/plain; boundary=AAA`: Apache would join them
    (`multipart/form-data, text/plain; boundary=AAA`, a multipart body with boundary AAA to
    PHP) while the gateway reads the first, with no boundary. aiohttp refuses the request."""
    gw = await start(php_site.url, login=PHP_LOGIN, policy=OPEN_POLICY)
    body = delimited("AAA", part(CD.format("action"), "Login"), *bob(False))
    head = (
        "Content-Type: multipart/form-data\r\nContent-Type: text/plain; boundary=AAA\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    answer = await raw_post(gw, "/index.php?action=List", head, body)
    assert status_of(answer) == 400, answer[:300]
    assert checked(php_site) == []


# -- a browser's upload -------------------------------------------------------------------

CHROME = "----WebKitFormBoundary7MA4YWxkTrZu0gW"


def chrome_upload(lines: int) -> bytes:
    """A Chrome form with `action=Save` and a text file of `lines` lines, `Login` among them."""
    document = "".join(f"row {n}: Login\r\n--{CHROME[:10]}\r\n" for n in range(lines))
    return delimited(
        CHROME,
        part(CD.format("action"), "Save"),
        CD.format("file")
        + '; filename="notes.txt"\r\nContent-Type: text/plain\r\n\r\n'
        + document
        + "\r\n",
    )


def test_a_browser_upload_in_large_chunks_is_no_login() -> None:
    body = chrome_upload(200_000)
    content_type = f"multipart/form-data; boundary={CHROME}"
    assert php_form(body, content_type)["action"] == "Save"
    assert not scanned(body, content_type)
    assert not scanned(body, content_type, size=65_536)


def test_a_browser_upload_in_many_small_chunks_is_no_login() -> None:
    body = chrome_upload(1_000_000)
    content_type = f"multipart/form-data; boundary={CHROME}"
    assert len(body) // 1448 > 20_000
    assert not scanned(body, content_type, size=1448)


# -- what held ----------------------------------------------------------------------------


def login_behind_a_file(delimiter_line: str) -> bytes:
    """bob's login, the action part after a file, its delimiter line `delimiter_line`."""
    head = "--AAA\r\n" + CD.format("file") + '; filename="a.bin"\r\n\r\n' + "\x01z\n" * 3000
    action = f"\r\n{delimiter_line}\r\n{CD.format('action')}\r\n\r\nLogin\r\n"
    return (head + action).encode() + delimited("AAA", *bob(False))


@pytest.mark.parametrize(
    "delimiter_line",
    [
        pytest.param("--AAA", id="plain"),
        pytest.param("--AAA\x00junk", id="nul-after-the-boundary"),  # strcmp: a C string
    ],
)
def test_a_delimiter_split_across_chunks_anywhere_is_found(delimiter_line: str) -> None:
    """The action part after a file's content, the body cut at each byte around the
    delimiter (and fed one byte at a time): the scan finds it however the chunks fall."""
    body = login_behind_a_file(delimiter_line)
    content_type = "multipart/form-data; boundary=AAA"
    if "\x00" not in delimiter_line:  # the stand-in compares bytes, PHP a C string (strcmp)
        assert php_form(body, content_type)["action"] == "Login"
    at = body.index(b"\n" + delimiter_line.encode())
    for cut in range(at - 3, at + len(delimiter_line) + 4):
        scan = FormScan(LOGIN, "/index.php", content_type)
        scan.feed(body[:cut])
        assert not scan.found
        scan.feed(body[cut:])
        scan.finish()
        assert scan.found, cut
    assert scanned(body, content_type, size=1)


def test_the_body_starting_with_the_delimiter_and_a_head_line_at_fillunit() -> None:
    """The delimiter as the body's first line; the action part's head ended by a line that
    PHP's buffer cuts (exactly FILLUNIT bytes, then its LF read as the empty line)."""
    long_line = "X-Note: " + "n" * (FILLUNIT - len("X-Note: ")) + "\n"
    action = CD.format("action") + "\r\n" + long_line + "Login\r\n"
    body = delimited("AAA", action, *bob(False))
    assert php_form(body, "multipart/form-data; boundary=AAA")["action"] == "Login"
    assert scanned(body, "multipart/form-data; boundary=AAA")
    assert scanned(body, "multipart/form-data; boundary=AAA", size=7)


@pytest.fixture
async def php_site() -> AsyncIterator[Served]:
    served = await serve_handler(php_crm, RAN, RECEIVED)
    yield served
    await served.runner.cleanup()
