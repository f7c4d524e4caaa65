"""The SMS and e-mail ledger as a bill: a quarter's bounds (UTC), the messages sent and failed
and their cost per user or group with a total per currency, and the same as CSV for the
accounts department. Amounts are decimals, never floats: the lines add up to the total.
`crm-gateway sms-usage` and the console's ledger page both read it so."""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from gateway.stores import LedgerRow

_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")
NO_GROUP = "(no group)"
TOTAL = "TOTAL"
BillLine = tuple[str, int, int, Decimal, str]  # (who, sent, failed, cost, currency)


def quarter_bounds(text: str) -> tuple[float, float] | None:
    """[start, end) of a quarter such as 2026Q3, as UTC timestamps."""
    match = _QUARTER.match(text.strip().upper())
    if not match:
        return None
    year, quarter = int(match[1]), int(match[2])
    if year < 1970:
        return None
    start = datetime(year, 3 * quarter - 2, 1, tzinfo=UTC)
    if quarter == 4:
        end = datetime(year + 1, 1, 1, tzinfo=UTC)
    else:
        end = datetime(year, 3 * quarter + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def quarter_of(stamp: float) -> str:
    """2026Q3 for a moment in July 2026 (UTC)."""
    moment = datetime.fromtimestamp(stamp, UTC)
    return f"{moment.year}Q{(moment.month - 1) // 3 + 1}"


def quarters_before(quarter: str, count: int) -> list[str]:
    """`count` quarters ending with `quarter`, oldest first."""
    year, number = int(quarter[:4]), int(quarter[5])
    found = []
    for _ in range(count):
        found.append(f"{year}Q{number}")
        year, number = (year - 1, 4) if number == 1 else (year, number - 1)
    return found[::-1]


def bill(rows: list[LedgerRow], by: str) -> list[BillLine]:
    """(who, sent, failed, cost, currency) per user or group, then the total. A message
    counts once, for the user's first group (the group that pays)."""
    sent: dict[tuple[str, str], int] = defaultdict(int)
    failed: dict[tuple[str, str], int] = defaultdict(int)
    cost: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for row in rows:
        who = row.user if by == "user" else (row.groups.split(",")[0] or NO_GROUP)
        key = (who, row.currency)
        if row.status == "sent":
            sent[key] += 1
        else:
            failed[key] += 1
        cost[key] += Decimal(row.cost)
    keys = sorted(set(sent) | set(failed))
    lines = [(w, sent[(w, c)], failed[(w, c)], cost[(w, c)], c) for w, c in keys]
    for currency in sorted({cur for _, cur in keys}):
        mine = [line for line in lines if line[4] == currency]
        lines.append(
            (
                TOTAL,
                sum(line[1] for line in mine),
                sum(line[2] for line in mine),
                sum((line[3] for line in mine), Decimal(0)),
                currency,
            )
        )
    return lines


def amount(value: Decimal) -> str:
    """At least two decimals, never rounded: the lines of a bill add up to its total."""
    return str(
        value.quantize(Decimal("0.01")) if value == value.quantize(Decimal("0.01")) else value
    )


def bill_csv(lines: list[BillLine], by: str) -> str:
    """The bill as CSV: a header (by, sent, failed, cost, currency), then one row a line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow((by, "sent", "failed", "cost", "currency"))
    for who, ok, bad, cost, currency in lines:
        writer.writerow((spreadsheet_text(who), ok, bad, amount(cost), currency))
    return out.getvalue()


def spreadsheet_text(text: str) -> str:
    """A cell no spreadsheet runs as a formula (CWE-1236): control characters written as
    U+FFFD (a carriage return is a row break to Excel and LibreOffice even unquoted, and the
    csv module leaves it unquoted: "x\\r=HYPERLINK(…)" would start a row with a formula), then
    a leading =, +, -, @ or tab made text with a '."""
    shown = "".join("\ufffd" if _control(c) else c for c in text)
    return f"'{shown}" if shown[:1] in ("=", "+", "-", "@", "\t") else shown


def _control(c: str) -> bool:
    return (ord(c) < 32 and c != "\t") or ord(c) == 127
