"""Background tasks with one owner: each started by name, kept until it ends, its crash
logged (nothing dies silently), and every one still running awaited for a grace, then
cancelled, when the owner closes. The only way the gateway starts a task that outlives the
code that started it (a WebSocket's two pumps live and die inside their request)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger("gateway.tasks")
T = TypeVar("T")


class Background:
    def __init__(self, what: str = "background") -> None:
        self._what = what  # for the log: "alert delivery", "gateway"
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    async def shielded(self, work: Coroutine[Any, Any, T], *, name: str) -> T:
        """Its result, awaited by the caller; a caller cancelled meanwhile (a client that
        left) does not cancel the work, which goes on under this owner (and is waited for,
        then cancelled, when the owner closes): a count or a sent message is never lost
        half-way."""
        task: asyncio.Task[T] = self.spawn(work, name=name)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def running(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    async def stop(self, task: asyncio.Task[Any]) -> None:
        """Cancel one task (a watcher that runs until shutdown) and wait until it has ended."""
        task.cancel()
        await asyncio.wait({task})

    async def close(self, grace: float = 0.0) -> None:
        """Let what runs finish for up to `grace` seconds, then cancel the rest (said in the
        log) and wait for them to end."""
        if not self._tasks:
            return
        running = set(self._tasks)
        if grace > 0:
            _, running = await asyncio.wait(running, timeout=grace)
        for task in running:
            task.cancel()
        if running:
            names = ", ".join(sorted(task.get_name() for task in running))
            log.warning("%d %s tasks cancelled at shutdown: %s", len(running), self._what, names)
            await asyncio.wait(running)
