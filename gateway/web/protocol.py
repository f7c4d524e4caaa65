"""HTTP/1 on the listener, below the app: which request heads and versions are refused, and
with which status, before any of our code (or the CRM) sees the request.

aiohttp's parser answers every malformed head with 400 and logs the client's line; here a
header field or header section too large is 431 (RFC 6585 §5), a request target too long is
414 (RFC 9110 §15.5.15), a version other than HTTP/1.0 and HTTP/1.1 is 505 (RFC 9110
§15.6.6), and the log names only the status, the kind of error and the peer. Each refusal
is one access-log line and one request in the metrics (decision refused), as the app's own
requests are.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from http import HTTPStatus
from typing import Any, cast

from aiohttp import __version__ as aiohttp_version
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion, HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import ERROR, RequestHandler
from aiohttp.web_urldispatcher import DynamicResource, UrlMappingMatchInfo

from gateway.metrics import record_request
from gateway.web.accesslog import logged_path
from gateway.web.inline import handler_as_task_next, run_handlers_inline
from gateway.web.keys import ACCESS_LOG

log = logging.getLogger("gateway.protocol")

# aiohttp's limits (its defaults but for the header field, which app.py raises): the request
# line's limit and a header field's must differ, as LineTooLong names only the limit it hit.
MAX_LINE_SIZE = 8190
# Both of aiohttp's parsers raise this, and only this, when a head has more than max_headers
# lines: the header section as a whole is too large.
_TOO_MANY_HEADERS = "Too many headers received"


def head_error_status(exc: HttpProcessingError, line_limit: int, field_limit: int) -> int:
    """The status for a request head aiohttp could not parse: 414, 431 or 400."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == line_limit and line_limit != field_limit:
            return 414  # only the request line is held to the line limit
        return 431
    if isinstance(exc, BadHttpMessage) and exc.message == _TOO_MANY_HEADERS:
        return 431
    return 400


def _record_refusal(
    app: web.Application, peer: str | None, status: int, method: str = "-", path: str = "-"
) -> str:
    """One refused request in the metrics and the access log, as gateway.web.scope records
    the app's own, with a fresh request id (returned, for the protocol log line): the peer's
    address (no header of a trusted proxy is read here), the method and path only when the
    head was read (a path without its query, which may carry a token: never the client's
    line), no user, no duration (nothing was timed: the parser refused it as it arrived)."""
    rid = os.urandom(8).hex()  # 16 hex digits, as gateway.web.scope's ids
    record_request("refused", 0.0)
    access = app.get(ACCESS_LOG)
    if access is not None and access.enabled:
        access.record(rid, peer or "-", method, path, status, 0.0, "-", "refused")
    return rid


def _plain(status: int, text: str = "", *, rid: str) -> web.Response:
    # RFC 9110 renamed 414 (RFC 7231's "Request-URI Too Long", which Python still uses).
    phrase = "URI Too Long" if status == 414 else HTTPStatus(status).phrase
    response = web.Response(
        status=status,
        reason=phrase,
        text=f"{status} {phrase}\n{text}",
        headers={"X-Request-Id": rid},  # the access log's id, as every answer has it
    )
    # What follows an unreadable head cannot be framed: never reuse the connection.
    response.force_close()
    return response


class GatewayRequestHandler(RequestHandler):
    """aiohttp's connection handler, with our statuses for heads it cannot parse."""

    def __init__(self, manager: GatewayServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._app = manager.app  # where a refusal is recorded

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        status = head_error_status(exc, self.max_line_size, self.max_field_size)
        # aiohttp hands a placeholder request (UNKNOWN /) for a head it could not parse: its
        # method and path are not known. The exception's text quotes the client's line,
        # which may be a cookie or a token: neither log has it.
        rid = _record_refusal(self._app, request.remote, status)
        log.info(
            "refused a request head from %s: %d (%s) [%s]",
            request.remote,
            status,
            type(exc).__name__,
            rid,
        )
        return _plain(status, rid=rid)

    @property
    def idle(self) -> bool:
        """Waiting for a request, with none received: a graceful stop may close it. Not
        while a request is handled, nor between its head's arrival and its handler's start
        (aiohttp drops what a closing connection receives: the body would be lost). The
        same test aiohttp makes before closing a keep-alive connection."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()


class GatewayRequest(web.Request):
    """aiohttp's request with `app` an attribute, set as the request is made, where aiohttp
    has a property that asks the match info (two calls, seven to ten times a request). The
    gateway's app has no sub-apps: the match info's current app is always this one."""

    ATTRS = web.Request.ATTRS | frozenset(["app"])
    app: web.Application = cast(web.Application, None)  # the property, shadowed: set in each

    # The request's storage asked directly: the mapping mixin's `in` and `get` raise and
    # catch a KeyError for every key not there (most asks), and aiohttp's setitem checks
    # each key for a warning about plain strings (ours are RequestKeys: gateway.web.keys).
    def __contains__(self, key: object) -> bool:
        return key in self._state

    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._state[key] = value

    def clone(self, *args: Any, **kwargs: Any) -> web.Request:
        copied = super().clone(*args, **kwargs)
        copied.app = self.app  # type: ignore[misc]
        return copied


class UnsupportedVersion(web.BaseRequest):
    """A request in an HTTP version we do not speak: answered 505, never handed to the app."""

    asked = HttpVersion(0, 0)  # the version of the request line, set when it is made


_SPOKEN = (HttpVersion10, HttpVersion11)


class GatewayServer(web.Server):
    """aiohttp's server with GatewayRequestHandler, and HTTP/0.9 and HTTP/2.0 request lines
    (which its parser accepts) refused before the app."""

    def __init__(self, plain: web.Server, app: web.Application, **kwargs: Any) -> None:
        self.app = app
        run_handlers_inline(asyncio.get_running_loop())  # no task per request on 3.11
        self._app_handler = OneRoute.of(app) or plain.request_handler
        super().__init__(
            self._handle,
            request_factory=self._make_request,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **kwargs,
        )

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, loop=asyncio.get_running_loop(), **self._kwargs)

    def _make_request(
        self,
        message: RawRequestMessage,
        payload: Any,
        protocol: RequestHandler,
        writer: Any,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        version = message.version
        if message is ERROR:  # a head aiohttp could not parse: refused as before
            handler_as_task_next(self._loop)
        if version is HttpVersion11 or version in _SPOKEN:
            # The app's own factory (the runner's): a GatewayRequest, its app set.
            made = self.app._make_request(
                message, payload, protocol, writer, task, _cls=GatewayRequest
            )
            made.app = self.app  # type: ignore[misc]
            return made
        # Answered as HTTP/1.1 (the highest version we speak below the one asked for,
        # RFC 9110 §2.5), and the connection closed after it.
        spoken = message._replace(version=HttpVersion11, should_close=True)
        request = UnsupportedVersion(
            spoken, payload, protocol, writer, task, asyncio.get_running_loop()
        )
        request.asked = version
        return request

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if type(request) is UnsupportedVersion:
            return _refuse_version(self.app, request)
        return await self._app_handler(request)


def _refuse_version(app: web.Application, request: UnsupportedVersion) -> web.Response:
    shown = f"HTTP/{request.asked.major}.{request.asked.minor}"
    path = logged_path(request.raw_path)
    rid = _record_refusal(app, request.remote, 505, request.method, path)
    log.info("refused a request in %s from %s: 505 [%s]", shown, request.remote, rid)
    return _plain(505, "This gateway speaks HTTP/1.0 and HTTP/1.1.\n", rid=rid)


class OneRoute:
    """`Application._handle` for an app whose one route takes every path and method
    (build_app's `/{tail:.*}`): the same Expect handling and middlewares, but the middleware
    chain built once, not looked up per request; one match info made at start for every
    path the route surely matches (no regular expression, no URL decoded); no walk of the
    router up the path; no `asyncio.get_event_loop()` (on Python 3.11 a getpid system call
    per request); and not the middleware aiohttp adds to set the match info's current app
    (a sub-app's concern: this app has none, and its match info names it already). A path
    the route does not match (`*`, a newline) goes to `Application._handle`, which answers
    it as before."""

    def __init__(self, app: web.Application, resource: DynamicResource) -> None:
        (route,) = resource
        self._app = app
        self._route = route
        self._match = resource._match
        chain = route.handler
        for middleware in reversed(app.middlewares):
            chain = functools.partial(middleware, handler=chain)
        self._chain = chain
        self._fallback = app._handle
        # The route's match for every path it surely matches, made once: frozen, it holds
        # the app (`request.app`) and no per-request value (nothing of ours reads `tail`).
        self._matched = self._info({})

    @classmethod
    def of(cls, app: web.Application) -> OneRoute | None:
        """The direct handler for a frozen app of that shape, else None (aiohttp's own)."""
        resources = app.router.resources()
        try:  # aiohttp's own attributes: a release without them gets aiohttp's handler
            if len(resources) != 1 or app._has_legacy_middlewares or app._subapps:
                return None
            (resource,) = resources
            if type(resource) is not DynamicResource or len(resource) != 1:
                return None
            if next(iter(resource)).method != hdrs.METH_ANY:
                return None
            return cls(app, resource)
        except AttributeError:
            log.warning("aiohttp %s: serving through Application._handle", aiohttp_version)
            return None

    def _info(self, matched: dict[str, str]) -> UrlMappingMatchInfo:
        info = UrlMappingMatchInfo(matched, self._route)
        info.add_app(self._app)
        info.freeze()
        return info

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        assert isinstance(request, web.Request)
        raw = request.raw_path
        if raw[:1] == "/" and "%0" not in raw and "\n" not in raw:
            # `/{tail:.*}` matches it (its decoded path has no newline): no regular
            # expression, no URL decoded, no match info made (about 20k instructions).
            info = self._matched
        else:  # `*`, an absolute URL, an escape that may decode to a newline: as aiohttp
            matched = self._match(request.rel_url.path_safe)
            if matched is None:
                return await self._fallback(request)
            info = self._info(matched)
        request._match_info = info
        if request.headers.get(hdrs.EXPECT):
            response = await info.expect_handler(request)
            await request.writer.drain()
            if response is not None:
                return response
        return await self._chain(request)


class GatewayRunner(web.AppRunner):
    """web.AppRunner whose server is a GatewayServer: the app starts and stops as usual."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        # The arguments aiohttp gives each connection handler (the app's handler_args too).
        settings = dict(plain._kwargs)
        settings.setdefault("max_line_size", MAX_LINE_SIZE)
        # A request body goes to the CRM as the client sent it: aiohttp would decode a gzip
        # one and the CRM get it decoded under `Content-Encoding: gzip` (and shorter or
        # longer than its Content-Length). Bodies read to judge refuse an encoding instead.
        settings["auto_decompress"] = False
        return GatewayServer(plain, self._app, **settings)
