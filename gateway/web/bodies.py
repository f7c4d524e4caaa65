"""Request bodies the gateway must read whole before it decides (the CRM's login form, a
POST whose fields could change the method judged): read up to a limit, 413 beyond it.
Every other body streams."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import PayloadTooLarge

FORM_LIMIT = 64 * 1024  # a POST read to look for `_method`: forms of this kind are small


async def read_whole(request: web.Request, limit: int, *, reason: str) -> bytes:
    """The whole body, or PayloadTooLarge (`reason` for the log and the JSON body)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"a body of {request.content_length} bytes", reason=reason)
    body = await request.content.read(limit + 1)
    while len(body) <= limit and not request.content.at_eof():
        more = await request.content.read(limit + 1 - len(body))
        if not more:
            break
        body += more
    if len(body) > limit:
        raise PayloadTooLarge(f"a body over {limit} bytes", reason=reason)
    return body
