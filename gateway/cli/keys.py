"""`crm-gateway keys generate|rotate`: new key lines, and every stored secret moved to the
current seal key. Sealing is crypto.Sealer's and the purposes are the factors'
(gateway.factors): this module reads, re-seals, checks and swaps, and never prints or
records a secret."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit, when_utc
from gateway.cli.store_access import CLOCK, audit_admin, with_store
from gateway.config.model import Config
from gateway.crypto import KeyRing, Sealer, new_key_line
from gateway.errors import KeyProblem, SealBroken, StoreUnavailable
from gateway.factors.registry import SEALED
from gateway.policy.model import Policy
from gateway.stores.protocols import SEAL_RING_NOTE, STORE_MISSING, Authenticator, DurableStore

ROTATE_HELP = """\
Seal keys (secrets.seal_keys, newest first) protect the TOTP secrets in the durable store.
  1. crm-gateway keys generate         prints a new line such as k20261122:...
  2. put that line FIRST in the seal keys file; keep the old lines (they still read)
  3. restart the gateway (SIGHUP reloads only the policies): it now seals with the new key
  4. crm-gateway keys rotate           re-seals every stored secret under the new key
  5. remove the key ids it reports as no longer used, and restart again

Safe while the gateway runs: a value is replaced only after it opened with the new key, and
only if it is still what was read (one removed or re-enrolled meanwhile is skipped). A value
that no key of the ring opens is named (exit 1) and left as it is. The gateway notes in the
store which keys it started with: if step 3 was skipped, rotate refuses (exit 1) rather than
re-seal under a key the running gateway could not open (--force when no gateway uses the
store any more).

Briefly held values (CRM cookies during a sign-in, an enrolment in progress, SMS and e-mail
codes) follow the key the gateway runs with: one made just before a restart may not open
after it, and that sign-in starts over. Backups (crm-gateway backup) are encrypted under the
seal key that was current when they were made: keep a removed key somewhere safe for as long
as such backups are kept; after restoring one, put its key back and run keys rotate again.

Session keys (secrets.session_keys) sign cookies and need no re-sealing: put a new line
first and restart; cookies signed with an older key are accepted until it is removed. Remove
it after sessions.absolute_timeout (12h by default) and sessions end as they would have
(a device remembered under it asks for a second factor once more). After a leak, remove it
at once and restart: everyone signs in again.
"""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="signing and sealing keys: generate, rotate")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = actions.add_parser(
        "generate", help="print a new key line for secrets.session_keys or secrets.seal_keys"
    )
    generate.add_argument("--id", default="", help="key id (default: k + today's date, UTC)")
    rotate = actions.add_parser(
        "rotate",
        help="re-seal every stored secret under the current (first) seal key",
        description=ROTATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rotate.add_argument("-c", "--config", default="gateway.yaml")
    rotate.add_argument("--dry-run", action="store_true", help="show what would change")
    rotate.add_argument(
        "--force",
        action="store_true",
        help="re-seal even though the gateway last started without the current key (only "
        "when no gateway uses this store any more)",
    )
    rotate.add_argument("--json", action="store_true", help="machine-readable output")


def generate_command(key_id: str) -> int:
    """Needs no config: a new key is made before any config names it."""
    key_id = key_id or "k" + datetime.fromtimestamp(CLOCK.now(), UTC).strftime("%Y%m%d")
    try:
        print(new_key_line(key_id))
    except KeyProblem as exc:
        print(exc, file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# -- rotation: plain functions over a store and a sealer ------------------------------------


@dataclass(frozen=True)
class Unopened:
    """A stored value no key of the ring opens: named by authenticator and user, never shown."""

    auth_id: str
    user: str
    key_id: str
    reason: str


@dataclass
class Rotation:
    ring: tuple[str, ...]  # newest (current) first
    dry_run: bool
    before: Counter[str] = field(default_factory=Counter)  # stored values per key id
    after: Counter[str] = field(default_factory=Counter)
    resealed: int = 0  # in a dry run: would be
    skipped: int = 0  # removed or changed between the read and the write
    unopened: list[Unopened] = field(default_factory=list)
    snapshot: tuple[str, str] | None = None  # (path, key id) of sessions kept at the last stop

    @property
    def current(self) -> str:
        return self.ring[0]

    @property
    def unused(self) -> list[str]:
        """Old key ids of the ring no stored value needs any more."""
        waiting = self.snapshot[1] if self.snapshot else ""
        return [k for k in self.ring[1:] if not self.after[k] and k != waiting]


def resealed(sealer: Sealer, row: Authenticator) -> bytes:
    """The row's secret sealed under the current key, proven to open with that key alone.
    SealBroken when the stored value does not open (or is of a kind this version can't)."""
    purpose_of = SEALED.get(row.kind)
    if purpose_of is None:
        raise SealBroken(f"an authenticator of kind {row.kind!r} is not re-sealed by this version")
    purpose = purpose_of(row.user, row.id)
    secret = sealer.unseal(row.sealed, purpose)
    fresh = sealer.seal(secret, purpose)
    if Sealer(KeyRing((sealer.ring.current,))).unseal(fresh, purpose) != secret:
        raise SealBroken("the re-sealed value does not open with the current key")
    return fresh


async def rotate(
    store: DurableStore, sealer: Sealer, rows: list[Authenticator], *, dry_run: bool
) -> Rotation:
    """Re-seal `rows` (as read from `store`) under the current key; every value is opened,
    the current ones too, so one that no longer opens is found before its key is removed."""
    current = sealer.ring.current[0]
    rotation = Rotation(ring=tuple(key_id for key_id, _ in sealer.ring.keys), dry_run=dry_run)
    projected: Counter[str] = Counter()
    for row in rows:
        under = sealer.key_id(row.sealed)
        rotation.before[under] += 1
        try:
            fresh = resealed(sealer, row)
        except SealBroken as exc:
            rotation.unopened.append(Unopened(row.id, row.user, under, str(exc)))
            projected[under] += 1
            continue
        projected[current] += 1
        if under == current and row.key_id == current:
            continue
        # Compare and swap: a row removed or changed since it was read stays as it is now.
        if dry_run or await store.reseal_authenticator(row.id, fresh, current, expected=row.sealed):
            rotation.resealed += 1
        else:
            rotation.skipped += 1
    if dry_run:
        rotation.after = projected
    else:
        # Read again: what the store holds now, enrolments made meanwhile included.
        rotation.after = Counter(sealer.key_id(r.sealed) for r in await store.all_authenticators())
    return rotation


async def gateway_ring(store: DurableStore) -> tuple[list[str], float] | None:
    """The seal key ids a running gateway holds, and when it started; None when the last
    one to start has stopped (gracefully) or none ever started on this store."""
    found = await store.note(SEAL_RING_NOTE)
    if not found:
        return None
    try:
        ring = json.loads(found)
        if ring.get("stopped"):
            return None
        return [str(i) for i in ring["ids"]], float(ring["started"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _snapshot_key(config: Config, sealer: Sealer) -> tuple[str, str] | None:
    """(path, key id) of sessions sealed at the gateway's last stop, waiting for its next
    start (it reads and deletes them then). Not re-sealed here: the gateway may be starting."""
    from gateway.web.app import snapshot_file  # the one place that names the file

    path = snapshot_file(config)
    if path is None:
        return None
    try:
        with path.open("rb") as snapshot:
            head = snapshot.read(64)
    except OSError:
        return None
    return str(path), sealer.key_id(head)


# -- the command ------------------------------------------------------------------------------


def rotate_command(args: argparse.Namespace, config: Config, _policy: Policy | None) -> int:
    ring = config.signin.secrets.seal_keys
    if ring is None:
        print(
            f"{args.config}: secrets.seal_keys is not configured: keys rotate re-seals stored "
            "secrets under its first key (make one with: crm-gateway keys generate)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    sealer = Sealer(ring)

    async def work(store: DurableStore) -> Rotation | str:
        held = await gateway_ring(store)
        if held is not None and ring.current[0] not in held[0] and not args.force:
            return (
                f"a gateway started {when_utc(held[1])} UTC holding seal keys "
                f"{', '.join(held[0])} and has not stopped: it could not open secrets sealed "
                f"under {ring.current[0]}. Restart it with the new seal keys file first, then "
                "run keys rotate again (--force only if it is not running: killed, or gone)"
            )
        rotation = await rotate(
            store, sealer, await store.all_authenticators(), dry_run=args.dry_run
        )
        rotation.snapshot = _snapshot_key(config, sealer)
        if not args.dry_run:
            await audit_admin(
                config,
                store,
                "admin.keys_rotated",
                "failed" if rotation.unopened else "ok",
                resealed=rotation.resealed,
                skipped=rotation.skipped,
                failed=len(rotation.unopened),
                current=rotation.current,
                unused=",".join(rotation.unused),
            )
        return rotation

    try:
        rotation = with_store(config, work)
    except StoreUnavailable as exc:
        if exc.reason == STORE_MISSING:
            raise  # nothing to re-seal: cli.main names the store that is not there
        # Each value is swapped on its own: what was re-sealed stays, and a rerun is safe.
        print(f"stopped: {exc.detail or exc}; run it again", file=sys.stderr)
        return EXIT_FAILED
    if isinstance(rotation, str):
        print(f"refused: {rotation}", file=sys.stderr)
        return EXIT_FAILED
    for bad in rotation.unopened:
        print(
            f"authenticator {bad.auth_id} of {bad.user} (sealed under {bad.key_id}): "
            f"{bad.reason}; left as it is (the user can enrol again after "
            f"crm-gateway users reset-2fa {bad.user})",
            file=sys.stderr,
        )
    emit(args.json, _as_json(rotation), _as_lines(rotation))
    return EXIT_FAILED if rotation.unopened else EXIT_OK


def _key_ids(rotation: Rotation) -> list[str]:
    """The ring's ids in its order, then ids stored values name that the ring lacks."""
    stranger = sorted((set(rotation.before) | set(rotation.after)) - set(rotation.ring))
    return [*rotation.ring, *stranger]


def _state(rotation: Rotation, key_id: str) -> str:
    if key_id == rotation.current:
        return "current"
    if key_id not in rotation.ring:
        return "not in the ring"
    if key_id in rotation.unused:
        return "no longer used"
    return "still used" if rotation.after[key_id] else "still used by the kept sessions"


def _as_json(rotation: Rotation) -> dict[str, Any]:
    snapshot = rotation.snapshot
    return {
        "current": rotation.current,
        "dry_run": rotation.dry_run,
        "keys": [
            {
                "id": key_id,
                "before": rotation.before[key_id],
                "after": rotation.after[key_id],
                "state": _state(rotation, key_id),
            }
            for key_id in _key_ids(rotation)
        ],
        "resealed": rotation.resealed,
        "skipped": rotation.skipped,
        "failed": [
            {"id": u.auth_id, "user": u.user, "key_id": u.key_id, "reason": u.reason}
            for u in rotation.unopened
        ],
        "unused": rotation.unused,
        "session_snapshot": {"path": snapshot[0], "key_id": snapshot[1]} if snapshot else None,
    }


def _as_lines(rotation: Rotation) -> list[str]:
    snapshot = rotation.snapshot
    done = "would re-seal" if rotation.dry_run else "re-sealed"
    lines = ["dry run: nothing written"] if rotation.dry_run else []
    lines.append(f"{'KEY ID':<24} {'BEFORE':>6} {'AFTER':>6}  STATE")
    lines += [
        f"{key_id:<24} {rotation.before[key_id]:>6} {rotation.after[key_id]:>6}  "
        f"{_state(rotation, key_id)}"
        for key_id in _key_ids(rotation)
    ]
    lines.append(
        f"{done} {rotation.resealed}, skipped {rotation.skipped} (removed or changed meanwhile), "
        f"failed {len(rotation.unopened)}"
    )
    if snapshot and snapshot[1] != rotation.current:
        lines.append(
            f"the sessions kept at the last stop ({snapshot[0]}) are sealed under {snapshot[1]}: "
            "start the gateway once (it reads them) before removing that key"
        )
    if rotation.unused:
        lines.append(
            f"no stored value uses {', '.join(rotation.unused)} any more: remove "
            f"{'it' if len(rotation.unused) == 1 else 'them'} from secrets.seal_keys and restart"
        )
    return lines
