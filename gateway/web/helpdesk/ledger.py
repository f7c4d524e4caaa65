"""The console's SMS ledger: a quarter's messages and their cost per user or group (the bill
of gateway.admin.ledger, as `crm-gateway sms-usage` prints it), as a table, a chart of the
cost per line and a chart of the last quarters' totals, and the same bill as CSV."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import urlencode

from aiohttp import web

from gateway.admin.ledger import (
    TOTAL,
    amount,
    bill,
    bill_csv,
    quarter_bounds,
    quarter_of,
    quarters_before,
)
from gateway.config.console import Console
from gateway.errors import BadRequest
from gateway.stores import LedgerRow
from gateway.web.audit import audit_event
from gateway.web.helpdesk import charts
from gateway.web.helpdesk.access import Admin
from gateway.web.helpdesk.inputs import query_fields
from gateway.web.helpdesk.users import console_page
from gateway.web.pages.render import security_headers, translator
from gateway.web.signin import SignIn

FIELDS = frozenset({"quarter", "by", "channel"})
CHANNELS = ("sms", "email", "all")
QUARTERS = 4  # the totals chart: this quarter and the three before


async def _read(
    request: web.Request, signin: SignIn, console: Console
) -> tuple[str, str, str, list[LedgerRow]]:
    q = query_fields(
        request.rel_url.raw_query_string, request.query.items(), FIELDS, console.max_query
    )
    quarter = (q.get("quarter", "") or quarter_of(signin.clock.now())).strip().upper()
    by, channel = q.get("by", "user") or "user", q.get("channel", "sms") or "sms"
    bounds = quarter_bounds(quarter)
    if bounds is None or by not in ("user", "group") or channel not in CHANNELS:
        raise BadRequest(f"quarter {quarter[:10]!r} by {by[:10]!r}", reason="tampered")
    rows = await signin.durable.messages(*bounds)
    return quarter, by, channel, _of(rows, channel)


def _of(rows: list[LedgerRow], channel: str) -> list[LedgerRow]:
    return rows if channel == "all" else [r for r in rows if r.channel == channel]


async def ledger_page(
    request: web.Request, signin: SignIn, console: Console, admin: Admin
) -> web.StreamResponse:
    quarter, by, channel, rows = await _read(request, signin, console)
    t = translator(request)
    lines = bill(rows, by)
    drawn = []
    for currency in sorted({line[4] for line in lines}):
        mine = [
            (w[:24], c, f"{amount(c)} {cur}")
            for w, _, _, c, cur in lines
            if cur == currency and w != TOTAL
        ]
        drawn.append(
            charts.bars(
                f"chart-cost-{currency.lower()}",
                t("helpdesk.sms.cost_chart", quarter=quarter, currency=currency),
                t(
                    "helpdesk.sms.cost_description",
                    quarter=quarter,
                    currency=currency,
                    lines=len(mine),
                ),
                "s-cost",
                mine,
            )
        )
    currency = min((line[4] for line in lines), default="EUR")  # the first, when several
    totals = []
    for earlier in quarters_before(quarter, QUARTERS):
        bounds = quarter_bounds(earlier)
        assert bounds is not None
        theirs = [
            r
            for r in _of(await signin.durable.messages(*bounds), channel)
            if r.currency == currency
        ]
        totals.append((earlier, sum((Decimal(r.cost) for r in theirs), Decimal(0)), len(theirs)))
    drawn.append(
        charts.bars(
            "chart-quarters",
            t("helpdesk.sms.quarters_chart", count=QUARTERS, currency=currency),
            t("helpdesk.sms.quarters_description", count=QUARTERS),
            "s-quarters",
            [(q, cost, f"{amount(cost)} ({n})") for q, cost, n in totals],
        )
    )
    shown = [
        {
            "who": w,
            "sent": ok,
            "failed": bad,
            "cost": amount(c),
            "currency": cur,
            "total": w == TOTAL,
        }
        for w, ok, bad, c, cur in lines
    ]
    return console_page(
        request,
        admin,
        "sms.html",
        t("helpdesk.sms.title"),
        "sms",
        quarter=quarter,
        by=by,
        channel=channel,
        channels=CHANNELS,
        lines=shown,
        charts=drawn,
        csv=urlencode({"quarter": quarter, "by": by, "channel": channel}),
        quarters=quarters_before(quarter_of(signin.clock.now()), 8)[::-1],
    )


async def ledger_csv(
    request: web.Request, signin: SignIn, console: Console, admin: Admin
) -> web.StreamResponse:
    quarter, by, channel, rows = await _read(request, signin, console)
    audit_event(
        request, "admin.ledger_exported", outcome="ok", by=admin.name, reason=quarter, per=by
    )
    headers = security_headers("")
    headers["Content-Disposition"] = f'attachment; filename="sms-{quarter}-{by}-{channel}.csv"'
    return web.Response(
        text=bill_csv(bill(rows, by), by), content_type="text/csv", charset="utf-8", headers=headers
    )
