"""`crm-gateway doctor -c gateway.yaml`: the deployment checked end to end
(gateway.setup.doctor), printed as one line per item (ok, WARN, FAIL, skip) with the fix
under each failure and warning. Exit status 1 when anything failed, 0 otherwise; 2 for a
configuration that does not load (reported as check-config reports it)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
import tempfile
import textwrap
from pathlib import Path

from gateway.cli.detect import add_account_options, read_account_options
from gateway.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, plural
from gateway.clock import SystemClock
from gateway.config.model import Config
from gateway.policy.model import Policy
from gateway.setup.checks import FAIL, OK, SKIP, WARN, Verdict

CLOCK = SystemClock()
LABELS = {OK: "ok", WARN: "WARN", FAIL: "FAIL", SKIP: "skip"}
WIDTH = 100


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    doctor = commands.add_parser(
        "doctor", help="check a deployment end to end: a verdict per item, a fix per failure"
    )
    doctor.add_argument("-c", "--config", default="gateway.yaml", help="path to gateway.yaml")
    add_account_options(doctor, "logs in through a gateway on a loopback port")
    doctor.add_argument(
        "--client-ip",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="where the test login comes from, as the policy judges it (default 127.0.0.1)",
    )


def _lines(verdict: Verdict) -> list[str]:
    head = f"  {LABELS[verdict.state]:<5} {verdict.item:<27} "
    indent = " " * len(head)
    lines = _wrap(verdict.said, head, indent)
    if verdict.fix and verdict.state in (FAIL, WARN):
        lines += _wrap(verdict.fix, indent + "fix: ", indent + "     ")
    return lines


def _wrap(text: str, first: str, then: str) -> list[str]:
    """Wrapped at spaces only: a path or an address is never cut in two."""
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=first,
        subsequent_indent=then,
        break_on_hyphens=False,
        break_long_words=False,
    )


def doctor_command(args: argparse.Namespace, config: Config, policy: Policy | None) -> int:
    try:
        ipaddress.ip_address(args.client_ip)
    except ValueError:
        print(f"--client-ip: must be an IP address but it's {args.client_ip!r}", file=sys.stderr)
        return EXIT_USAGE
    password = read_account_options(args, config.upstream.url)
    if password is None:
        return EXIT_USAGE
    # Here, not at the top: every other command would load the web layer with it.
    from gateway.setup.doctor import Account, run_doctor

    account = Account(args.user, password, args.client_ip)
    print(f"crm-gateway doctor: {args.config}, the CRM at {config.upstream.url}")
    sys.stdout.flush()
    with tempfile.TemporaryDirectory(prefix="crm-gateway-doctor-") as folder:
        verdicts = asyncio.run(
            run_doctor(config, policy, account, wait=args.timeout, clock=CLOCK, folder=Path(folder))
        )
    for verdict in verdicts:
        print("\n".join(_lines(verdict)))
    counts = {state: sum(v.state == state for v in verdicts) for state in LABELS}
    summary = [
        plural(counts[FAIL], "failure"),
        plural(counts[WARN], "warning"),
        f"{counts[OK]:,} ok",
        f"{counts[SKIP]:,} skipped",
    ]
    print(", ".join(summary))
    return EXIT_FAILED if counts[FAIL] else EXIT_OK
