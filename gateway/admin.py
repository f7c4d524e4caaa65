"""CLI commands over policies and API tokens: `policy explain`, `tokens add|list|revoke`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.access import resolve_settings
from gateway.audit import STDOUT, LineWriter, event_line
from gateway.clock import SystemClock
from gateway.config import Config
from gateway.decision import Asks, Kind, PolicyView, Request, Who, decide
from gateway.errors import BadRequest, ConfigError, Problem, StoreUnavailable
from gateway.fields import method_override
from gateway.model import AuditEvent, canonical_user
from gateway.pathrules import normalize_path
from gateway.policy import Policy, format_interval, load_policies
from gateway.policychange import CONFIRMED_NOTE, files_digest
from gateway.stores import DUPLICATE, STORE_MISSING, DurableStore, durable_address, open_durable
from gateway.tokens import MIN_TOKEN_LENGTH, digest

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Problems printed before the rest are only counted: the first ones name the mistake, and a
# file with 100,000 unknown keys must not print megabytes.
SHOWN_PROBLEMS = 50
T = TypeVar("T")
CLOCK = SystemClock()


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = commands.add_parser("policy", help="explain what the policies decide")
    policy_cmds = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    explain = policy_cmds.add_parser("explain", help="the decision for one request, with its rules")
    explain.add_argument("-c", "--config", default="gateway.yaml")
    reload = policy_cmds.add_parser(
        "reload",
        help="confirm the policy files as they are now: a running gateway loads them within "
        "seconds, even a change its file watcher held back",
    )
    reload.add_argument("-c", "--config", default="gateway.yaml")
    explain.add_argument("--policies", help="a policy folder (instead of the config's)")
    explain.add_argument("--user", help="the user name (omit for an anonymous request)")
    explain.add_argument("--ip", required=True)
    explain.add_argument("--method", default="GET")
    explain.add_argument("--path", default="/")
    explain.add_argument(
        "--token", action="store_true", help="judge it as a request with the user's API token"
    )
    explain.add_argument(
        "--unknown-token", action="store_true", help="as an unregistered API token"
    )

    tokens = commands.add_parser("tokens", help="register, list and revoke API tokens")
    token_cmds = tokens.add_subparsers(dest="tokens_command", required=True, metavar="COMMAND")
    add = token_cmds.add_parser("add", help="register a token (read from standard input)")
    add.add_argument("--user", required=True)
    add.add_argument("--label", default="")
    listing = token_cmds.add_parser("list", help="every token: id, owner, label, state")
    listing.add_argument("--json", action="store_true")
    revoke = token_cmds.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("id")
    for sub in (add, listing, revoke):
        sub.add_argument("-c", "--config", default="gateway.yaml")


def report_problems(problems: list[Problem], *, noun: str = "problem") -> None:
    """The first SHOWN_PROBLEMS problems (or warnings) on stderr, one a line, then how many
    more there are."""
    prefix = "" if noun == "problem" else f"{noun}: "
    for problem in problems[:SHOWN_PROBLEMS]:
        print(f"{prefix}{problem}", file=sys.stderr)
    more = len(problems) - SHOWN_PROBLEMS
    if more > 0:
        print(f"… and {plural(more, f'more {noun}')}", file=sys.stderr)


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'s' if count != 1 else ''}"


def load_policy_or_report(folder: str) -> Policy | None:
    """The policies, their warnings (rules never used or undercut…) printed; None and every
    problem printed when they cannot be loaded."""
    try:
        policy = load_policies(folder)
    except ConfigError as exc:
        report_problems(exc.problems)
        print(f"{folder}: {plural(len(exc.problems), 'problem')}", file=sys.stderr)
        return None
    report_problems(list(policy.warnings), noun="warning")
    return policy


def confirm_policy(config: Config, policy: Policy | None) -> int:
    """`policy reload`: the files (already loaded and checked by the caller) confirmed through
    the durable store, which every worker and instance of the gateway reads."""
    if policy is None:
        print("no policies: the config names no `policies` folder", file=sys.stderr)
        return EXIT_USAGE
    digest = files_digest(config.policies)

    async def confirm(store: DurableStore) -> None:
        await store.set_note(CONFIRMED_NOTE, digest)
        await audit_admin(config, store, "admin.policy_confirmed", digest=digest[:16])

    with_store(config, confirm)
    print(
        f"confirmed {config.policies} ({len(policy.users)} users, {len(policy.paths)} path "
        "rules): a running gateway loads them within a few seconds"
    )
    return EXIT_OK


def explain(args: argparse.Namespace, policy: Policy | None) -> int:
    """`policy`: the config's, already loaded; None with --policies (loaded here). The
    answer is gateway.decision.decide's, the function the running gateway asks."""
    if args.policies:
        policy = load_policy_or_report(args.policies)
        if policy is None:
            return EXIT_USAGE
    if policy is None:
        print("no policies: give --policies DIR or a config with `policies`", file=sys.stderr)
        return EXIT_USAGE
    view = PolicyView.of(policy)
    name = canonical_user(args.user) if args.user else ""
    if name and name not in view.users:
        print(f"user {args.user!r} is in no policy file: judged as unknown", file=sys.stderr)
    method = args.method.upper()
    raw_path, _, raw_query = args.path.partition("?")
    try:
        path = normalize_path(raw_path)
    except BadRequest as exc:  # say what the gateway would answer
        print(f"decision: deny (400 path_ambiguous): {exc.detail}")
        return EXIT_OK
    refused = "method_ambiguous" if method_override((), method, raw_query) else ""
    if args.token or args.unknown_token:
        who = Who(Kind.TOKEN, name, token_known=not args.unknown_token, refused=refused)
    else:
        who = Who(Kind.SESSION if name else Kind.ANONYMOUS, name, refused=refused)
    decision = decide(view, who, Request(Asks.CRM, args.ip, method, path))
    shown_user = f"user {view.user_for(name).name}" if name else "an unknown user"
    print(f"request: {method} {path} from {args.ip} by {shown_user}")
    print(f"decision: {decision.action.value} ({decision.reason})")
    for step in decision.steps:
        print(f"  - {step}")
    settings = view.settings(name) if name else resolve_settings(policy, None)
    print(f"interval: {format_interval(settings.interval)}")
    print(f"factors: {', '.join(settings.factors) or 'none'}")
    shown = (
        f"required from {settings.required_from}"
        if settings.required_from
        else settings.enforcement
    )
    print(f"enforcement: {shown}")
    remember = format_interval(settings.remember_device) if settings.remember_device else "never"
    print(f"remember device: {remember}")
    for step in settings.steps:
        print(f"  - {step}")
    return EXIT_OK


def with_store(config: Config, work: Callable[[DurableStore], Awaitable[T]]) -> T:
    """Open the config's durable store, run `work` on it, close it: one CLI command's I/O.

    Never creates a store: one that is not there, or that cannot be read or written, raises
    StoreUnavailable whose detail is one line naming the store and the key that chose it
    (cli.main prints it and exits 1)."""
    return asyncio.run(_with_store(config, work))


async def _with_store(config: Config, work: Callable[[DurableStore], Awaitable[T]]) -> T:
    store: DurableStore | None = None
    try:
        store = await open_durable(config.state.durable, create=False)
        return await work(store)
    except StoreUnavailable as exc:
        if exc.reason == DUPLICATE:
            raise  # the data was refused (a token twice), not the store: the command says so
        raise StoreUnavailable(store_problem(config, exc), reason=exc.reason) from exc
    finally:
        if store is not None:
            await store.close()


def store_problem(config: Config, exc: StoreUnavailable) -> str:
    """What went wrong with the durable store, for an operator: which store (its file), from
    which key, and the store's own words (its backend's error, without our prefix)."""
    store, key = durable_address(config.state.durable)
    where = f"{key} in {config.source}"
    if exc.reason == STORE_MISSING:
        return (
            f"no durable store at {store} ({where}): nothing done and no store created; check "
            "the path, or start the gateway (crm-gateway run) to create it"
        )
    cause = exc.__cause__ if exc.__cause__ is not None else exc.detail
    return f"the durable store {store} cannot be used ({where}): {cause}"


def tokens(args: argparse.Namespace, config: Config, policy: Policy | None) -> int:
    if args.tokens_command == "add":
        token = sys.stdin.readline().strip()
        if len(token) < MIN_TOKEN_LENGTH:
            print(f"the token must have at least {MIN_TOKEN_LENGTH} characters", file=sys.stderr)
            return EXIT_USAGE
        if policy is not None and args.user not in policy.users:
            print(
                f"warning: user {args.user!r} is in no policy file: the token is refused "
                "until they are",
                file=sys.stderr,
            )
        token_id = "tok_" + secrets.token_hex(6)

        async def add(store: DurableStore) -> None:
            await store.add_token(token_id, args.user, digest(token), args.label, CLOCK.now())
            await audit_admin(config, store, "admin.token_added", user=args.user, id=token_id)

        try:
            with_store(config, add)
        except StoreUnavailable as exc:
            if exc.reason != DUPLICATE:
                raise  # cli.main names the store and why it failed
            print("not registered: this token is already registered", file=sys.stderr)
            return EXIT_FAILED
        print(token_id)
        return EXIT_OK
    if args.tokens_command == "list":
        rows = with_store(config, lambda s: s.tokens())
        entries = [
            {
                "id": r[0],
                "user": r[1],
                "label": r[2],
                "created": when_utc(r[3]),
                "revoked": when_utc(r[4]) if r[4] else None,
            }
            for r in rows
        ]
        lines = [f"{'ID':<17} {'USER':<16} {'CREATED':<20} {'STATE':<8} LABEL"]
        lines += [
            f"{e['id']:<17} {e['user']:<16} {e['created']:<20} "
            f"{'revoked' if e['revoked'] else 'active':<8} {e['label']}"
            for e in entries
        ]
        emit(args.json, entries, lines)
        return EXIT_OK

    async def revoke(store: DurableStore) -> bool:
        done = await store.revoke_token(args.id, CLOCK.now())
        if done:
            await audit_admin(config, store, "admin.token_revoked", id=args.id)
        return done

    revoked = with_store(config, revoke)
    if not revoked:
        print(f"no active token with id {args.id}", file=sys.stderr)
        return EXIT_FAILED
    print(f"revoked {args.id}")
    return EXIT_OK


def operator() -> str:
    """Who runs the command, for the audit trail: the login name, or the uid when unknown."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


async def audit_admin(
    config: Config,
    store: DurableStore,
    name: str,
    outcome: str = "ok",
    *,
    user: str = "",
    reason: str = "",
    **details: str | int | float,
) -> AuditEvent:
    """An admin action in the audit trail: the store (so `audit search` finds it) and the
    audit file when it is one (stdout is the command's own output, so not there)."""
    event = AuditEvent(
        CLOCK.now(),
        name,
        outcome,
        user=user,
        method="CLI",
        reason=reason,
        details=tuple(sorted({"by": operator(), **details}.items())),
    )
    await store.add_audit_events([event])
    if config.audit.file not in ("", STDOUT):
        writer = LineWriter(config.audit.file)
        writer.write(event_line(event))
        writer.close()
    return event


def emit(as_json: bool, data: Any, lines: list[str]) -> None:
    """A command's answer: `data` as indented JSON for scripts, or `lines` for people."""
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        print("\n".join(lines))


def when_utc(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp)) if stamp else ""
