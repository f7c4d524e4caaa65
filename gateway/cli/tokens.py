"""`crm-gateway tokens add|list|revoke`: the CRM's API tokens registered in the durable store
(read from standard input, only their digest kept) under the user whose address rules
apply to them."""

from __future__ import annotations

import argparse
import secrets
import sys

from gateway.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit, when_utc
from gateway.cli.store_access import CLOCK, audit_admin, with_store
from gateway.config.model import Config
from gateway.errors import StoreUnavailable
from gateway.policy.model import Policy
from gateway.policy.tokens import MIN_TOKEN_LENGTH, digest
from gateway.stores import DUPLICATE, DurableStore


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
