"""Audit events about a request: who, from where, on what, with which request id, taken
from the request itself so that every page and step records them the same way."""

from __future__ import annotations

from aiohttp import web

from gateway.web.keys import AUDIT, USER, VIEW


def audit_event(request: web.Request, event: str, *, outcome: str, **fields: object) -> None:
    """An audit event about a request: who, from where, on what, with which request id."""
    audit_about(request, request.path, request.method, event, outcome=outcome, **fields)


def audit_about(
    request: web.Request, path: str, method: str, event: str, *, outcome: str, **fields: object
) -> None:
    """An audit event about the request `method` `path` that this request asks about (the
    forward-auth endpoint's original request), with this request's who, where and id."""
    view = request[VIEW]
    fields.setdefault("user", request.get(USER, ""))
    request.app[AUDIT].record(
        event,
        outcome,
        ip=view.ip,
        path=path[:512],
        method=method,
        request_id=view.request_id,
        user_agent=request.headers.get("User-Agent", "")[:256],
        **fields,
    )
