"""The gateway says at start, once, when the Redis that holds its sessions keeps nothing on
disk: a restart of that Redis signs everyone out. Real redis-server processes, one of each
kind, and the machine's own Redis (started with --save "" --appendonly no)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio

from tests.process import free_port, start_gateway_process, write_config
from tests.redis_server import _binary

WARNING = b"keeps nothing on disk"
RedisStarter = Callable[..., str]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisStarter]:
    """Starts redis-server processes with the options given; stops them all after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> str:
        port = free_port()
        folder = tmp_path / f"redis-{port}"
        folder.mkdir()
        process = subprocess.Popen(
            [_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), *options],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(process)
        deadline = time.monotonic() + 10
        while not _answers(port):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"redis-server {' '.join(options)} did not start")
            time.sleep(0.05)
        return f"redis://127.0.0.1:{port}/0"

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


async def start_log(tmp_path: Path, url: str) -> bytes:
    """The gateway's log from its start until it answers, with `url` as its shared store."""
    config = write_config(
        tmp_path, "http://127.0.0.1:9", f"  shared: {{type: redis, url: '{url}'}}\n"
    )
    gateway = await start_gateway_process(config)
    try:
        return bytes(gateway.log)
    finally:
        await gateway.stop()


async def test_a_redis_that_keeps_nothing_on_disk_is_warned_about_once(
    tmp_path: Path, own_redis: RedisStarter
) -> None:
    url = own_redis("--save", "", "--appendonly", "no")
    log = await start_log(tmp_path, url)
    (line,) = [x for x in log.splitlines() if WARNING in x]
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert b"WARNING gateway.stores: state.shared: the Redis at 127.0.0.1:" + port.encode() in line
    assert b"everyone is signed out" in line


@pytest.mark.parametrize(
    "options",
    [("--save", "", "--appendonly", "yes"), ("--save", "3600 1", "--appendonly", "no")],
    ids=["append-only file", "snapshots"],
)
async def test_a_redis_that_keeps_something_is_not_warned_about(
    tmp_path: Path, own_redis: RedisStarter, options: tuple[str, ...]
) -> None:
    log = await start_log(tmp_path, own_redis(*options))
    assert WARNING not in log


async def test_the_machines_redis_without_persistence_is_warned_about(
    tmp_path: Path, redis_url: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        save = (await client.config_get("save"))["save"]
        aof = (await client.config_get("appendonly"))["appendonly"]
    finally:
        await client.aclose()
    log = await start_log(tmp_path, redis_url)
    # The machines these tests run on start Redis with --save "" --appendonly no.
    assert (WARNING in log) == (save == "" and aof == "no")
