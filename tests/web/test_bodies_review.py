"""Review of the login named in the form (stop 26): cases where the scan of a streamed body
(gateway.signin.formscan) and a body read whole (gateway.signin.identity) disagreed, and the
pipeline's handling of a signed-in user's upload to the login's path."""

from __future__ import annotations

import asyncio
import gzip
import os

import pytest

from gateway.config.signin import Login
from gateway.signin.formscan import FormScan, form_names_login
from tests.conftest import Served
from tests.flows.test_attack_review import register
from tests.flows.test_login_in_form import signed_in
from tests.flows.test_login_in_form_attacks import ACTIONS, checked, php
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.signin_kit import Start
from tests.web.test_bodies_heldback import through
from tests.web.test_guard import ALICE_TOKEN

__all__ = ["php"]  # the fixture: the PHP stand-in CRM

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


async def test_a_signed_in_users_gzip_upload_to_the_login_path_is_refused(
    php: Served, start: Start
) -> None:
    """alice, signed in, gzips bob's login padded past login.max_body (still past it once
    compressed): the scan cannot read it as a CRM that decodes request bodies does (the
    stand-in, an aiohttp server, decodes them): 415, never at the CRM."""
    b = await signed_in(php, start)
    try:
        checked_before = checked(php)
        padding = os.urandom(100_000).hex()
        body = gzip.compress(f"pad={padding}&action=Login&username=bob&password=x".encode())
        assert len(body) > 64 * 1024
        headers = {"Content-Type": FORM, "Content-Encoding": "gzip"}
        async with b.http.post(
            b.gw.url + "/index.php?action=List", data=body, headers=headers, allow_redirects=False
        ) as r:
            assert r.status == 415, await r.text()
        assert checked(php) == checked_before
    finally:
        await b.close()


TOKENS_FROM_THE_OFFICE = """\
networks:
  office: [127.0.0.2/32]
roles:
  admin: {networks: [office]}
users:
  alice: {roles: [admin]}
paths:
  - {path: /**, allow: [token]}
api:
  tokens:
    - {header: Authorization, schemes: [Bearer]}
"""


async def test_an_upload_to_the_login_path_a_rule_refuses_gets_no_100_continue(
    php: Served, start: Start
) -> None:
    """alice's token, from outside the office, announces an upload past login.max_body to
    /index.php and waits for 100 Continue: it streams unread (HeldBack), so nothing is read
    before the rules, and the refusal comes first: no 100 Continue, no body asked for."""
    gw = await start(php.url, login=PHP_LOGIN, policy=TOKENS_FROM_THE_OFFICE)
    await register(gw.served, "alice", ALICE_TOKEN)
    head = (
        "POST /index.php?action=Save HTTP/1.1\r\nHost: crm\r\n"
        f"Authorization: Bearer {ALICE_TOKEN}\r\nContent-Type: {FORM}\r\n"
        "Content-Length: 100000\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.served.port)
    try:
        writer.write(head.encode())
        status_line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 403"), status_line
    assert php.app[ACTIONS] == []


@pytest.mark.parametrize(
    "chunks",
    [
        [b"pad=" + b"p" * 1000, b"&u=bob&p=guess&action=Login", b"x", b"&end=1"],
        [b"pad=" + b"p" * 1000 + b"&u=bob&p=guess&action=Login" + b"x" * 500 + b"&end=1"],
    ],
)
async def test_no_prefix_of_what_the_crm_is_given_names_the_login(chunks: list[bytes]) -> None:
    """A CRM may run a body cut short (mod_php keeps its whole 16 KiB blocks): a pair whose
    value begins with the login's (`action=Loginx…`) names the login in such a body, so the
    bytes from its start on never go, and the body is refused."""
    given, refused = await through(chunks)
    assert refused
    assert b"action=Login" not in b"".join(given)
