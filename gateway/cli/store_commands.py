"""`crm-gateway store migrate` and `store copy`: the durable store's schema brought up to date,
and every durable record moved from one store to another (a single host's SQLite into the
PostgreSQL that several hosts share). Exit 0 done, 1 failed or refused, 2 a configuration or
the arguments are wrong. Stores are reached through the registry only (gateway.stores): the
migration is the backend's own, and a copy is a snapshot of the source (DurableSnapshots.take,
the same consistent copy a backup makes) put in place in the target.

Decisions:

- Rows are copied as they are: authenticators stay sealed under the same seal keys, so the
  target's gateways need the same `secrets.seal_keys` (the command checks that both files name
  the same current key when both have keys). Ids (audit events, admin requests) and the
  counters the gateways poll are kept, so `audit tail` and the caches carry on.
- Verified: the target is read back and every table's row count and digest must equal the
  source snapshot's (rows only: the SQLite file's schema text may differ between versions).
- A target that holds data (anything beyond what a fresh gateway writes) is replaced only
  with --force. A source a gateway may still have open is copied, with a warning: what it
  writes afterwards stays behind, so stop it before the copy when switching over.
- Not copied: the short-lived shared state (sessions, lockouts): people sign in again after
  switching, unless the shared store (Redis) stays the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections.abc import Callable
from typing import Any

from gateway.cli.backup_file import private_dir, private_file
from gateway.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit, plural
from gateway.cli.store_access import CLOCK, audit_admin, store_problem, with_store
from gateway.config.model import Config
from gateway.errors import Refused, StoreUnavailable
from gateway.policy.model import Policy
from gateway.stores import Contents, durable_address, durable_snapshots, migrate_durable

Loader = Callable[[str], tuple[Config, Policy | None] | None]
Done = tuple[dict[str, Any], list[str]]
NOT_COPIED = "sessions, lockouts and other short-lived shared state (state.shared)"
_BOOKKEEPING = ("meta", "sqlite_sequence")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store = commands.add_parser("store", help="the durable store: migrate its schema, copy it")
    actions = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    migrate = actions.add_parser("migrate", help="bring the store's schema up to date")
    migrate.add_argument("-c", "--config", default="gateway.yaml")
    copy = actions.add_parser("copy", help="copy every durable record into another store")
    copy.add_argument("--from", dest="source", required=True, metavar="OLD.yaml")
    copy.add_argument("--to", dest="target", required=True, metavar="NEW.yaml")
    copy.add_argument("--force", action="store_true", help="replace a target store that holds data")
    for sub in (migrate, copy):
        sub.add_argument("--json", action="store_true", help="machine-readable output")


def store_command(args: argparse.Namespace, load: Loader) -> int:
    if args.store_command == "migrate":
        loaded = load(args.config)
        return EXIT_USAGE if loaded is None else _migrate(args, loaded[0])
    source, target = load(args.source), load(args.target)
    if source is None or target is None:
        return EXIT_USAGE
    try:
        try:
            done, lines = _copy(args, source[0], target[0])
        except OSError as exc:  # a folder we may not write to, a full disk: name the file
            raise Refused("io_failed", f"{exc.filename or 'copy'}: {exc.strerror or exc}") from None
    except Refused as exc:
        print(exc, file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "reason": exc.reason, "error": str(exc)}, indent=2))
        return exc.status
    emit(args.json, {"ok": True, **done}, lines)
    return EXIT_OK


# -- migrate ------------------------------------------------------------------------------------


def _migrate(args: argparse.Namespace, config: Config) -> int:
    settings = config.state.durable
    store, key = durable_address(settings)
    where = f"{store} ({key})"
    try:
        migration = asyncio.run(migrate_durable(settings))
    except StoreUnavailable as exc:
        print(store_problem(config, exc), file=sys.stderr)
        return EXIT_FAILED
    if migration is None:
        return _migrate_itself(args, config, where)
    done = {"store": store, "before": migration.before, "after": migration.after}
    if not migration.steps:
        lines = [
            f"{where}: schema {migration.after}, the newest this crm-gateway knows: up to date"
        ]
    else:
        lines = [f"{where}: schema {migration.before} → {migration.after}"]
        lines += [f"  {step}" for step in migration.steps]
    if migration.steps and migration.before:
        # A store made from nothing is left empty, so that `store copy` may fill it.
        _record(
            config,
            "admin.store_migrated",
            before=migration.before,
            after=migration.after,
            steps=len(migration.steps),
        )
    emit(args.json, {"ok": True, **done, "steps": list(migration.steps)}, lines)
    return EXIT_OK


def _migrate_itself(args: argparse.Namespace, config: Config, where: str) -> int:
    """A store that brings its own schema up to date when the gateway opens it (SQLite):
    its version read, and checked against this code's."""
    snapshots = durable_snapshots(config.state.durable)
    if not snapshots.exists():
        print(f"no durable store at {where}: the gateway creates it at its start", file=sys.stderr)
        return EXIT_FAILED
    try:
        found = snapshots.examine_store(where, "store_damaged").schema
    except Refused as exc:
        print(exc, file=sys.stderr)
        return exc.status
    done = {"store": snapshots.name, "before": found, "after": found, "steps": []}
    if found > snapshots.schema:
        print(
            f"{where}: schema {found} is newer than this crm-gateway knows ({snapshots.schema}):"
            " run the version that wrote it, or a later one",
            file=sys.stderr,
        )
        return EXIT_FAILED
    line = (
        f"{where}: schema {found}; this kind of store is brought up to date by the gateway "
        f"itself when it opens it (to schema {snapshots.schema}): nothing to run"
    )
    emit(args.json, {"ok": True, **done}, [line])
    return EXIT_OK


# -- copy ---------------------------------------------------------------------------------------


def _table_lines(contents: Contents) -> list[str]:
    width = max(len(t) for t in contents.tables)
    lines = [f"  {'table':<{width}}  {'rows':>9}  digest"]
    for table, rows in contents.tables.items():
        digest = contents.table_digests.get(table, "")[:23]
        lines.append(f"  {table:<{width}}  {rows:>9,}  {digest}…")
    return lines


def _compare(read: Contents, written: Contents) -> list[str]:
    """Tables whose rows differ between the snapshot read and the store written."""
    differ = []
    for table in sorted(set(read.tables) | set(written.tables)):
        counts = (read.tables.get(table), written.tables.get(table))
        digests = (read.table_digests.get(table), written.table_digests.get(table))
        if counts[0] != counts[1] or digests[0] != digests[1] or digests[0] is None:
            differ.append(f"{table} ({counts[0]} rows read, {counts[1]} written)")
    return differ


def _same_keys(source: Config, target: Config) -> None:
    """Sealed secrets open only under the keys that sealed them: the target's config must
    hold the source's current seal key (when both name keys; `keys` commands say more)."""
    theirs, ours = source.signin.secrets.seal_keys, target.signin.secrets.seal_keys
    if theirs is None or ours is None:
        return
    if theirs.current[0] not in {key_id for key_id, _ in ours.keys}:
        raise Refused(
            "seal_keys_differ",
            f"{target.source} does not hold the seal key {theirs.current[0]} that sealed the "
            f"authenticators in {source.source}: give both the same secrets.seal_keys",
            EXIT_USAGE,
        )


def _copy(args: argparse.Namespace, source: Config, target: Config) -> Done:
    src, dst = durable_snapshots(source.state.durable), durable_snapshots(target.state.durable)
    if (src.name, src.key) == (dst.name, dst.key):
        raise Refused("same_store", f"{args.source} and {args.target} name the same store")
    _same_keys(source, target)
    if not src.exists():
        raise Refused("no_store", f"no store at {src.name} ({src.key}): nothing to copy")
    held = dst.held_rows()
    if held and not args.force:
        rows = ", ".join(f"{t} {n}" for t, n in held.items())
        raise Refused(
            "store_has_data",
            f"{dst.name} holds data ({rows}): nothing copied; --force replaces it (stop the "
            "gateways that use it first)",
        )
    source_open = src.in_use()
    started = CLOCK.monotonic()
    work = private_dir(src.workspace())
    try:
        copy = private_file(work / "copy.db")
        src.take(copy)
        read = src.examine(copy, src.name, "store_damaged")
        if read.schema == 0:
            raise Refused("not_a_store", f"{src.name} is not a crm-gateway store")
        if read.schema != dst.schema:
            raise Refused(
                "schema_differs",
                f"{src.name} has schema {read.schema} and {dst.name} takes {dst.schema}: run "
                f"crm-gateway store migrate -c {args.source} first",
            )
        dst.examine(copy, f"the copy of {src.name}", "store_damaged")  # the target can read it
        dst.put(copy)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    written = dst.examine_store(f"{dst.name} after the copy", "verify_failed")
    differ = _compare(read, written)
    if differ:
        raise Refused(
            "verify_failed",
            f"{dst.name} does not hold what was read from {src.name}: {'; '.join(differ)} (is "
            "a gateway writing to it?)",
        )
    copied = sum(n for t, n in read.tables.items() if t not in _BOOKKEEPING)
    _record(target, "admin.store_copied", source=src.name, rows=copied, digest=written.digest)
    done = {
        "from": src.name,
        "to": dst.name,
        "schema": read.schema,
        "tables": read.tables,
        "table_digests": read.table_digests,
        "rows": copied,
        "replaced": held,
        "seconds": round(CLOCK.monotonic() - started, 3),
        "not_copied": NOT_COPIED,
    }
    lines = [
        f"copied {src.name} ({src.key}) into {dst.name} ({dst.key})",
        f"  schema {read.schema}, {plural(copied, 'row')} in {len(read.tables)} tables: every "
        "table's rows and digest verified in the target",
        *_table_lines(written),
        f"  not copied: {NOT_COPIED}",
    ]
    if held:
        lines.append(
            f"  replaced what {dst.name} held: " + ", ".join(f"{t} {n}" for t, n in held.items())
        )
    if source_open:
        lines.append(
            f"  warning: a gateway may have {src.name} open: what it writes from now on is not "
            "in the copy; stop it before switching to the new store"
        )
    return done, lines


def _record(config: Config, name: str, **details: str | int) -> None:
    """The command's event in the store's audit trail; a warning when it will not take it."""
    try:
        with_store(
            config, lambda s: audit_admin(config, s, name, "ok", user="", reason="", **details)
        )
    except StoreUnavailable as exc:
        print(f"warning: not recorded in the audit trail: {exc.detail}", file=sys.stderr)
