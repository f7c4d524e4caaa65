"""gateway.web.bodies.HeldBack: a body streamed through its scan gives the CRM every byte
when it names no login, and never its last chunk when it does (the CRM, short of the whole
body, never runs the request). Over a real aiohttp StreamReader fed as the server feeds it."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol

from gateway.config.signin import Login
from gateway.errors import LoginInBody
from gateway.signin.formscan import FormScan
from gateway.web.bodies import HeldBack

LOGIN = Login(mode="upstream", path="/index.php?action=Login", username_field="u")
FORM = "application/x-www-form-urlencoded"


async def through(chunks: list[bytes]) -> tuple[list[bytes], bool]:
    """What HeldBack gives of a body arriving in `chunks` (each after a turn of the loop),
    and whether it refused the body."""
    loop = asyncio.get_running_loop()
    protocol = BaseProtocol(loop)
    protocol.connection_made(asyncio.Transport())  # connected; the chunks never fill it
    source = StreamReader(protocol, 2**16, loop=loop)

    async def arrive() -> None:
        for chunk in chunks:
            await asyncio.sleep(0)
            source.feed_data(chunk)
        source.feed_eof()

    feeding = asyncio.create_task(arrive())
    held = HeldBack(source, FormScan(LOGIN, "/index.php", FORM))
    given: list[bytes] = []
    try:
        while chunk := await held.readany():
            given.append(chunk)
    except LoginInBody:
        return given, True
    finally:
        await feeding
    return given, False


async def test_a_body_naming_no_login_goes_whole_and_in_order() -> None:
    chunks = [b"pad=" + b"p" * 1000, b"&action=Save", b"&note=", b"x" * 500]
    given, refused = await through(chunks)
    assert (b"".join(given), refused) == (b"".join(chunks), False)


@pytest.mark.parametrize(
    "chunks",
    [
        [b"pad=" + b"p" * 1000, b"&u=bob&p=guess&action=Log", b"in"],  # named by its end
        [b"pad=ppp&u=bob&p=guess&action=Login"],  # one chunk: nothing is given
        [b"action=Login", b"&u=bob", b"&p=guess", b"&pad=" + b"p" * 1000],  # named early
    ],
)
async def test_the_last_chunk_never_goes_when_the_body_names_the_login(
    chunks: list[bytes],
) -> None:
    given, refused = await through(chunks)
    assert refused
    assert len(b"".join(given)) < len(b"".join(chunks))
    assert chunks[-1] not in given
