"""gateway.signin.formscan: a body that names the CRM's login found as it streams, in chunks
cut anywhere, read as generously as a body read whole (gateway.signin.identity)."""

from __future__ import annotations

import pytest

from gateway.config.signin import Login
from gateway.signin.formscan import LONGEST_NAME, MOST_FIELDS, FormScan, form_names_login

LOGIN = Login(mode="upstream", path="/index.php?module=Users&action=Login", username_field="u")
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=B"


def part(name: str, value: str) -> str:
    return f'--B\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'


def scanned(body: bytes, content_type: str, target: str = "/index.php", cut: int = 0) -> bool:
    """Whether the scan finds the login, the body fed in two chunks cut at `cut` (or in
    pieces of one byte when `cut` is -1)."""
    scan = FormScan(LOGIN, target, content_type)
    pieces = [body[i : i + 1] for i in range(len(body))] if cut < 0 else [body[:cut], body[cut:]]
    for piece in pieces:
        scan.feed(piece)
    scan.finish()
    return scan.found


CASES = [
    (b"module=Users&action=Login&u=a&p=x", FORM, True),
    (b"p=x&u=a&action=Login&module=Users", FORM, True),  # the last pair, ended by the body
    (b"MODULE=users&action%5B%5D=login", FORM, True),  # any case; `action[]` (PHP)
    (b"module=Users;action=Log%69n", FORM, True),
    (b"+++module=Users&%20action=Login", FORM, True),  # PHP drops leading spaces
    (b"module=Users&action=Save", FORM, False),
    (b"module=Users&note=action%3DLogin", FORM, False),
    (b"module=Users&action=LoginX", FORM, False),
    (b"module=Users&action=Login", "application/json", False),  # not a form PHP reads
    ((part("module", "Users") + part("action", "Login") + "--B--\r\n").encode(), MULTIPART, True),
    ((part("module", "Users") + part("action", "Save") + "--B--\r\n").encode(), MULTIPART, False),
    # a value that is a line of its own, but not a part's first: not taken
    (
        (part("module", "Users") + part("note", "x\r\nLogin") + "--B--\r\n").encode(),
        MULTIPART,
        False,
    ),
]


@pytest.mark.parametrize(("body", "content_type", "found"), CASES)
def test_found_wherever_the_body_is_cut(body: bytes, content_type: str, found: bool) -> None:
    for cut in range(len(body) + 1):
        assert scanned(body, content_type, cut=cut) is found, (cut, body[:cut])
    assert scanned(body, content_type, cut=-1) is found


@pytest.mark.parametrize(("body", "content_type", "found"), CASES)
def test_as_generous_as_the_body_read_whole(body: bytes, content_type: str, found: bool) -> None:
    """The scan and form_names_login (a body read whole) agree on every case."""
    assert form_names_login(LOGIN, "/index.php", body, content_type) is found
    assert scanned(body, content_type) is found


def test_a_pair_the_query_holds_is_not_asked_of_the_body() -> None:
    assert scanned(b"action=Login", FORM, target="/index.php?module=Users")
    assert not scanned(b"action=Login", FORM, target="/index.php?module=Other")


def test_a_long_value_is_no_wanted_one_and_costs_no_memory() -> None:
    scan = FormScan(LOGIN, "/index.php", FORM)
    scan.feed(b"module=Users&note=" + b"x" * 100_000)
    assert len(scan._buffer) < 100  # the pair kept is bounded
    scan.feed(b"&action=Login")
    scan.finish()
    assert scan.found


def test_a_name_padded_past_what_a_form_has() -> None:
    """Spaces before a name are dropped (PHP); a name longer than any form's after that is
    judged by its start: a raw body sent as a form (no `=` in it) is no login, a name that
    starts as the wanted one and is cut by a NUL (`action%00…`, PHP reads `action`) is."""
    assert scanned(b"module=Users&" + b"+" * (3 * LONGEST_NAME) + b"action=Login", FORM)
    assert not scanned(b"module=Users&" + b"x" * (2 * LONGEST_NAME), FORM)
    assert not scanned(b'{"notes": "' + b"n" * (3 * LONGEST_NAME) + b'"}', FORM)
    assert scanned(b"module=Users&action%00" + b"x" * (2 * LONGEST_NAME) + b"=Login", FORM)


HEAD = 'Content-Disposition: form-data; name="action"'


@pytest.mark.parametrize(
    ("head_end", "found"),
    [
        ("\r\n", True),  # the empty line
        ("\n", True),
        ("\x00\r\n", True),  # empty to PHP as a C string
        ("X-Note: " + "x" * 5112 + "\n", True),  # PHP's 5 KiB buffer cuts it: its rest ends it
        ("X-Note: short\r\n", False),  # `Login` is a header line then
    ],
)
def test_a_head_ended_where_php_may_end_it(head_end: str, found: bool) -> None:
    body = f"--B\r\n{HEAD}\r\n{head_end}Login\r\n--B--\r\n".encode()
    assert scanned(body, MULTIPART, target="/index.php?module=Users") is found
    for cut in range(0, len(body), 97):
        assert scanned(body, MULTIPART, target="/index.php?module=Users", cut=cut) is found


def test_a_login_line_in_another_parts_content_is_no_login() -> None:
    """A file (its part named `file`) with a line `Login` after an empty one, beside
    `action=Save`: PHP reads action=Save; so does the scan."""
    body = (
        part("module", "Users")
        + part("action", "Save")
        + '--B\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        + "text\r\n\r\nLogin\r\nmore\r\n--B--\r\n"
    ).encode()
    assert not scanned(body, MULTIPART)


def test_a_part_after_a_long_file_is_read() -> None:
    """In a file's content only a line that begins a part is looked for (found in C): the
    part after 100,000 lines of it is read, wherever the chunks are cut."""
    body = (
        part("module", "Users")
        + '--B\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'
        + "Login\r\n--A\r\n" * 50_000
        + part("action", "Login")
        + "--B--\r\n"
    ).encode()
    assert scanned(body, MULTIPART)
    for cut in (1, 4095, len(body) // 2, len(body) - 40, len(body) - 3):
        assert scanned(body, MULTIPART, cut=cut), cut
    pieces = FormScan(LOGIN, "/index.php", MULTIPART)
    for at in range(0, len(body), 65_536):
        pieces.feed(body[at : at + 65_536])
    pieces.finish()
    assert pieces.found


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"a=b&" * MOST_FIELDS, FORM),
        (("--B\r\n\r\nx\r\n" * MOST_FIELDS).encode(), MULTIPART),
    ],
)
def test_a_form_with_more_fields_than_any_is_taken_for_the_login(
    body: bytes, content_type: str
) -> None:
    """Past MOST_FIELDS pairs (or twice as many multipart lines) the scan stops reading and
    takes the form for the login: each costs it CPU, and PHP reads 1,000 by default."""
    assert not scanned(body[: len(body) // 2], content_type)
    assert scanned(body + body[:40], content_type)


def raw_part(head: str, value: bytes) -> bytes:
    return f"--B\r\n{head}\r\n\r\n".encode() + value + b"\r\n"


MODULE = raw_part('Content-Disposition: form-data; name="module"', b"Users")
END = b"--B--\r\n"


@pytest.mark.parametrize(
    ("head", "value", "found"),
    [
        # ASP.NET Core decodes these (it reads the form before the query): the login.
        ('Content-Disposition: form-data; name="=?utf-8?B?YWN0aW9u?="', b"Login", True),
        ('Content-Disposition: form-data; name="=?utf-8?Q?a=63tion?="', b"Login", True),
        ('Content-Disposition: form-data; name="action"', b"\xef\xbb\xbfLogin", True),
        ('Content-Disposition: form-data; name="action"', "Login".encode("utf-16"), True),
        (
            'Content-Disposition: form-data; name="action"\r\nContent-Type: text/plain; '
            "charset=utf-16",
            "Login".encode("utf-16-le"),
            True,
        ),
        # Uploads to the same script: not the login.
        ('Content-Disposition: form-data; name="file"; filename="=?utf-8?B?eA==?="', b"x", False),
        (
            'Content-Disposition: form-data; name="file"; filename="a.csv"\r\n'
            "Content-Type: text/csv; charset=windows-1252",
            b"\xef\xbb\xbfname;Login\r\nLogin",
            False,
        ),
        ('Content-Disposition: form-data; name="action"', b"\xef\xbb\xbfList", False),
    ],
)
def test_a_part_a_framework_decodes_is_read_as_it_decodes_it(
    head: str, value: bytes, found: bool
) -> None:
    body = MODULE + raw_part(head, value) + END
    assert scanned(body, MULTIPART) is found


@pytest.mark.parametrize(
    ("content_type", "found"),
    [
        (f"{FORM}; charset=utf-16", True),
        (f"{FORM}; charset=ISO-8859-1", True),
        (f"{FORM}; charset=UTF-8", False),
        (f'{MULTIPART}; charset="shift_jis"', True),
    ],
)
def test_a_form_in_another_charset_is_taken_for_the_login(content_type: str, found: bool) -> None:
    assert scanned(b"module=Users&action=List", content_type) is found
