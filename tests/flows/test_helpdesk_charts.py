"""The console's charts and CSV in real headless Chromium, held against what they draw from:
the audit trail's sign-ins, failed codes and address denials per hour and per day, the
events paged newest first, and the SMS ledger's bill per quarter and per user or group (Quixx:
€0.10 a message, billed quarterly) as a table, bars and a downloaded CSV."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal
from pathlib import Path

from playwright.async_api import Browser, Page, expect

from gateway.admin.ledger import TOTAL, amount, bill, bill_csv, quarter_bounds
from gateway.model import AuditEvent
from gateway.stores import AuditQuery, LedgerRow
from gateway.web.helpdesk.charts import bucket_label
from gateway.web.keys import AUDIT
from gateway.web.pages.render import when
from tests import browser as chromium
from tests.helpdesk_kit import ADMIN, gw, shoot, sign_in
from tests.signin_kit import SignInGateway

__all__ = ["gw"]  # the fixtures, by name

browser = chromium.browser
HOUR, DAY = 3600.0, 86400.0
SERIES = {
    "chart-signins": ("signin.completed",),
    "chart-failed_codes": ("challenge.failed",),
    "chart-denials": ("ip.denied",),
}


async def fill_trail(gw: SignInGateway) -> None:
    """Three weeks of made-up activity before now, uneven on purpose, and noise the charts
    must not count (other events, a denial in the future)."""
    now = gw.clock.now()
    events = []
    for n in range(400):
        back = (n * 7919) % (21 * 86400)  # spread over three weeks, not evenly
        name = ("signin.completed", "challenge.failed", "ip.denied", "signin.crm_ok")[n % 4]
        user = ("carol", "dave", "")[n % 3] if name != "ip.denied" else ""
        ip = f"192.0.2.{n % 5}" if name != "ip.denied" else f"203.0.113.{n % 7}"
        events.append(AuditEvent(now - back, name, "ok", user=user, ip=ip))
    events.append(AuditEvent(now + 2 * HOUR, "ip.denied", "denied", ip="203.0.113.1"))
    await gw.signin.durable.add_audit_events(events)


async def drawn(page: Page, chart: str) -> dict[str, str]:
    """The columns or bars of one chart as the page has them: bucket or row → its number."""
    found = {}
    for bar in await page.locator(f"#{chart} rect.bar").all():
        found[await bar.get_attribute("data-bucket") or ""] = (
            await bar.get_attribute("data-count") or ""
        )
    return found


async def counted(page: Page, chart: str) -> dict[str, int]:
    return {bucket: int(count) for bucket, count in (await drawn(page, chart)).items()}


async def expected(
    gw: SignInGateway, names: tuple[str, ...], since: float, until: float, size: float, **q: str
) -> Counter[str]:
    """Counted here from the events themselves, not by the store's audit_counts."""
    found = await gw.signin.durable.audit_events(
        AuditQuery(since=since, until=until, names=names, limit=100_000, **q)  # type: ignore[arg-type]
    )
    return Counter(bucket_label(e.time - e.time % size, size) for _, e in found)


async def test_activity_charts_match_the_audit_trail_per_hour_and_per_day(
    browser: Browser, gw: SignInGateway, tmp_path: Path
) -> None:
    await fill_trail(gw)
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    try:
        await sign_in(page, gw, "alice")
        await gw.served.app[AUDIT].flush()  # her own sign-in is in the trail before the page
        now = gw.clock.now()
        await page.goto(f"{gw.url}{ADMIN}activity")
        since = now - 48 * HOUR
        for chart, names in SERIES.items():
            columns = await counted(page, chart)
            assert len(columns) in (48, 49)  # every hour, the empty ones too
            want = await expected(gw, names, since, now + 1, HOUR)
            assert {k: v for k, v in columns.items() if v} == dict(want), chart
            assert sum(columns.values()) > 0
        await shoot(page, "activity", tmp_path)

        # Per day over two weeks, for one user and one address: the same filters hold.
        await page.get_by_label("User", exact=True).fill("Carol")
        await page.get_by_label("Address", exact=True).fill("192.0.2.1")
        await page.get_by_label("From", exact=True).fill("14d")
        await page.get_by_label("Charts per", exact=True).select_option("day")
        await page.get_by_role("button", name="Search").click()
        await expect(page).to_have_url(re.compile(r"per=day"))
        since = now - 14 * DAY
        for chart, names in SERIES.items():
            columns = await counted(page, chart)
            want = await expected(gw, names, since, now + 1, DAY, user="carol", ip="192.0.2.1")
            assert {k: v for k, v in columns.items() if v} == dict(want), chart
        description = await page.locator("#chart-signins-d").text_content()
        total = sum((await counted(page, "chart-signins")).values())
        assert description is not None and f"{total} in all" in description
    finally:
        await context.close()


async def test_the_events_are_paged_newest_first_without_gaps(
    browser: Browser, gw: SignInGateway
) -> None:
    await fill_trail(gw)
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await sign_in(page, gw, "alice")
        await page.goto(f"{gw.url}{ADMIN}activity?event=challenge.failed")
        shown: list[str] = []
        while True:
            rows = page.locator("table.events tbody tr")
            shown += [await row.locator("td").first.inner_text() for row in await rows.all()]
            older = page.get_by_role("link", name="Older events")
            if not await older.count():
                break
            await older.click()
        stored = await gw.signin.durable.audit_events(
            AuditQuery(names=("challenge.failed",), limit=10_000, newest_first=True)
        )
        assert len(shown) == len(stored) == 100
        assert shown == [when(e.time) for _, e in stored]  # newest first: by id, as stored
    finally:
        await context.close()


def ledger_rows(gw: SignInGateway) -> list[LedgerRow]:
    """Quixx's €0.10 a message: this quarter and the one before, some failed, two groups."""
    bounds = quarter_bounds("2027Q1")
    earlier = quarter_bounds("2026Q4")
    assert bounds and earlier
    rows = []
    for n in range(23):
        user = ("carol", "dave", "erik")[n % 3]
        groups = {"carol": "customers", "dave": "customers,vip", "erik": "staff"}[user]
        status = "failed" if n % 5 == 4 else "sent"
        cost = "0.10" if status == "sent" else "0"
        rows.append(
            LedgerRow(bounds[0] + n * 1800, user, groups, "sms", "quixx", status, 1, cost, "EUR")
        )
    for n in range(4):
        rows.append(
            LedgerRow(
                earlier[0] + n * DAY, "carol", "customers", "sms", "quixx", "sent", 1, "0.10", "EUR"
            )
        )
    rows.append(
        LedgerRow(bounds[0] + 99, "carol", "customers", "email", "smtp", "sent", 1, "0", "EUR")
    )
    return rows


async def test_the_sms_ledger_table_chart_and_csv_match_the_bill(
    browser: Browser, gw: SignInGateway, tmp_path: Path
) -> None:
    rows = ledger_rows(gw)
    for row in rows:
        await gw.signin.durable.record_message(row)
    bounds = quarter_bounds("2027Q1")
    assert bounds
    quarter = [r for r in rows if bounds[0] <= r.time < bounds[1] and r.channel == "sms"]
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    try:
        await sign_in(page, gw, "alice")
        await page.goto(f"{gw.url}{ADMIN}sms")
        lines = bill(quarter, "user")
        table = [
            [cell.strip() for cell in await row.locator("th, td").all_inner_texts()]
            for row in await page.locator("table.bill tbody tr").all()
        ]
        assert table == [
            ["Total" if who == TOTAL else who, str(ok), str(bad), amount(cost), cur]
            for who, ok, bad, cost, cur in lines
        ]
        assert table[-1] == ["Total", "19", "4", "1.90", "EUR"]
        bars = await drawn(page, "chart-cost-eur")
        assert {who: Decimal(cost) for who, cost in bars.items()} == {
            who: cost for who, _, _, cost, _ in lines if who != TOTAL
        }
        quarters = page.locator("#chart-quarters rect.bar")
        assert [await q.get_attribute("data-bucket") for q in await quarters.all()] == [
            "2026Q2",
            "2026Q3",
            "2026Q4",
            "2027Q1",
        ]
        assert [
            Decimal(await q.get_attribute("data-count") or "") for q in await quarters.all()
        ] == [
            Decimal(0),
            Decimal(0),
            Decimal("0.40"),
            Decimal("1.90"),
        ]
        await shoot(page, "sms", tmp_path)

        async with page.expect_download() as download:
            await page.get_by_role("link", name="Download as CSV").click()
        saved = Path(await (await download.value).path()).read_text()
        assert saved == bill_csv(lines, "user")

        await page.get_by_label("Per", exact=True).select_option("group")
        await page.get_by_role("button", name="Show").click()
        async with page.expect_download() as download:
            await page.get_by_role("link", name="Download as CSV").click()
        saved = Path(await (await download.value).path()).read_text()
        assert saved == bill_csv(bill(quarter, "group"), "group")
        assert "vip" not in saved  # a message counts for the user's first group, which pays
    finally:
        await context.close()
