"""gateway/tasks.py: the one owner of tasks that outlive the code that starts them. A crash
is logged, a close waits for a grace and cancels the rest (naming them), a stop ends one, and
work started shielded goes on when its caller is cancelled."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.tasks import Background


async def test_a_task_that_crashes_is_logged_with_its_name_and_let_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = Background("test")

    async def crash() -> None:
        raise RuntimeError("boom")

    task = owner.spawn(crash(), name="notice to alice")
    await asyncio.wait({task})
    await asyncio.sleep(0)  # the done callback runs
    assert len(owner) == 0
    [record] = [r for r in caplog.records if r.name == "gateway.tasks"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "notice to alice failed"
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


async def test_close_lets_work_finish_within_the_grace_and_cancels_the_rest_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    owner = Background("test")
    finished: list[str] = []

    async def work(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        finished.append(name)

    owner.spawn(work("quick", 0.01), name="quick")
    slow = owner.spawn(work("slow", 60), name="slow one")
    await owner.close(grace=0.5)
    assert finished == ["quick"]
    assert slow.cancelled()
    assert len(owner) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.tasks"]
    assert messages == ["1 test tasks cancelled at shutdown: slow one"]


async def test_stop_ends_one_task_and_leaves_the_others(caplog: pytest.LogCaptureFixture) -> None:
    owner = Background("test")
    watcher = owner.spawn(asyncio.sleep(60), name="watcher")
    other = owner.spawn(asyncio.sleep(60), name="other")
    await owner.stop(watcher)
    assert watcher.cancelled() and not other.done()
    await owner.close()
    assert other.cancelled()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_shielded_work_goes_on_when_its_caller_is_cancelled() -> None:
    owner = Background("test")
    counted: list[int] = []
    started = asyncio.Event()

    async def count() -> int:
        started.set()
        await asyncio.sleep(0.05)
        counted.append(1)
        return 1

    caller = asyncio.create_task(owner.shielded(count(), name="password count"))
    await started.wait()
    caller.cancel()  # the client left
    with pytest.raises(asyncio.CancelledError):
        await caller
    await owner.close(grace=1.0)  # …and the count still happened
    assert counted == [1]


async def test_shielded_gives_the_result_to_a_caller_that_waits() -> None:
    owner = Background("test")

    async def answer() -> str:
        return "sent"

    assert await owner.shielded(answer(), name="answer") == "sent"
    await owner.close()
