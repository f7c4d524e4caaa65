"""Messages appended as JSON lines to a file (mode 0600): the demo, development and tests.
A real Sender, not a mock; it only writes, and writes each line whole.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from gateway.clock import Clock, SystemClock
from gateway.config.messaging import OutboxProvider
from gateway.senders.protocols import Delivery, Message


def append_line(path: Path, line: bytes) -> None:
    """Append one line with one write(2) on an O_APPEND descriptor.

    POSIX makes each O_APPEND write land at the end of the file, and Linux holds the inode
    lock for the whole write to a regular file, so concurrent senders never interleave lines.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)  # the lines hold live codes
    try:
        found = os.fstat(fd)
        if found.st_mode & 0o077 and found.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)  # a file made by hand or an older version: tighten it
        written = os.write(fd, line)
    finally:
        os.close(fd)
    if written != len(line):
        raise OSError(f"short write: {written} of {len(line)} bytes")


class OutboxSender:
    name = "outbox"

    def __init__(
        self, provider: OutboxProvider, *, clock: Clock | None = None, channel: str = ""
    ) -> None:
        """`channel` ("sms", "email") is written with each line when given."""
        self._path = Path(provider.path)
        self._clock = clock or SystemClock()
        self._channel = channel

    async def send(self, message: Message) -> Delivery:
        record: dict[str, object] = {
            "time": self._clock.now(),
            "to": message.to,
            "subject": message.subject,
            "text": message.text,
        }
        if self._channel:
            record["channel"] = self._channel
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        try:
            # Off the event loop: a slow disk must not stall every request.
            await asyncio.to_thread(append_line, self._path, line)
        except OSError as exc:
            detail = f"cannot write the outbox: {exc.strerror or exc}"
            return Delivery(ok=False, provider=self.name, detail=detail)
        except Exception as exc:  # the Sender contract: a failed delivery is answered
            return Delivery(ok=False, provider=self.name, detail=f"unexpected {type(exc).__name__}")
        return Delivery(ok=True, provider=self.name, detail=str(self._path))

    async def close(self) -> None:
        """Nothing to release: the file is opened for each line."""
