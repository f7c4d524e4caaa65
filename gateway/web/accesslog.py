"""The access log: one line per request, in the format of the gateway's other log lines, at a
cost next to nothing on the request path.

A line is built once from values the request already has (no logging record, no caller
lookup); the date and time are formatted at most once a second; lines wait in memory and are
written together every FLUSH_EVERY seconds (or as soon as MAX_WAITING wait) by one task, and
whatever waits is written at a graceful stop. A process killed outright loses at most the
last FLUSH_EVERY seconds of lines. It writes to standard error, like the logging handler, and
only while the `gateway.access` logger is enabled for INFO (logging.level: info or debug).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import TextIO

from gateway.clock import Clock

FLUSH_EVERY = 0.2  # seconds a line may wait before it is written
MAX_WAITING = 512  # lines that make a write at once
LOGGER = "gateway.access"
_TEXT_TIME = "%Y-%m-%d %H:%M:%S"  # the logging handler's, before its milliseconds

log = logging.getLogger("gateway")


def logged_path(raw_path: str) -> str:
    """A request's path as the access log writes it: without its query (query strings can
    carry API tokens), at most 512 characters."""
    return raw_path.split("?", 1)[0][:512]


class AccessLog:
    def __init__(self, clock: Clock, *, json_lines: bool = False, stream: TextIO | None = None):
        self._clock = clock
        self._json = json_lines
        self._stream = stream  # None: sys.stderr as it is when written (tests replace it)
        self._logger = logging.getLogger(LOGGER)  # only its level is asked, once a request
        self._waiting: list[str] = []
        self._second = -1
        self._stamp = ""
        self.lost = 0  # lines that could not be written (standard error closed)

    @property
    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def record(
        self,
        rid: str,
        ip: str,
        method: str,
        path: str,
        status: int,
        seconds: float,
        user: str,
        decision: str,
    ) -> None:
        """`RID IP METHOD PATH STATUS DURATION user=U decision=D` (status 499: the client
        left first). `path` without its query: query strings can carry API tokens."""
        now = self._clock.now()
        if self._json:
            message = (
                f"{rid} {ip} {method} {path} {status} {seconds * 1000:.1f}ms "
                f"user={user} decision={decision}"
            )
            stamp = self._time(now, "%Y-%m-%dT%H:%M:%S%z")
            line = (
                f'{{"time": "{stamp}", "level": "info", "logger": "{LOGGER}", '
                f'"message": {json.dumps(message, ensure_ascii=False)}}}'
            )
        else:  # the usual line, built in one step
            stamp = self._time(now, _TEXT_TIME)
            line = (
                f"{stamp},{int(now * 1000) % 1000:03d} INFO {LOGGER}: {rid} {ip} {method} "
                f"{path} {status} {seconds * 1000:.1f}ms user={user} decision={decision}"
            )
        self._waiting.append(line)
        if len(self._waiting) >= MAX_WAITING:
            self.flush()

    def _time(self, now: float, pattern: str) -> str:
        """The local date and time as the logging handler writes it, made once a second."""
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(pattern, time.localtime(second))
        return self._stamp

    def flush(self) -> None:
        """Write every waiting line, in one write."""
        if not self._waiting:
            return
        lines, self._waiting = self._waiting, []
        stream = self._stream or sys.stderr
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError):  # closed or gone (a pipe whose reader left)
            self.lost += len(lines)

    async def run(self) -> None:
        """Until cancelled: write what waits every FLUSH_EVERY seconds."""
        try:
            while True:
                await asyncio.sleep(FLUSH_EVERY)
                self.flush()
        finally:
            self.flush()
            if self.lost:
                log.warning("access log: %d lines could not be written", self.lost)
