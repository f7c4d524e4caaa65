"""The command line: run, check-config, demo, hash-password, keys and the admin commands.

Exit status 2 means the configuration is wrong; 1 that a command failed (a durable store that
is missing or cannot be used among them); 141 that the reader of the output went away
(`… | head`), as for any Unix tool ended by SIGPIPE."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gateway import __version__
from gateway.cli import (
    audit,
    backup,
    detect,
    doctor,
    keys,
    sms_usage,
    store_commands,
    tokens,
    users,
)
from gateway.cli import policy as policies
from gateway.cli.output import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PIPE,
    loaded_or_reported,
    report_problems,
)
from gateway.config.load import load_config, workers_problem
from gateway.config.model import Config
from gateway.config.process import MAX_WORKERS, usable_cores
from gateway.config.sections import parse_listen
from gateway.crypto import hash_password
from gateway.errors import ConfigError, StoreUnavailable
from gateway.model import canonical_user
from gateway.policy.checks import unavailable_factors
from gateway.policy.model import Policy
from gateway.signin.passwords import load_password_file

Handler = Callable[[argparse.Namespace, Config, Policy | None], int]

# Commands run against a configured gateway (`-c gateway.yaml`, loaded and checked first).
CONFIGURED: dict[str, Handler] = {
    "tokens": tokens.tokens,
    "users": users.users_command,
    "sessions": users.users_command,
    "recovery": users.users_command,
    "sms-usage": lambda args, config, _policy: sms_usage.sms_usage(args, config),
    "keys": keys.rotate_command,  # `keys generate` needs no config: main() runs it first
    "audit": audit.audit_command,
    "backup": backup.backup_command,
    "restore": backup.restore_command,
    "doctor": doctor.doctor_command,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crm-gateway",
        description="Two-factor authentication, IP allowlists and access rules in front of a CRM.",
    )
    parser.add_argument("--version", action="version", version=f"crm-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve the gateway")
    run.add_argument("-c", "--config", default="gateway.yaml", help="path to gateway.yaml")
    run.add_argument("--listen", metavar="HOST:PORT", help="override `listen` from the config")
    run.add_argument(
        "--workers", metavar="N|auto", help="override `workers`: 1 to 64, or auto (one per core)"
    )

    check = commands.add_parser(
        "check-config", help="validate gateway.yaml and report every problem"
    )
    check.add_argument("-c", "--config", default="gateway.yaml", help="path to gateway.yaml")

    demo = commands.add_parser("demo", help="run the bundled demo CRM behind the gateway")
    demo.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    demo.add_argument("--crm-listen", default="127.0.0.1:8081", metavar="HOST:PORT")
    demo.add_argument("--data-dir", default="var/demo", help="where the demo keeps its SQLite file")
    hashing = commands.add_parser(
        "hash-password",
        help="print an argon2id hash for a users file (login.mode gateway); reads stdin",
    )
    hashing.add_argument("--user", help="print `USER: HASH`, a line for the users file")
    keys.add_commands(commands)
    audit.add_commands(commands)
    policies.add_commands(commands)
    tokens.add_commands(commands)
    sms_usage.add_command(commands)
    users.add_commands(commands)
    backup.add_commands(commands)
    store_commands.add_commands(commands)
    detect.add_command(commands)
    doctor.add_command(commands)
    return parser


def _read_password() -> str | None:
    """From a terminal: asked twice, not echoed. Otherwise: the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            print("the two passwords differ", file=sys.stderr)
            return None
        return first
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def hash_password_command(user: str | None) -> int:
    password = _read_password()
    if not password:
        print("no password given (pipe it on stdin, or type it at the prompt)", file=sys.stderr)
        return EXIT_FAILED
    if len(password) < 8:
        print("refused: a password needs at least 8 characters", file=sys.stderr)
        return EXIT_FAILED
    hashed = hash_password(password)
    print(f"{canonical_user(user)}: {hashed}" if user else hashed)
    return EXIT_OK


def _load(path: str, outcome: str = "nothing done") -> tuple[Config, Policy | None] | None:
    """The config and, when it names a folder, its policies: each loaded once, every problem
    reported (the first ones in full). The policy is handed on (to the app, to forked workers)
    and never loaded again. `outcome` ends the summary of a bad file: what did not happen."""
    after = f"; {outcome}" if outcome else ""
    config = loaded_or_reported(load_config, path, after)
    if config is None:
        return None
    login = config.signin.login
    if login is not None and login.users_file:
        # Gateway mode's users file is read at start: a bad one is a bad configuration.
        try:
            load_password_file(login.users_file)
        except ConfigError as exc:
            report_problems(exc.problems)
            print(f"{path}: the users file has problems{after}", file=sys.stderr)
            return None
    policy = None
    if config.policies:
        policy = policies.load_policy_or_report(config.policies)
        if policy is None:
            print(f"{path}: the policies have problems{after}", file=sys.stderr)
            return None
        # Passkeys named where gateway.yaml gives them no relying party (public_url).
        why = config.webauthn.unavailable
        cannot = {"webauthn": f"{why} in {config.source}"} if why else {}
        problems = unavailable_factors(policy, cannot)
        if problems:
            report_problems(problems)
            print(f"{path}: the policies name factors it cannot offer{after}", file=sys.stderr)
            return None
    return config, policy


def _whole(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def main(argv: list[str] | None = None) -> int:
    """Runs one command. A reader that goes away early (`policy explain … | head -1`) ends it
    quietly: stdout is flushed here, where that shows, and not at the interpreter's exit."""
    try:
        try:
            return _command(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # Python's documented recipe: point stdout at devnull so the flush at exit is silent.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE


def _command(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        if _load(args.config, outcome="") is None:
            return EXIT_CONFIG
        print(f"{args.config}: OK")
        return EXIT_OK
    if args.command == "run":
        loaded = _load(args.config, outcome="not started")
        if loaded is None:
            return EXIT_CONFIG
        config, policy = loaded
        if args.listen:
            listen = parse_listen(args.listen)
            if listen is None:
                print(f"--listen: must be host:port but it's {args.listen!r}", file=sys.stderr)
                return EXIT_CONFIG
            config = replace(config, listen=listen)
        if args.workers is not None:
            auto = args.workers == "auto"
            count = usable_cores() if auto else _whole(args.workers)
            if count is None or not 1 <= count <= MAX_WORKERS:
                said = f"must be 1 to {MAX_WORKERS}, or auto, but it's {args.workers!r}"
                print(f"--workers: {said}", file=sys.stderr)
                return EXIT_CONFIG
            config = replace(config, workers=count, workers_auto=auto)
            problem = workers_problem(count, config.signin, config.state, auto=auto)
            if problem:
                print(f"--workers: {problem}", file=sys.stderr)
                return EXIT_CONFIG
        from gateway.web.server import run

        return run(config, policy)
    if args.command == "policy" and args.policy_command == "reload":
        loaded = _load(args.config)
        return EXIT_CONFIG if loaded is None else policies.confirm_policy(*loaded)
    if args.command == "policy":
        if args.policies:
            return policies.explain(args, None)
        loaded = _load(args.config)
        if loaded is None:
            return EXIT_CONFIG
        fold = loaded[0].upstream.case_insensitive_paths
        return policies.explain(args, loaded[1], fold=fold)
    if args.command == "keys" and args.keys_command == "generate":
        return keys.generate_command(args.id)
    if args.command == "store":  # `copy` reads two configs: it loads them itself
        return store_commands.store_command(args, _load)
    handler = CONFIGURED.get(args.command)
    if handler is not None:
        loaded = _load(args.config)
        if loaded is None:
            return EXIT_CONFIG
        try:
            return handler(args, *loaded)
        except StoreUnavailable as exc:
            # cli.store_access.with_store's one line: which store, and why
            print(exc.detail, file=sys.stderr)
            return EXIT_FAILED
    if args.command == "detect-login":
        return detect.detect_login_command(args)
    if args.command == "hash-password":
        return hash_password_command(args.user)
    if args.command == "demo":
        listen, crm_listen = parse_listen(args.listen), parse_listen(args.crm_listen)
        if listen is None or crm_listen is None:
            print("--listen and --crm-listen must be host:port", file=sys.stderr)
            return EXIT_CONFIG
        from gateway.demo.run import run_demo

        return run_demo(listen, crm_listen, Path(args.data_dir).resolve())
    return EXIT_FAILED
