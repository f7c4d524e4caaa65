"""Review of the login named in the form (stop 26): cases where the scan of a streamed body
(gateway.signin.formscan) and a body read whole (gateway.signin.identity) disagreed, and the
pipeline's handling of a signed-in user's upload to the login's path."""

from __future__ import annotations

import pytest

from gateway.config.signin import Login
from gateway.signin.formscan import FormScan
from gateway.signin.identity import form_names_login

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=B"


def part(name: str, value: str) -> str:
    return f'--B\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'


def scanned(login: Login, body: bytes, content_type: str) -> bool:
    """Whether the scan finds the login, fed the body one byte at a time."""
    scan = FormScan(login, "/index.php", content_type)
    for at in range(len(body)):
        scan.feed(body[at : at + 1])
    scan.finish()
    return scan.found


UNDERSCORED = Login(mode="upstream", path="/index.php?login_module=Users&action=Login")
EMPTY_VALUE = Login(mode="upstream", path="/index.php?action=Login&remember=")
CASES = [
    # PHP reads `.`, a space and an unclosed `[` in a name as `_`
    pytest.param(
        UNDERSCORED,
        (part("login.module", "Users") + part("action", "Login") + "--B--\r\n").encode(),
        MULTIPART,
        id="multipart-dot-for-underscore",
    ),
    pytest.param(
        UNDERSCORED,
        (part("login module", "Users") + part("action", "Login") + "--B--\r\n").encode(),
        MULTIPART,
        id="multipart-space-for-underscore",
    ),
    # a name without `=` is the name with the empty value
    pytest.param(EMPTY_VALUE, b"u=a&remember&action=Login", FORM, id="urlencoded-bare-name"),
    pytest.param(EMPTY_VALUE, b"action=Login&remember", FORM, id="urlencoded-bare-name-last"),
]


@pytest.mark.parametrize(("login", "body", "content_type"), CASES)
def test_the_scan_finds_what_a_body_read_whole_finds(
    login: Login, body: bytes, content_type: str
) -> None:
    assert form_names_login(login, "/index.php", body, content_type)
    assert scanned(login, body, content_type)
