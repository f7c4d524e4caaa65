"""The scope every request gets first: who is asking (the client's address as the trusted
proxies say, the request id), our errors answered as a page or JSON (API clients never get a
page), and one access-log line and one metric when it ends."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.clock import Clock
from gateway.config.model import Config
from gateway.errors import AccessDenied, BadRequest, ExpectationFailed, HttpError, UpstreamCut
from gateway.i18n import negotiate
from gateway.metrics import record_request
from gateway.web.accesslog import AccessLog, logged_path
from gateway.web.forwarding import (
    ClientView,
    check_header_bytes,
    client_ip,
    forwarded_proto,
    plain_peer,
    request_id,
    wants_html,
)
from gateway.web.keys import (
    DECISION,
    USER,
    VIEW,
    WAITS_FOR_CONTINUE,
)
from gateway.web.original import asked_by_nginx
from gateway.web.pages.errors import error_response
from gateway.web.pages.forwardauth import REASON_HEADER
from gateway.web.pages.render import language

log = logging.getLogger("gateway")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _view(request: web.Request, config: Config, fresh_id: str) -> ClientView:
    headers = request.headers
    check_header_bytes(headers)
    peer = plain_peer(request.remote or "")
    if not config.trusted_proxies:
        # No proxy is trusted (client_ip's first answer): the peer is the client, the
        # scheme the connection's, the request id ours. Made here, as most requests are.
        return ClientView(peer, peer, request.scheme, headers.get("Host", ""), False, fresh_id)
    header = config.trusted_proxy_header
    ip, trusted, chain = client_ip(peer, headers, config.trusted_proxies, header)
    return ClientView(
        ip=ip,
        peer=peer,
        proto=forwarded_proto(headers, trusted, request.scheme, header),
        host=headers.get("Host", ""),
        peer_trusted=trusted,
        request_id=request_id(headers, trusted, fresh_id),
        chain=chain,
    )


_IDS_AT_ONCE = 256  # request ids drawn from the OS in one call: 2 KiB of random bytes


class RequestIds:
    """New request ids, 16 hex digits of the OS's randomness as before, drawn 256 at a time
    (one system call for 256 requests instead of one each). One pool per app: a worker builds
    its app after the fork (gateway.web.server), so no two processes share a pool."""

    __slots__ = ("_pool",)

    def __init__(self) -> None:
        self._pool: list[str] = []

    def fresh(self) -> str:
        if not self._pool:
            pool = os.urandom(8 * _IDS_AT_ONCE).hex()
            self._pool.extend(pool[i : i + 16] for i in range(0, len(pool), 16))
        return self._pool.pop()


def scope_middleware(config: Config, clock: Clock, access: AccessLog | None) -> Middleware:
    """The scope middleware of one app (its config, clock and access log, as build_app puts
    them in the app: not looked up for each request), with the app's own pool of request
    ids."""
    fresh_id = RequestIds().fresh

    @web.middleware
    async def scope(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Who is asking (address, request id), our errors as pages or JSON, one access-log line."""
        # The request's task's loop: asyncio.get_running_loop() makes a getpid system call
        # on every use on Python 3.11.
        call_soon = request.task.get_loop().call_soon
        started = clock.monotonic()
        rid = fresh_id()
        status = 0
        response: web.StreamResponse | None = None
        request[DECISION] = ""
        request[USER] = ""  # set, like DECISION, so reading it never raises and catches a KeyError
        try:
            try:
                request[VIEW] = view = _view(request, config, rid)
                rid = view.request_id
                response = await handler(request)
            except HttpError as exc:
                if not request[DECISION] or exc.status >= 500:
                    request[DECISION] = "error" if exc.status >= 500 else "refused"
                response = _error(request, config, exc, rid)
            except web.HTTPException:
                raise
            except UpstreamCut as cut:
                # Rare, and free when not raised: the status the client got before the cut
                # (decision upstream_cut, set by the proxy), not the 499 of a client that left.
                status = cut.status
                raise
            except Exception:
                log.exception("unexpected error on %s %s [%s]", request.method, request.path, rid)
                request[DECISION] = "error"
                response = _error(request, config, HttpError("unexpected"), rid)
            status = response.status
            if not response.prepared:
                response.headers["X-Request-Id"] = rid
            return response
        finally:
            seconds = clock.monotonic() - started
            # Recorded once the response is written (the handler's task writes it before it
            # next waits): the metric and the log line are not the client's wait, and they
            # say what was sent (a CRM answer refused as it was written is a 502).
            call_soon(_recorded, access, rid, status, seconds, request, response)

    return scope


def _recorded(
    access: AccessLog | None,
    rid: str,
    status: int,
    seconds: float,
    request: web.Request,
    response: web.StreamResponse | None,
) -> None:
    """One answered request in the metrics and the access log (status 499: the client left
    before an answer; a CRM answer cut mid-body keeps its status, decision upstream_cut; the
    status and decision of `response` as it was sent: gateway.web.proxy's Relayed sends a
    502 for a CRM head it may not send on, decision error)."""
    if response is not None:
        status = response.status
    decision = request[DECISION] or ("gone" if not status else "forward")
    record_request(decision, seconds)
    if access is not None and access.enabled:
        seen = request.get(VIEW)
        ip = seen.ip if seen else request.remote or ""
        path = logged_path(request.raw_path)
        user = request[USER] or "-"
        access.record(rid, ip, request.method, path, status or 499, seconds, user, decision)


def _error(request: web.Request, config: Config, exc: HttpError, rid: str) -> web.Response:
    status = exc.status
    extra: dict[str, str] = {}
    if _nginx_would_fail(request, config, status):
        # Refused before the forward-auth endpoint ran (a header that is not UTF-8: nginx
        # copies the client's bytes into X-Original-URI): nginx's auth_request would make
        # its own 500 of a 400. A 403 with the reason, as the endpoint answers nginx.
        status, extra = 403, {REASON_HEADER: exc.reason, "Cache-Control": "no-store"}
    level = logging.WARNING if status >= 500 else logging.INFO
    log.log(
        level,
        "%s %s -> %d %s: %s [%s]",
        request.method,
        request.path,
        status,
        exc.reason,
        exc.detail,
        rid,
    )
    response = error_response(
        status=status,
        reason=exc.reason,
        request_id=rid,
        # API clients never get a page, whatever their Accept says.
        html=wants_html(request.headers) and not (isinstance(exc, AccessDenied) and exc.api),
        branding=config.branding,
        # The language the visitor chose, else their browser's (no view: refused too early).
        language=language(request)
        if VIEW in request
        else negotiate(request.headers.get("Accept-Language", "")),
        headers=extra or None,
    )
    if isinstance(exc, BadRequest | ExpectationFailed) or request.get(WAITS_FOR_CONTINUE):
        # What we refused to read may also be badly framed, or is a body its client holds
        # back for a 100 Continue (or another expectation) that never comes
        # (gateway.web.bodies): never reuse the connection, or the client's next request
        # would be read as that body.
        response.force_close()
    return response


def _nginx_would_fail(request: web.Request, config: Config, status: int) -> bool:
    """A refusal of nginx's question to the forward-auth endpoint other than 401 and 403."""
    return (
        400 <= status < 500
        and status not in (401, 403)
        and config.forward_auth is not None
        and request.path == f"{config.path_prefix}auth"
        and asked_by_nginx(request.headers)
    )
