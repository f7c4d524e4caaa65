"""`crm-gateway backup FILE` and `restore FILE`: the durable store, copied while the gateway
runs, encrypted under the seal key, and verified again at every restore. Exit 0 done, 1 failed
or refused, 2 the configuration or the arguments are wrong. The file format is in
gateway/cli/backup_file.py and the store's side (a consistent snapshot, its digest, putting one in
place) behind the DurableSnapshots seam of gateway/stores (SQLite: stores/sqlite_snapshot.py);
this module decides what is copied where, and says so.

Decisions (the issue: "consistent while running, encrypted, the restore verified"):

- What: every table of the durable store (`state.durable`): authenticators (already sealed),
  recovery-code and token digests, devices, session revocations, audit events, the message
  ledger, admin requests. Not the short-lived shared state (`state.shared`: sessions,
  lockouts, pending challenges): after a restore, people sign in again.
- Consistent: SQLite's online backup API, in one step, from our own read-only connection: one
  read transaction, while the gateway goes on writing (WAL). The copy goes to a private temp
  directory (0700, file 0600) in the store's workspace (beside the SQLite file): plaintext
  never leaves the folder that already holds it in plaintext (not /tmp, not the backup folder
  a sync tool may watch). PostgreSQL: every row read in one REPEATABLE READ, READ ONLY
  transaction and written as a SQLite store file (the same format and digest, so a backup of
  either backend restores into the other), worked on in a private folder in TMPDIR.
- Encrypted under the current seal key (`secrets.seal_keys`), named by its id in the header:
  a backup made before a key rotation restores while the old key stays in the ring. No seal
  keys: exit 2. The backup is as safe as the key file; keep that elsewhere.
- FILE is written as a temp file beside it (0600, fsynced), then linked into place, which
  never clobbers; with --force renamed over an existing FILE. A crash leaves no half FILE.
- Restore: decrypt to a temp file beside the store, every chunk checked, then integrity_check,
  a schema version this gateway knows, and the digest. Only then is the store replaced, by the
  backup API (see SqliteSnapshots.put for why not a rename), and read back: its digest must be
  the backup's. A store that holds data (rows beyond `meta`) is replaced only with --force:
  stop the gateway first (it caches tokens and revocations) and start it after. The backup
  API also keeps the store file's owner and mode; a new store file is made 0600.
  `restore --check FILE` does all the checks and touches no store.
- Audit: admin.backup_created is written after the snapshot (so it is not inside it);
  admin.backup_restored into the restored store once it verified. A refusal is recorded in the
  store it left alone, unless that store is missing, foreign or damaged.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.cli.backup_file import private_dir, private_file, seal, unseal, write_new
from gateway.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit, when_utc
from gateway.cli.store_access import CLOCK, audit_admin, with_store
from gateway.config.model import Config
from gateway.crypto import KeyRing
from gateway.errors import Refused, StoreUnavailable
from gateway.policy.model import Policy
from gateway.stores import Contents, durable_snapshots

NOT_INCLUDED = "sessions, lockouts and other short-lived shared state (state.shared)"
# A store missing, foreign or damaged is not written to, not even to record a refusal
# (sqlite_failed: SQLite's own error, e.g. the store stayed locked; postgres_failed: the
# server could not be reached or refused).
_UNRECORDED = {"no_store", "store_unreadable", "not_a_store", "store_damaged", "sqlite_failed"}
_UNRECORDED |= {"postgres_failed"}

Done = tuple[dict[str, Any], list[str]]  # for --json, and the lines for people


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = commands.add_parser(
        "backup", help="write an encrypted copy of the durable store (safe while it runs)"
    )
    backup.add_argument("file", metavar="FILE")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    restore = commands.add_parser(
        "restore", help="verify a backup, then put it in place of the durable store"
    )
    restore.add_argument("file", metavar="FILE")
    restore.add_argument(
        "--check", action="store_true", help="only verify FILE and show what it holds"
    )
    restore.add_argument(
        "--force", action="store_true", help="replace a store that holds data (stop the gateway)"
    )
    for sub in (backup, restore):
        sub.add_argument("-c", "--config", default="gateway.yaml")
        sub.add_argument("--json", action="store_true", help="machine-readable output")


def backup_command(args: argparse.Namespace, config: Config, policy: Policy | None) -> int:
    return _run(args, config, _backup, "admin.backup_created")


def restore_command(args: argparse.Namespace, config: Config, policy: Policy | None) -> int:
    return _run(args, config, _restore, "admin.backup_restored")


def _ring(config: Config) -> KeyRing:
    ring = config.signin.secrets.seal_keys
    if ring is None:
        raise Refused(
            "no_seal_keys",
            f"{config.source}: backups are encrypted with the seal key: add secrets.seal_keys "
            "(a key file; `crm-gateway keys generate` prints a key line)",
            EXIT_USAGE,
        )
    return ring


def _summary(contents: Contents) -> str:
    kept = contents.tables.items()
    shown = ", ".join(f"{t} {n}" for t, n in kept if n and t not in ("meta", "sqlite_sequence"))
    return f"{len(contents.tables)} tables, {contents.rows} rows ({shown or 'no data'})"


def _size(count: int) -> str:
    return f"{count / 1048576:.1f} MiB" if count >= 1048576 else f"{count / 1024:.1f} KiB"


def _backup(args: argparse.Namespace, config: Config) -> Done:
    ring = _ring(config)
    snapshots, out = durable_snapshots(config.state.durable), Path(args.file)
    store = snapshots.name
    where = str(out.absolute())
    if out.exists() and not args.force:
        raise Refused("file_exists", f"{out} exists: --force replaces it")
    if not snapshots.exists():
        raise Refused("no_store", f"no store at {store} ({snapshots.key}): nothing to back up")
    if not out.parent.is_dir():
        raise Refused("no_directory", f"{out.parent} is not a directory")
    started = CLOCK.monotonic()
    work = private_dir(snapshots.workspace())
    try:
        copy = private_file(work / "snapshot.db")
        snapshots.take(copy)
        contents = snapshots.examine(copy, store, "store_damaged")
        if contents.schema == 0:
            raise Refused("not_a_store", f"{store} is not a crm-gateway store")
        created = CLOCK.now()
        facts = {
            "created": created,
            "gateway": __version__,
            "schema": contents.schema,
            "tables": contents.tables,
            "digest": contents.digest,
            "size": copy.stat().st_size,
        }
        try:
            size = write_new(out, args.force, lambda f: seal(copy, f, facts, ring))
        except OSError as exc:
            raise Refused("write_failed", f"{out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    key_id = ring.current[0]
    _record(
        config,
        "admin.backup_created",
        file=where,
        bytes=size,
        tables=len(contents.tables),
        rows=contents.rows,
        key_id=key_id,
        digest=contents.digest,
    )
    done = {
        "file": where,
        "bytes": size,
        "store": store,
        "created": when_utc(created),
        "key_id": key_id,
        "schema": contents.schema,
        "digest": contents.digest,
        "tables": contents.tables,
        "rows": contents.rows,
        "seconds": round(CLOCK.monotonic() - started, 3),
        "not_included": NOT_INCLUDED,
    }
    return done, [
        f"backup written: {out} ({_size(size)}, encrypted with seal key {key_id})",
        f"  snapshot of {store} at {done['created']} UTC, schema {contents.schema}",
        f"  {_summary(contents)}",
        f"  digest {contents.digest}",
        f"  not included: {NOT_INCLUDED}",
    ]


def _restore(args: argparse.Namespace, config: Config) -> Done:
    ring = _ring(config)
    snapshots, backup = durable_snapshots(config.state.durable), Path(args.file)
    store = snapshots.name
    if not backup.is_file():
        raise Refused("no_file", f"no backup file at {backup}")
    in_use = snapshots.in_use()  # looked at before we read it
    held = {} if args.check else snapshots.held_rows()
    if held and not args.force:
        rows = ", ".join(f"{t} {n}" for t, n in held.items())
        raise Refused(
            "store_has_data",
            f"{store} holds data ({rows}): stop the gateway, then restore with --force to "
            "replace it",
        )
    started = CLOCK.monotonic()
    # --check where the store's folder does not exist: the system's temp folder, none made.
    elsewhere = args.check and not snapshots.workspace().is_dir()
    work = private_dir(Path(tempfile.gettempdir()) if elsewhere else snapshots.workspace())
    try:
        plain = private_file(work / "restore.db")
        with plain.open("wb") as out:
            header = unseal(backup, ring, out)
        contents = snapshots.examine(plain, f"the database in {backup}", "backup_damaged")
        if not 1 <= contents.schema <= snapshots.schema:
            raise Refused(
                "schema_unknown",
                f"{backup} holds store schema {contents.schema}; this crm-gateway knows up to "
                f"{snapshots.schema}: restore it with crm-gateway {header['gateway']}",
            )
        if (contents.digest, contents.tables) != (header["digest"], header["tables"]):
            raise Refused("digest_mismatch", f"{backup}: the contents do not match the header")
        if not args.check:
            snapshots.put(plain)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    where = str(backup.absolute())
    done: dict[str, Any] = {
        "file": where,
        "created": when_utc(header["created"]),
        "gateway": header["gateway"],
        "key_id": header["key_id"],
        "schema": contents.schema,
        "digest": contents.digest,
        "tables": contents.tables,
        "rows": contents.rows,
        "restored": not args.check,
    }
    made = (
        f"  made {done['created']} UTC by crm-gateway {header['gateway']}, schema "
        f"{contents.schema}, seal key {header['key_id']}"
    )
    if args.check:
        lines = [f"{backup}: a valid backup, digest verified (nothing restored)", made]
        return done, [*lines, f"  {_summary(contents)}"]
    after = snapshots.examine_store(f"{store} after the restore", "verify_failed")  # read back
    if after.digest != contents.digest:
        raise Refused(
            "verify_failed",
            f"{store} changed during the restore (is a gateway writing to it?): stop it and "
            "restore again with --force",
        )
    done |= {"store": store, "replaced": held}
    done["seconds"] = round(CLOCK.monotonic() - started, 3)
    _record(
        config,
        "admin.backup_restored",
        file=where,
        tables=len(contents.tables),
        rows=contents.rows,
        key_id=header["key_id"],
        digest=contents.digest,
        backup_created=done["created"],
    )
    lines = [f"restored {backup} into {store}: digest verified", made, f"  {_summary(after)}"]
    lines.append(f"  not in a backup: {NOT_INCLUDED}")
    if in_use:
        lines.append("  a gateway may have the store open: restart it (it caches tokens)")
    return done, lines


def _run(
    args: argparse.Namespace,
    config: Config,
    work: Callable[[argparse.Namespace, Config], Done],
    audited: str,
) -> int:
    """A summary (or JSON) on success; on refusal the reason on stderr (and as JSON), and
    recorded in the store when there is a sound one: a forged backup is a security event."""
    try:
        try:
            done, lines = work(args, config)
        except OSError as exc:  # a folder we may not write to, a full disk: name the file
            where = exc.filename or args.file
            raise Refused("io_failed", f"{where}: {exc.strerror or exc}") from None
    except Refused as exc:
        print(exc, file=sys.stderr)
        if args.json:
            print(json.dumps({"ok": False, "reason": exc.reason, "error": str(exc)}, indent=2))
        checking = getattr(args, "check", False)
        if exc.status == EXIT_FAILED and exc.reason not in _UNRECORDED and not checking:
            _audit_refusal(config, audited, exc, str(Path(args.file).absolute()))
        return exc.status
    emit(args.json, {"ok": True, **done}, lines)
    return EXIT_OK


def _audit_refusal(config: Config, name: str, exc: Refused, file: str) -> None:
    try:
        if not durable_snapshots(config.state.durable).exists():
            return  # no store to record it in, and none is made for it
    except Refused:
        return  # a store server that does not answer: the refusal is said, not recorded
    failed = exc.reason in ("write_failed", "io_failed", "verify_failed")
    _record(config, name, "failed" if failed else "refused", reason=exc.reason, file=file)


def _record(
    config: Config, name: str, outcome: str = "ok", *, reason: str = "", **details: str | int
) -> None:
    """The command's event in the audit trail. A store that will not take it (locked by a
    busy gateway for longer than its timeout) gets a warning, not a traceback: what the
    command did stands either way."""
    try:
        with_store(
            config,
            lambda s: audit_admin(config, s, name, outcome, user="", reason=reason, **details),
        )
    except StoreUnavailable as exc:
        print(f"warning: not recorded in the audit trail: {exc.detail}", file=sys.stderr)
