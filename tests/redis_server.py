"""A real Redis for the tests: the machine's on 127.0.0.1:6379, or one started here from the
`redis-server` binary (installed with apt when missing and we may). Never a fake. A test that
stops Redis takes `own_redis`: a redis-server of its own it may stop and start again."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.process import free_port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _binary() -> str:
    found = shutil.which("redis-server")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "redis-server"],
            check=False,
            capture_output=True,
            timeout=240,
        )
        found = shutil.which("redis-server")
    if found is None:
        pytest.fail(
            "Redis is needed for the shared-store tests: run one on 127.0.0.1:6379 or install "
            "redis-server (apt-get install redis-server)"
        )
    return found


# A Redis that keeps nothing on disk: what a test of its own needs when it never restarts it.
NOTHING_ON_DISK = ("--save", "", "--appendonly", "no")


def spawn_redis(port: int, *options: str) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:`port` with these options, returned once it answers PING;
    one that does not start within 10 s is stopped and the test fails."""
    args = [_binary(), "--port", str(port), "--bind", "127.0.0.1", *options]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _answers(port):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            process.wait(10)
            pytest.fail(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    return process


@contextlib.contextmanager
def redis_of_our_own() -> Iterator[str]:
    """The URL of a redis-server on a free port that keeps nothing on disk, for the `with`."""
    port = free_port()
    process = spawn_redis(port, *NOTHING_ON_DISK)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if _answers(6379):
        yield "redis://127.0.0.1:6379/15"
        return
    with redis_of_our_own() as url:
        yield url


class RedisServer:
    """A `redis-server` of the test's own on a free port, which the test may stop and start
    again (the machine's Redis is left alone). It keeps an append-only file in its folder,
    as the gateway asks of a production Redis: a restart keeps the sessions."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        options = ("--dir", str(self.folder), "--appendonly", "yes", "--save", "")
        self.process = spawn_redis(self.port, *options)

    def stop(self) -> None:
        """SIGTERM: Redis writes what it holds and stops; clients are cut."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
