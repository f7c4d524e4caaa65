"""Runs the real `python -m gateway` as a child process, for tests that need the whole
program: signals, workers, memory of the gateway alone, commands as an operator runs them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

# No request in these tests should take long: a stuck one fails with the gateway's log.
QUICK = aiohttp.ClientTimeout(total=15)

_LISTENING = re.compile(rb"listening on http://(?P<host>[^ ]+):(?P<port>\d+)")


@dataclass
class GatewayProcess:
    process: asyncio.subprocess.Process
    port: int
    log: bytearray

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self, field: str = "VmRSS") -> int:
        """Resident memory of the gateway process (and its workers, if any), in KiB."""
        total = 0
        for pid in [self.process.pid, *self.children()]:
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]
        return total

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                # The whole group: a worker left behind would hold the log pipe open, and
                # waiting for the process (which waits for its pipes) would never end.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await asyncio.wait_for(self.process.wait(), 10)
                raise AssertionError(
                    f"the gateway did not stop within 20 s:\n{self.log.decode(errors='replace')}"
                ) from None
        return self.process.returncode or 0


async def _pump(stream: asyncio.StreamReader, log: bytearray) -> None:
    while line := await stream.readline():
        log.extend(line)


async def start_gateway_process(config: Path, *args: str) -> GatewayProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "-c",
        str(config),
        "--listen",
        "127.0.0.1:0",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group: stop() can end every worker
    )
    assert process.stderr is not None
    log = bytearray()
    while True:
        line = await asyncio.wait_for(process.stderr.readline(), 20)
        if not line:
            raise AssertionError(f"gateway exited: {log.decode(errors='replace')}")
        log.extend(line)
        match = _LISTENING.search(line)
        if match:
            break
    asyncio.get_running_loop().create_task(_pump(process.stderr, log))
    running = GatewayProcess(process, int(match["port"]), log)
    async with aiohttp.ClientSession(timeout=QUICK) as http:
        for _ in range(200):
            try:
                async with http.get(f"{running.url}/_gateway/healthz") as r:
                    if r.status == 200:
                        return running
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.05)
    await running.stop()
    raise AssertionError(f"gateway did not become healthy:\n{running.log.decode(errors='replace')}")


def free_port() -> int:
    """A loopback port nothing listens on right now (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(directory: Path, upstream_url: str, extra: str = "") -> Path:
    path = directory / "gateway.yaml"
    path.write_text(
        "listen: 127.0.0.1:0\n"
        f"upstream:\n  url: {upstream_url}\n"
        f"state:\n  durable: {{type: sqlite, path: {directory}/gateway.db}}\n"
        f"{extra}"
    )
    return path


def run_command(
    *args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` run to its end, as an operator's shell runs it; its output as
    text. Blocks: for commands that need no server in this test's event loop."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


async def run_command_async(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """`python -m gateway ARGS` run to its end beside this test's servers: (exit status,
    stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()  # a hung command fails the test, and is not left running
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()
