"""`crm-gateway detect-login`: the CRM's login read from outside and printed as a `login:`
section. The section goes to stdout (`> login.yaml` keeps only it), the account of what was
found to stderr; when the CRM cannot be read, one sentence on stderr and nothing on stdout.
A test account's password is asked on the terminal, or read from stdin with
--password-stdin; never taken from the command line or a file."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, when_utc
from gateway.clock import SystemClock
from gateway.errors import BadArgument, DetectionFailed, SeveralForms

if TYPE_CHECKING:
    from gateway.setup.detect import Detection

# gateway.setup (an HTML parser, forms, an HTTP client: about 0.3 MB) is imported by the
# command, not with this module: main.py imports every command's module for its parser, and
# `crm-gateway run` would carry it in every worker.

CLOCK = SystemClock()


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    detect_login = commands.add_parser(
        "detect-login",
        help="read the CRM's login from outside and print the login: section for gateway.yaml",
    )
    detect_login.add_argument(
        "--upstream", required=True, metavar="URL", help="the CRM's address (upstream.url)"
    )
    detect_login.add_argument(
        "--path", default="", help="the page to start from (default: the CRM's start page)"
    )
    add_account_options(detect_login, "one right and one wrong login are tried with it")
    detect_login.add_argument(
        "--form", type=int, metavar="N", help="which login form, on a page with several"
    )


def add_account_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--user", default="", help=f"a test account of the CRM: {what} (password asked)"
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the test account's password from stdin's first line instead of asking",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long one request to the CRM may take (default 10)",
    )


def parse_upstream(url: str, path: str = "") -> tuple[str, str]:
    """(the CRM's origin, the page to start from) from --upstream and --path."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadArgument(
            "--upstream: must be an http:// or https:// address such as "
            f"http://10.0.0.5:8000 but it's {url!r}"
        )
    try:
        parts.port  # noqa: B018  (a bad port raises here)
    except ValueError:
        raise BadArgument(f"--upstream: the port of {url!r} is not a number 1-65535") from None
    origin = f"{parts.scheme}://{parts.netloc}"
    if path and not path.startswith("/"):
        raise BadArgument(f"--path: must start with / but it's {path!r}")
    here = path or (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return origin, origin + here


def read_account_options(args: argparse.Namespace, where: str) -> str | None:
    """What add_account_options gave: --timeout checked and, with --user, the account's
    password asked ("" without --user); None, said on stderr, for a usage error."""
    if args.timeout <= 0:
        print("--timeout: must be more than 0 seconds", file=sys.stderr)
        return None
    return ask_password(args.user, where, args.password_stdin) if args.user else ""


def ask_password(user: str, where: str, from_stdin: bool) -> str | None:
    """The test account's password: stdin's first line with --password-stdin, else asked on
    the terminal (not echoed); None, said on stderr, when neither can give one."""
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            print("--password-stdin: stdin gave no password", file=sys.stderr)
            return None
        return line
    if not sys.stdin.isatty():
        print(
            "no terminal to ask the password on: run it at a terminal, or pass "
            "--password-stdin and give the password on stdin",
            file=sys.stderr,
        )
        return None
    try:
        given = getpass.getpass(f"Password of {user} at {where} (not shown): ")
    except EOFError:  # Ctrl-D at the prompt
        given = ""
    if not given:
        print("no password given", file=sys.stderr)
    return given or None


def _which(error: SeveralForms) -> int | None:
    """On a terminal: the form the person picks from the list."""
    for number, text in enumerate(error.choices, start=1):
        print(f"  {number}. {text}", file=sys.stderr)
    if not sys.stdin.isatty():
        return None
    try:
        answer = input(f"Which one is the login to watch? [1-{len(error.choices)}] ").strip()
    except EOFError:
        return None
    return int(answer) if answer.isdigit() else None


def detect_login_command(args: argparse.Namespace) -> int:
    try:
        upstream, start = parse_upstream(args.upstream, args.path)
    except BadArgument as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    password = read_account_options(args, upstream)
    if password is None:
        return EXIT_USAGE
    choice: int | None = args.form
    while True:
        try:
            found = asyncio.run(_detect(args, upstream, start, password, choice))
            break
        except SeveralForms as exc:
            print(f"detect-login: {exc}", file=sys.stderr)
            choice = None if args.password_stdin else _which(exc)
            if choice is None:
                print("nothing written", file=sys.stderr)
                return EXIT_USAGE
        except DetectionFailed as exc:
            print(f"detect-login: {exc}", file=sys.stderr)
            print("nothing written", file=sys.stderr)
            return EXIT_FAILED
    from gateway.setup.section import account, render

    print(render(found, when_utc(CLOCK.now()) + " UTC"), end="")
    for line in account(found):
        print(line, file=sys.stderr)
    if found.complete:
        then = "crm-gateway doctor -c gateway.yaml" + (f" --user {args.user}" if args.user else "")
        print(f"Next: paste it into gateway.yaml, then run {then}", file=sys.stderr)
        return EXIT_OK
    return EXIT_FAILED


async def _detect(
    args: argparse.Namespace, upstream: str, start: str, password: str, choice: int | None
) -> Detection:
    from gateway.setup.detect import detect

    return await detect(
        upstream,
        start,
        clock=CLOCK,
        wait=args.timeout,
        user=args.user,
        password=password,
        choice=choice,
    )
