"""The console's activity page: the audit trail searched by user, event, outcome, address and
time, newest first a page at a time, and charts of sign-ins, failed codes and address
denials per UTC hour or day, counted by the store (`audit_counts`) over the same user and
address. A field that cannot be read is said beside the form, and audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from gateway.admin import trail
from gateway.config.console import Console
from gateway.errors import BadArgument, BadRequest
from gateway.stores import AuditQuery
from gateway.web.audit import audit_event
from gateway.web.helpdesk import charts
from gateway.web.helpdesk.access import Admin
from gateway.web.helpdesk.inputs import query_fields
from gateway.web.helpdesk.users import console_page
from gateway.web.pages.render import translator, when
from gateway.web.signin import SignIn

PER_PAGE = 50
# The charts: (id, css class of its colour, the events it counts).
SERIES = (
    ("signins", "s-signin", ("signin.completed",)),
    ("failed_codes", "s-failed", ("challenge.failed",)),
    ("denials", "s-denied", ("ip.denied",)),
)
PER = {"hour": 3600.0, "day": 86400.0}
SHOWN = {"hour": 48, "day": 30}  # buckets shown when no time is given
MOST = {"hour": 24 * 14, "day": 400}  # buckets one chart may have
FIELDS = frozenset({"user", "event", "outcome", "ip", "since", "until", "per", "before"})
# The times a search may name: from the epoch to the last second of year 9999 (UTC). Outside
# them a chart's first bucket would be a day no calendar has (year 0), and no event is there.
EARLIEST, LATEST = 0.0, 253402300799.0


async def activity(
    request: web.Request, signin: SignIn, console: Console, admin: Admin
) -> web.StreamResponse:
    q = query_fields(
        request.rel_url.raw_query_string, request.query.items(), FIELDS, console.max_query
    )
    t = translator(request)
    per = q.get("per", "hour") or "hour"
    outcome = q.get("outcome", "")
    before = q.get("before", "")
    if per not in PER or (outcome and outcome not in trail.OUTCOMES):
        raise BadRequest(f"per {per[:10]!r}, outcome {outcome[:10]!r}", reason="tampered")
    if before and not (before.isascii() and before.isdigit() and len(before) < 19):
        raise BadRequest(f"before {before[:20]!r}", reason="tampered")
    now = signin.clock.now()
    read = _query(q, now, per)
    if isinstance(read, str):
        audit_event(request, "admin.bad_input", outcome="refused", reason=read, by=admin.name)
        return _page(request, admin, q, per, status=400, error=t(f"helpdesk.bad.{read}"))
    query, size = read
    found = await signin.durable.audit_events(
        AuditQuery(
            since=query.since,
            until=query.until,
            user=query.user,
            names=query.names,
            ip=query.ip,
            outcome=outcome,
            before_id=int(before or 0),
            limit=PER_PAGE + 1,
            newest_first=True,
        )
    )
    rows = [
        {
            "id": event_id,
            "when": when(e.time),
            "event": e.name,
            "outcome": e.outcome,
            "user": e.user,
            "ip": e.ip,
            "reason": e.reason,
            "by": str(dict(e.details).get("by", "")),
        }
        for event_id, e in found[:PER_PAGE]
    ]
    older = ""
    if len(found) > PER_PAGE:
        older = urlencode(
            {**{k: v for k, v in q.items() if k != "before"}, "before": rows[-1]["id"]}
        )
    since = query.since or now - SHOWN[per] * size
    until = min(query.until, now + 1)
    drawn = await _charts(signin, t, query, since, until, size, per)
    return _page(request, admin, q, per, rows=rows, older=older, drawn=drawn)


def _query(q: dict[str, str], now: float, per: str) -> tuple[AuditQuery, float] | str:
    """The search the fields ask for and the charts' bucket size, or the field that could
    not be read."""
    readers: dict[str, Callable[[str], Any]] = {
        "user": trail.user_name,
        "ip": trail.address,
        "event": lambda text: trail.event_names([text]),
        "since": lambda text: trail.moment(text, now),
        "until": lambda text: trail.moment(text, now),
    }
    read: dict[str, Any] = {}
    for field, parse in readers.items():
        text = q.get(field, "")
        if text.strip():
            try:
                read[field] = parse(text)
            except BadArgument:
                return field
            if field in ("since", "until") and not EARLIEST <= read[field] <= LATEST:
                return field
    since, until = read.get("since", 0.0), read.get("until", float("inf"))
    if since >= until:
        return "until"
    size = PER[per]
    if since and (min(until, now) - since) / size > MOST[per]:
        return "range"
    query = AuditQuery(
        since=since,
        until=until,
        user=read.get("user", ""),
        names=read.get("event", ()),
        ip=read.get("ip", ""),
    )
    return query, size


async def _charts(
    signin: SignIn,
    t: Any,
    query: AuditQuery,
    since: float,
    until: float,
    size: float,
    per: str,
) -> list[charts.Chart]:
    names = tuple(name for _, _, events in SERIES for name in events)
    counted = await signin.durable.audit_counts(
        AuditQuery(since=since, until=until, user=query.user, ip=query.ip, names=names), size
    )
    starts = charts.buckets(since, until, size)
    drawn = []
    for series, css, events in SERIES:
        per_bucket = dict.fromkeys(starts, 0)
        for start, name, count in counted:
            if name in events and start in per_bucket:
                per_bucket[start] += count
        total = sum(per_bucket.values())
        title = t(f"helpdesk.chart.{series}")
        description = t(
            f"helpdesk.chart.{per}_description",
            what=title,
            total=total,
            first=charts.bucket_label(starts[0], size) if starts else "",
            last=charts.bucket_label(starts[-1], size) if starts else "",
        )
        drawn.append(
            charts.columns(
                f"chart-{series}", title, description, css, list(per_bucket.items()), size
            )
        )
    return drawn


def _page(
    request: web.Request,
    admin: Admin,
    q: dict[str, str],
    per: str,
    *,
    status: int = 200,
    error: str = "",
    rows: list[dict[str, Any]] | None = None,
    older: str = "",
    drawn: list[charts.Chart] | None = None,
) -> web.Response:
    t = translator(request)
    response = console_page(
        request,
        admin,
        "activity.html",
        t("helpdesk.activity.title"),
        "activity",
        error=error,
        rows=rows or [],
        older=older,
        charts=drawn or [],
        q=q,
        per=per,
        outcomes=trail.OUTCOMES,
    )
    response.set_status(status)
    return response
