"""The real program when workers die: at start (a store that cannot be opened fails in each
worker, never in the supervisor) the supervisor gives up with a clear message and exit
status 1 instead of restarting them in a loop while clients wait on the port; a worker that
dies while serving is replaced as before."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import aiohttp

from gateway.web.supervisor import QUICK_FAILURES
from tests.conftest import Served
from tests.process import QUICK, start_gateway_process, write_config


def _broken_store_config(tmp_path: Path, upstream: str, workers: int) -> Path:
    """A config every check passes, with a store file that is not a database: only opening
    the store (in the worker, at start) finds out."""
    (tmp_path / "gateway.db").write_bytes(b"this is not an SQLite database\n" * 200)
    return write_config(tmp_path, upstream, f"workers: {workers}\n")


async def _run(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "gateway", "run", "-c", str(config), "--listen", "127.0.0.1:0"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )


async def _port(process: asyncio.subprocess.Process, log: bytearray) -> int:
    assert process.stderr is not None
    while b"listening on http://127.0.0.1:" not in log:
        line = await asyncio.wait_for(process.stderr.readline(), 20)
        assert line, log.decode(errors="replace")
        log.extend(line)
    return int(log.split(b"listening on http://127.0.0.1:")[1].split(b",")[0])


async def test_workers_that_fail_at_start_make_the_supervisor_give_up(
    crm: Served, tmp_path: Path
) -> None:
    process = await _run(_broken_store_config(tmp_path, crm.url, workers=2))
    log = bytearray()
    try:
        port = await _port(process, log)
        # A client that connects meanwhile is let go when the supervisor gives up, not left
        # waiting on a port nobody serves.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /contacts HTTP/1.1\r\nHost: gw\r\n\r\n")
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        _, rest = await asyncio.wait_for(process.communicate(), 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    log.extend(rest)
    text = log.decode(errors="replace")
    assert process.returncode == 1, text
    assert (
        f"giving up: workers exited before listening in {QUICK_FAILURES} attempts in a row" in text
    )
    # Two workers an attempt (the last one's second may be stopped before it says so).
    assert text.count("could not start: StoreUnavailable") >= 2 * QUICK_FAILURES - 1, text
    assert "file is not a database" in text
    assert "Traceback" not in text


async def test_one_worker_that_cannot_start_says_why_in_one_line(
    crm: Served, tmp_path: Path
) -> None:
    process = await _run(_broken_store_config(tmp_path, crm.url, workers=1))
    _, err = await asyncio.wait_for(process.communicate(), 30)
    text = err.decode(errors="replace")
    assert process.returncode == 1, text
    assert "the gateway could not start: StoreUnavailable: sqlite " in text
    assert "file is not a database" in text
    assert "Traceback" not in text


async def test_a_worker_that_dies_while_serving_is_replaced(crm: Served, tmp_path: Path) -> None:
    gw = await start_gateway_process(write_config(tmp_path, crm.url, "workers: 2\n"))
    try:
        first = gw.children()
        assert len(first) == 2
        killed = first[0]
        with contextlib.suppress(ProcessLookupError):
            os.kill(killed, signal.SIGKILL)
        # A replacement imports the whole gateway before it listens: seconds on a busy machine.
        for _ in range(600):
            now = gw.children()
            if len(now) == 2 and killed not in now:
                break
            await asyncio.sleep(0.05)
        assert len(gw.children()) == 2 and killed not in gw.children(), gw.log.decode()
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=QUICK, connector=connector) as http:
            for _ in range(10):
                async with http.get(f"{gw.url}/login") as r:
                    assert r.status == 200
    finally:
        assert await gw.stop() == 0
    # On a loaded machine the gateway is healthy once one worker listens: the other may be
    # killed before it said so, which the supervisor tells apart ("before listening").
    said = (
        f"worker {killed} exited with -9; starting another",
        f"worker {killed} exited with -9 before listening",
    )
    assert any(line.encode() in gw.log for line in said), gw.log.decode()
    assert b"giving up" not in gw.log


_SLOW_WORKERS = """
import os, signal, socket, sys, time
from gateway.web.supervisor import Supervisor, tell_listening

out = sys.argv[1]


def worker_main(pipe):
    open(f"{out}/{os.getpid()}.forked", "w").close()
    time.sleep(1.5)  # starting: SIGHUP is held until the app takes it over, as here
    signal.signal(signal.SIGHUP, lambda *_: open(f"{out}/{os.getpid()}.hup", "a").write("x"))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    tell_listening(pipe)
    while True:
        time.sleep(0.1)


sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
sys.exit(Supervisor(2, sock, 5.0, worker_main).run())
"""


async def test_a_reload_asked_for_while_workers_start_reaches_them_once_they_serve(
    tmp_path: Path,
) -> None:
    """SIGHUP while a worker is starting used to be lost for it (ignored until its app took
    the signal over): that worker served the policy read before the reload. Now it is held
    and carried out once, when the worker takes it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SLOW_WORKERS, str(tmp_path), start_new_session=True
    )
    try:
        for _ in range(200):
            if len(list(tmp_path.glob("*.forked"))) == 2:
                break
            await asyncio.sleep(0.02)
        workers = sorted(p.stem for p in tmp_path.glob("*.forked"))
        assert len(workers) == 2
        process.send_signal(signal.SIGHUP)  # both are still starting
        for _ in range(300):
            if all((tmp_path / f"{pid}.hup").exists() for pid in workers):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # a second delivery would have come by now
        assert [(tmp_path / f"{pid}.hup").read_text() for pid in workers] == ["x", "x"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
