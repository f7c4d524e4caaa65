"""How every command speaks: exit statuses, problems and warnings reported with their file
and line (the first ones in full), plurals, JSON or lines, times in UTC."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from gateway.errors import ConfigError, Problem


class Checked(Protocol):
    """A file read and checked: what it holds, and what is likely not meant."""

    @property
    def warnings(self) -> tuple[Problem, ...]: ...


C = TypeVar("C", bound=Checked)

# Exit statuses of every command: 0 done, 1 failed (a user unknown, a store missing), 2 the
# configuration or the arguments are wrong, 141 the reader went away (`… | head`).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_CONFIG = EXIT_USAGE
EXIT_PIPE = 128 + 13  # SIGPIPE: what the shell reports for `grep … | head` too
# Problems printed before the rest are only counted: the first ones name the mistake, and a
# file with 100,000 unknown keys must not print megabytes.
SHOWN_PROBLEMS = 50


def report_problems(problems: list[Problem], *, noun: str = "problem") -> None:
    """The first SHOWN_PROBLEMS problems (or warnings) on stderr, one a line, then how many
    more there are."""
    prefix = "" if noun == "problem" else f"{noun}: "
    for problem in problems[:SHOWN_PROBLEMS]:
        print(f"{prefix}{problem}", file=sys.stderr)
    more = len(problems) - SHOWN_PROBLEMS
    if more > 0:
        print(f"… and {plural(more, f'more {noun}')}", file=sys.stderr)


def loaded_or_reported(load: Callable[[str], C], where: str, after: str = "") -> C | None:
    """`load(where)` with its warnings printed; None, every problem printed and counted (then
    `after`: what did not happen), when it cannot be loaded."""
    try:
        found = load(where)
    except ConfigError as exc:
        report_problems(exc.problems)
        print(f"{where}: {plural(len(exc.problems), 'problem')}{after}", file=sys.stderr)
        return None
    report_problems(list(found.warnings), noun="warning")
    return found


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' if count != 1 else ''}"


def emit(as_json: bool, data: Any, lines: list[str]) -> None:
    """A command's answer: `data` as indented JSON for scripts, or `lines` for people."""
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print("\n".join(lines))


def when_utc(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp)) if stamp else ""
