"""What detect-login must refuse with a clear sentence and nothing written: a CRM that
answers 500, a page with no form, a page with two login forms, a login form sent as
multipart, and a server that takes the connection and never answers; and what it must warn
of: a login routed by hidden fields (SuiteCRM's action=Authenticate)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from tests.crms.common import new_app, page

TWO_FORMS = (
    "<h1>Portal</h1>"
    '<form method="post" action="/staff/login"><input name="username">'
    '<input type="password" name="password"><button>Staff login</button></form>'
    '<form method="post" action="/clients/login"><input type="email" name="email">'
    '<input type="password" name="pin"><button>Client login</button></form>'
    '<form method="get" action="/search"><input name="q"></form>'
)


async def broken(request: web.Request) -> web.Response:
    return page("Error", "<p>Fatal error: Uncaught PDOException</p>", status=500)


async def blank(request: web.Request) -> web.Response:
    return page("Welcome", "<p>Nothing to sign in to here.</p><a href='/about'>About</a>")


async def two_forms(request: web.Request) -> web.Response:
    return page("Portal", TWO_FORMS)


async def multipart(request: web.Request) -> web.Response:
    return page(
        "Log in",
        '<form method="post" action="/upload-login" enctype="multipart/form-data">'
        '<input name="username"><input type="password" name="password"><button>Go</button></form>',
    )


async def suite(request: web.Request) -> web.Response:
    """SuiteCRM's login: posted to index.php, its route in hidden fields."""
    return page(
        "SuiteCRM",
        '<form action="index.php" method="post" name="DetailView">'
        '<input type="hidden" name="module" value="Users">'
        '<input type="hidden" name="action" value="Authenticate">'
        '<input type="text" name="user_name"><input type="password" name="username_password">'
        '<input type="submit" name="Login" value="Log In"></form>',
    )


def quirks_app() -> web.Application:
    app = new_app()
    app.router.add_get("/broken", broken)
    app.router.add_get("/blank", blank)
    app.router.add_get("/portal", two_forms)
    app.router.add_get("/multipart", multipart)
    app.router.add_get("/suite/", suite)
    return app


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A port on 127.0.0.1 that accepts connections, reads what comes and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
