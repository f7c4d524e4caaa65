"""`crm-gateway sms-usage`: the quarterly bill from the message ledger, by user or group, as a
table for people or CSV for the accounts department. Amounts are decimals, never floats."""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

from gateway.cli.output import EXIT_OK, EXIT_USAGE
from gateway.cli.store import with_store
from gateway.config.model import Config
from gateway.stores import LedgerRow

_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")
NO_GROUP = "(no group)"


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = commands.add_parser("sms-usage", help="what the SMS codes of a quarter cost")
    usage.add_argument("-c", "--config", default="gateway.yaml")
    usage.add_argument("--quarter", required=True, help="such as 2026Q3 (UTC)")
    usage.add_argument("--by", choices=("user", "group"), default="user")
    usage.add_argument("--format", choices=("table", "csv"), default="table")
    usage.add_argument(
        "--channel", choices=("sms", "email", "all"), default="sms", help="default: sms"
    )


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


def bill(rows: list[LedgerRow], by: str) -> list[tuple[str, int, int, Decimal, str]]:
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
                "TOTAL",
                sum(line[1] for line in mine),
                sum(line[2] for line in mine),
                sum((line[3] for line in mine), Decimal(0)),
                currency,
            )
        )
    return lines


def sms_usage(args: argparse.Namespace, config: Config) -> int:
    bounds = quarter_bounds(args.quarter)
    if bounds is None:
        print(f"--quarter: must look like 2026Q3 but it's {args.quarter!r}", file=sys.stderr)
        return EXIT_USAGE
    since, until = bounds
    rows = with_store(config, lambda store: store.messages(since, until))
    if args.channel != "all":
        rows = [r for r in rows if r.channel == args.channel]
    lines = bill(rows, args.by)
    header = (args.by, "sent", "failed", "cost", "currency")
    if args.format == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(header)
        for who, ok, bad, amount, currency in lines:
            out.writerow((who, ok, bad, _amount(amount), currency))
        return EXIT_OK
    if not lines:
        print(f"no messages in {args.quarter.upper()}")
        return EXIT_OK
    width = max(len(header[0]), *(len(line[0]) for line in lines))
    print(f"{header[0].upper():<{width}}  {'SENT':>6}  {'FAILED':>6}  {'COST':>10}  CURRENCY")
    for who, ok, bad, amount, currency in lines:
        print(f"{who:<{width}}  {ok:>6}  {bad:>6}  {_amount(amount):>10}  {currency}")
    return EXIT_OK


def _amount(value: Decimal) -> str:
    """At least two decimals, never rounded: the lines of a bill add up to its total."""
    return str(
        value.quantize(Decimal("0.01")) if value == value.quantize(Decimal("0.01")) else value
    )
