"""The audit trail: every security-relevant event written once as a JSON line (a file or
stdout, at once) and kept in the durable store (in batches, off the request path) so that
`crm-gateway audit tail|search` can answer an auditor. Listeners (the alert rules) see each
event as it happens.

An event never carries a code, secret, password, cookie or token: AuditEvent refuses detail
keys that name one, and callers pass only names, addresses, paths and stable reason codes.

Loss is never silent. A line the file cannot take is counted (crm_gateway_audit_lines_lost)
and each failure episode is logged twice: when it starts and when lines are written again,
with how many were lost; the store's copy keeps the event. Events waiting in memory for a
store that is down are logged when that starts, at most once a minute while it lasts, and
when it ends; those pushed out past MAX_PENDING are counted (crm_gateway_audit_events_dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.clock import Clock
from gateway.errors import StoreUnavailable
from gateway.metrics import AUDIT_DROPPED, AUDIT_LINES_LOST
from gateway.model import AuditEvent
from gateway.stores.protocols import DurableStore

log = logging.getLogger("gateway.audit")

FLUSH_EVERY = 0.5  # seconds between batches to the store
MAX_PENDING = 100_000  # events kept for the store while it is down; the oldest go first
PRUNE_EVERY = 3600.0  # seconds between removals of events older than `keep`
STILL_FAILING_EVERY = 60.0  # seconds between reminders that the store still takes nothing
STDOUT = "-"

Listener = Callable[[AuditEvent], None]


def utc_text(stamp: float) -> str:
    """2026-11-22T01:56:15.123Z: sortable, unambiguous, the same on every machine."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
    return f"{whole}.{int(stamp * 1000) % 1000:03d}Z"


def event_json(event: AuditEvent, event_id: int | None = None) -> dict[str, Any]:
    """The one JSON shape of an event: the file line, `audit … --json` and alert bodies."""
    entry: dict[str, Any] = {} if event_id is None else {"id": event_id}
    entry.update(
        time=utc_text(event.time),
        event=event.name,
        outcome=event.outcome,
        user=event.user,
        ip=event.ip,
        user_agent=event.user_agent,
        path=event.path,
        method=event.method,
        request_id=event.request_id,
        reason=event.reason,
    )
    if event.details:
        entry["details"] = dict(event.details)
    return entry


def event_line(event: AuditEvent) -> bytes:
    return (json.dumps(event_json(event), ensure_ascii=False) + "\n").encode()


class LineWriter:
    """Appends whole lines with one write each: lines from several workers (and from the
    CLI) never interleave in the file (O_APPEND). A file moved away by logrotate is noticed
    within a second and a new one started (no copytruncate or signal needed)."""

    REOPEN_CHECK = 1.0  # seconds between looks at whether the path still names our file

    def __init__(self, target: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self._monotonic = monotonic
        self._fd: int | None = None
        self._inode = (0, 0)
        self._checked = 0.0
        self.lost = 0  # lines lost in the failure episode under way (0: none is)
        self._failing_since = 0.0
        self._lost_counter = AUDIT_LINES_LOST.labels("stdout" if target == STDOUT else "file")

    def write(self, line: bytes) -> None:
        try:
            self._write(line)
        except (OSError, ValueError) as exc:
            self._lose(exc)
            return
        if self.lost:
            self._recovered()

    def _write(self, line: bytes) -> None:
        if self.target == STDOUT:
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
            return
        self._reopen_if_moved()
        if self._fd is None:
            self._fd = os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            found = os.fstat(self._fd)
            self._inode = (found.st_dev, found.st_ino)
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk can take part of a line: the line is lost
            raise OSError(f"only {written} of {len(line)} bytes written")

    def _lose(self, exc: Exception) -> None:
        self._lost_counter.inc()
        if not self.lost:
            self._failing_since = self._monotonic()
            log.error(
                "audit file %s cannot be written (%s): its lines are lost (and counted in "
                "crm_gateway_audit_lines_lost) until it can; every event still goes to the store",
                self.target,
                exc,
            )
        self.lost += 1

    def _recovered(self) -> None:
        log.warning(
            "audit file %s written again: %d line%s lost over %.0fs (the store has the events)",
            self.target,
            self.lost,
            "" if self.lost == 1 else "s",
            self._monotonic() - self._failing_since,
        )
        self.lost = 0

    def _reopen_if_moved(self) -> None:
        now = self._monotonic()
        if self._fd is None or now - self._checked < self.REOPEN_CHECK:
            return
        self._checked = now
        try:
            found = os.stat(self.target)
            same = (found.st_dev, found.st_ino) == self._inode
        except OSError:  # gone, or its folder gone or replaced by a file
            same = False
        if not same:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class AuditTrail:
    def __init__(
        self,
        durable: DurableStore | None,
        clock: Clock,
        *,
        output: str = STDOUT,
        keep: float = 0.0,
    ) -> None:
        """`output`: a file path, "-" for stdout, "" for no line at all (the store only).
        `keep`: seconds events stay in the store; 0 = forever."""
        self._durable = durable
        self._clock = clock
        self._writer = LineWriter(output, clock.monotonic) if output else None
        self._keep = keep
        self._pending: deque[AuditEvent] = deque()
        self._store_failing_since: float | None = None  # monotonic; None while it takes events
        self._store_told_at = 0.0
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self.listeners: list[Listener] = []

    def record(self, name: str, outcome: str, **fields: Any) -> AuditEvent:
        """Build, write and queue one event. Unknown keyword arguments become details."""
        known = {
            k: str(fields.pop(k))
            for k in ("user", "ip", "user_agent", "path", "method", "request_id", "reason")
            if k in fields
        }
        details = tuple(
            sorted((k, v if isinstance(v, int | float) else str(v)) for k, v in fields.items())
        )
        event = AuditEvent(self._clock.now(), name, outcome, details=details, **known)
        self.add(event)
        return event

    def add(self, event: AuditEvent) -> None:
        if self._writer is not None:
            self._writer.write(event_line(event))
        if self._durable is not None:
            if len(self._pending) >= MAX_PENDING:
                self._pending.popleft()
                AUDIT_DROPPED.labels("durable").inc()
            self._pending.append(event)
            if len(self._pending) >= 500:
                self._wake.set()
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("audit listener failed on %s", event.name)

    async def flush(self) -> None:
        """Hand what is pending to the store; on failure keep it for the next try. One flush
        at a time (the background task and a caller may both ask)."""
        if self._durable is None:
            return
        async with self._flushing:
            if not self._pending:
                return
            batch = list(self._pending)
            self._pending.clear()
            try:
                await self._durable.add_audit_events(batch)
            except StoreUnavailable as exc:
                # Back in front of what arrived meanwhile, in order; the oldest go past the cap.
                kept = (batch + list(self._pending))[-MAX_PENDING:]
                dropped = len(batch) + len(self._pending) - len(kept)
                if dropped:
                    AUDIT_DROPPED.labels("durable").inc(dropped)
                self._pending.clear()
                self._pending.extend(kept)
                self._store_failed(exc.detail)
                return
            if self._store_failing_since is not None:
                self._store_back(len(batch))

    def _store_failed(self, detail: str) -> None:
        """Told when it starts and then once a minute, not at every flush (twice a second)."""
        now = self._clock.monotonic()
        if self._store_failing_since is None:
            self._store_failing_since = self._store_told_at = now
            log.warning(
                "audit store unavailable: events wait in memory (%d now, at most %d): %s",
                len(self._pending),
                MAX_PENDING,
                detail,
            )
        elif now - self._store_told_at >= STILL_FAILING_EVERY:
            self._store_told_at = now
            log.warning(
                "audit store still unavailable after %.0fs: %d events wait in memory: %s",
                now - self._store_failing_since,
                len(self._pending),
                detail,
            )

    def _store_back(self, stored: int) -> None:
        since = self._store_failing_since or 0.0
        self._store_failing_since = None
        log.warning(
            "audit store takes events again after %.0fs: %d that waited in memory stored",
            self._clock.monotonic() - since,
            stored,
        )

    async def run(self) -> None:
        """Background: batches to the store, and old events pruned at the first look after
        the start, then once an hour (a monotonic clock counts from the machine's boot: a
        first prune timed from 0 came an hour after boot, whenever the gateway started)."""
        pruned_at: float | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_EVERY)
            self._wake.clear()
            await self.flush()
            now = self._clock.monotonic()
            due = pruned_at is None or now - pruned_at > PRUNE_EVERY
            if self._keep and self._durable is not None and due:
                pruned_at = now
                try:
                    await self._durable.prune_audit(self._clock.now() - self._keep)
                except StoreUnavailable as exc:
                    log.warning("old audit events not pruned: %s", exc.detail)

    async def close(self) -> None:
        await self.flush()
        if self._writer is not None:
            self._writer.close()
