"""`crm-gateway sms-usage`: the quarterly bill from the message ledger, by user or group, as a
table for people or CSV for the accounts department. Amounts are decimals, never floats."""

from __future__ import annotations

import argparse
import sys

from gateway.admin.ledger import amount, bill, bill_csv, quarter_bounds
from gateway.cli.output import EXIT_OK, EXIT_USAGE
from gateway.cli.store_access import with_store
from gateway.config.model import Config


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    usage = commands.add_parser("sms-usage", help="what the SMS codes of a quarter cost")
    usage.add_argument("-c", "--config", default="gateway.yaml")
    usage.add_argument("--quarter", required=True, help="such as 2026Q3 (UTC)")
    usage.add_argument("--by", choices=("user", "group"), default="user")
    usage.add_argument("--format", choices=("table", "csv"), default="table")
    usage.add_argument(
        "--channel", choices=("sms", "email", "all"), default="sms", help="default: sms"
    )


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
        sys.stdout.write(bill_csv(lines, args.by))
        return EXIT_OK
    if not lines:
        print(f"no messages in {args.quarter.upper()}")
        return EXIT_OK
    width = max(len(header[0]), *(len(line[0]) for line in lines))
    print(f"{header[0].upper():<{width}}  {'SENT':>6}  {'FAILED':>6}  {'COST':>10}  CURRENCY")
    for who, ok, bad, cost, currency in lines:
        print(f"{who:<{width}}  {ok:>6}  {bad:>6}  {amount(cost):>10}  {currency}")
    return EXIT_OK
