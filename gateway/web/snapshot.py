"""Sessions kept across a restart with a shared store held in process memory (InProcessStore):
written sealed beside the SQLite file at shutdown, read back (and deleted) at start. A crash
loses them; a restart, an upgrade or a config change does not sign anyone out."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

from gateway.clock import Clock
from gateway.crypto import Sealer
from gateway.errors import SealBroken
from gateway.stores import InProcessStore

log = logging.getLogger("gateway.state")
_PURPOSE = "shared-store snapshot"


def save_snapshot(path: Path, shared: InProcessStore, sealer: Sealer, clock: Clock) -> None:
    entries = [[k, left, base64.b64encode(v).decode()] for k, left, v in shared.export()]
    data = json.dumps({"saved": clock.now(), "entries": entries}).encode()
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(sealer.seal(data, _PURPOSE))
        temporary.replace(path)
    except OSError as exc:
        log.warning("sessions not kept for the next start: %s", exc)
        return
    log.info("kept %d session entries for the next start in %s", len(entries), path)


def restore_snapshot(path: Path, shared: InProcessStore, sealer: Sealer, clock: Clock) -> None:
    try:
        sealed = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("sessions of the last run not read: %s", exc)
        return
    # Used once: a copy left behind must not bring sessions back after a later crash.
    path.unlink(missing_ok=True)
    try:
        found = json.loads(sealer.unseal(sealed, _PURPOSE))
        elapsed = max(0.0, clock.now() - float(found["saved"]))
        entries = [(str(k), float(t), base64.b64decode(v)) for k, t, v in found["entries"]]
    except (SealBroken, ValueError, KeyError, TypeError) as exc:
        log.warning("sessions of the last run not restored (%s): everyone signs in again", exc)
        return
    shared.restore(entries, elapsed)
    log.info("restored %d session entries from the last run", len(shared))
