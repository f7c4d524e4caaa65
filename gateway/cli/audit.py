"""`crm-gateway audit tail|search`: the audit trail kept in the durable store, for people (a
compact table, times in UTC) and for scripts (`--json`: JSON Lines, one `event_json` object a
line). Reads only. Text that requests put into events is escaped before it reaches a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from gateway.admin import trail
from gateway.audit import event_json
from gateway.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, when_utc
from gateway.cli.store_access import CLOCK, with_store
from gateway.config.model import Config
from gateway.errors import BadArgument, StoreUnavailable
from gateway.model import AuditEvent
from gateway.policy.model import Policy
from gateway.stores import AuditQuery, DurableStore

POLL = 0.5  # seconds between looks at the store when following (the gateway flushes as often)
PAGE = 1000  # events read per look when following
T = TypeVar("T")
Rows = list[tuple[int, AuditEvent]]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="read the audit trail: tail, search")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    tail = actions.add_parser("tail", help="the latest events; --follow prints new ones")
    tail.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="default 20")
    tail.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new events until Ctrl-C"
    )
    # Follows for SECONDS and stops: for tests and scripted checks, not for people.
    tail.add_argument("--follow-for", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    search = actions.add_parser("search", help="events that match every criterion given")
    search.add_argument("--since", metavar="WHEN", help=f"from: {trail.WHEN}")
    search.add_argument("--until", metavar="WHEN", help="before (same forms as --since)")
    search.add_argument(
        "--limit", type=int, default=1000, metavar="N", help="at most N events (default 1000)"
    )
    for sub in (tail, search):
        sub.add_argument("-c", "--config", default="gateway.yaml")
        sub.add_argument("--user", help="a user (compared as the gateway does: case, accents)")
        sub.add_argument(
            "--event",
            action="append",
            default=[],
            metavar="NAME",
            help="an event name, or a prefix ending in * such as 'challenge.*'; repeatable",
        )
        sub.add_argument("--ip", help="the client address")
        sub.add_argument("--outcome", help="ok, failed, refused, denied or locked")
        sub.add_argument("--request-id", metavar="ID", help="the X-Request-Id of one request")
        sub.add_argument(
            "--json", action="store_true", help="JSON Lines: one event a line, for scripts"
        )


# -- arguments into a query ---------------------------------------------------------------


def build_query(args: argparse.Namespace, now: float) -> AuditQuery:
    """The store query the options ask for (limits are the commands' own). BadArgument when
    an option cannot be understood, naming it."""

    def read(option: str, parse: Callable[[], T]) -> T:
        try:
            return parse()
        except BadArgument as exc:
            raise BadArgument(f"--{option}: {exc}") from None

    user = "" if args.user is None else read("user", lambda: trail.user_name(args.user))
    ip = read("ip", lambda: trail.address(args.ip)) if args.ip else ""
    bounds: dict[str, float] = {}
    for option in ("since", "until"):
        text: str | None = getattr(args, option, None)
        if text is not None:
            bounds[option] = read(option, functools.partial(trail.moment, text, now))
    since, until = bounds.get("since", 0.0), bounds.get("until", float("inf"))
    if since >= until:
        raise BadArgument("--since: must be before --until")
    return AuditQuery(
        since=since,
        until=until,
        user=user,
        names=read("event", lambda: trail.event_names(args.event)),
        ip=ip,
        outcome=(args.outcome or "").strip().lower(),
        request_id=(args.request_id or "").strip(),
    )


# -- events into lines ------------------------------------------------------------------------

_COLUMNS = ("TIME (UTC)", "EVENT", "OUTCOME", "USER", "IP", "REASON", "PATH", "REQUEST ID")
_WIDEST = (19, 32, 8, 24, 39, 24, 40, 0)  # longer values overflow; a longer path is cut


def _terminal_safe(text: str) -> str:
    """A user name or path can hold anything a request sent: no escape sequence reaches the
    reader's terminal (CVE-2003-0063 and friends)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _cells(event: AuditEvent) -> list[str]:
    path = event.path if len(event.path) <= _WIDEST[6] else event.path[: _WIDEST[6] - 1] + "…"
    values = [event.name, event.outcome, event.user, event.ip, event.reason, path, event.request_id]
    return [when_utc(event.time), *(_terminal_safe(v) or "-" for v in values)]


@dataclass
class Printer:
    """Prints events as they come: JSON lines, or table rows sized by the first batch."""

    as_json: bool
    widths: list[int] | None = None

    def show(self, rows: Rows) -> None:
        if self.as_json:
            for event_id, event in rows:
                # ASCII only: parsers read the same text, and terminals see no raw controls.
                print(json.dumps(event_json(event, event_id)), flush=True)
            return
        cells = [_cells(event) for _, event in rows]
        if self.widths is None:
            self.widths = [
                max([len(title), *(min(len(c[i]), _WIDEST[i]) for c in cells)])
                for i, title in enumerate(_COLUMNS)
            ]
            print(self._line(list(_COLUMNS)), flush=True)
        for line in cells:
            print(self._line(line), flush=True)

    def _line(self, cells: list[str]) -> str:
        assert self.widths is not None
        return "  ".join(c.ljust(w) for c, w in zip(cells, self.widths, strict=True)).rstrip()


# -- the commands -------------------------------------------------------------------------------


def audit_command(args: argparse.Namespace, config: Config, _policy: Policy | None) -> int:
    try:
        query = build_query(args, CLOCK.now())
        if args.audit_command == "search" and args.limit < 1:
            raise BadArgument(f"--limit: must be 1 or more but it's {args.limit}")
        if args.audit_command == "tail" and args.lines < 0:
            raise BadArgument(f"--lines: must be 0 or more but it's {args.lines}")
    except BadArgument as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    printer = Printer(args.json)
    try:
        if args.audit_command == "search":
            return _search(config, query, args.limit, printer)
        return _tail(config, query, args, printer)
    except StoreUnavailable as exc:
        print(f"the audit trail cannot be read: {exc.detail or exc}", file=sys.stderr)
        return EXIT_FAILED


def _search(config: Config, query: AuditQuery, limit: int, printer: Printer) -> int:
    rows = with_store(config, lambda store: store.audit_events(replace(query, limit=limit + 1)))
    if not rows:
        if not printer.as_json:
            print("no events matched")
        return EXIT_OK
    printer.show(rows[:limit])
    if len(rows) > limit:
        print(
            f"more than {limit} event{'s' if limit > 1 else ''} matched: the oldest {limit} "
            "shown; narrow the search (--since, --until, --event, --user) or raise --limit",
            file=sys.stderr,
        )
    return EXIT_OK


def _tail(config: Config, query: AuditQuery, args: argparse.Namespace, printer: Printer) -> int:
    follow = args.follow or args.follow_for is not None
    deadline = None if args.follow_for is None else CLOCK.monotonic() + args.follow_for

    async def tail(store: DurableStore) -> None:
        latest = await store.audit_events(
            replace(query, limit=max(args.lines, 1), newest_first=True)
        )
        shown = list(reversed(latest[: args.lines]))
        if shown or (follow and not printer.as_json):
            printer.show(shown)
        if follow:
            await follow_events(store, query, latest[0][0] if latest else 0, printer.show, deadline)

    with_store(config, tail)
    return EXIT_OK


async def follow_events(
    store: DurableStore,
    query: AuditQuery,
    after_id: int,
    show: Callable[[Rows], None],
    deadline: float | None = None,
) -> None:
    """Show events newer than `after_id` as they arrive, until SIGINT or SIGTERM (or the
    monotonic `deadline`). A store that is busy for a moment is tried again."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Only the main thread may take signals; elsewhere (a test's thread) the default stays.
        with contextlib.suppress(ValueError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    warned = False
    try:
        while True:
            try:
                rows = await store.audit_events(
                    replace(query, after_id=after_id, limit=PAGE, newest_first=False)
                )
            except StoreUnavailable as exc:
                if not warned:
                    print(f"the audit trail cannot be read now: {exc.detail}", file=sys.stderr)
                warned, rows = True, []
            if rows:
                after_id = rows[-1][0]
                show(rows)
            if len(rows) == PAGE and not stop.is_set():
                continue  # a burst: read on before waiting
            wait = POLL if deadline is None else min(POLL, deadline - CLOCK.monotonic())
            if stop.is_set() or wait <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
