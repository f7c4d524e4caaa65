"""The upstream client alone against the one it replaced (issue 14, item 3), in one process and
one run, rounds alternating: gateway.web.client.CrmClient and aiohttp's ClientSession set up as
gateway/web/upstream.py had it (keep-alive pool, no redirects, no decompression, no jar). Each
request is what the proxy does for a small page: a fresh header set like forwarding.py builds,
the answer's head, its body read whole by length, released. Then a 100 MB download through
each, read as it streams.

The upstream is nginx serving a 1 KB page when nginx is installed (a CRM that costs little, so
the client's own cost shows), else a raw uvloop server in its own process (said in the
output). The loop is uvloop, as the gateway runs. Only the ratios mean anything on a shared
machine; nothing here is a test.

    .venv/bin/python bench/upstream_client_bench.py [--rounds 5] [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import uvloop
from multidict import CIMultiDict
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config.model import Timeouts, Upstream  # noqa: E402
from gateway.web.client import CrmClient, CrmResponse  # noqa: E402

PAGE = b"<!doctype html><title>CRM</title>" + b"x" * (1024 - 32)
DOWNLOAD = 100 * 1024 * 1024

RAW_UPSTREAM = """
import asyncio, sys, uvloop
PAGE = b"<!doctype html><title>CRM</title>" + b"x" * (1024 - 32)
ANSWER = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/html\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(PAGE) + PAGE
class Crm(asyncio.Protocol):
    def connection_made(self, transport): self.t, self.buf = transport, b""
    def data_received(self, data):
        self.buf += data
        while b"\\r\\n\\r\\n" in self.buf:
            _, self.buf = self.buf.split(b"\\r\\n\\r\\n", 1)
            self.t.write(ANSWER)
async def main():
    server = await asyncio.get_running_loop().create_server(Crm, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
uvloop.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_upstream(workdir: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    (workdir / "page.html").write_bytes(PAGE)
    with (workdir / "big.bin").open("wb") as big:
        big.truncate(DOWNLOAD)
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        code = RAW_UPSTREAM
        process = subprocess.Popen([sys.executable, "-c", code, str(port)])
        return process, "a raw uvloop server (nginx is not installed; no download)"
    workdir.chmod(0o755)
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"daemon off; worker_processes 1; pid {workdir}/nginx.pid; error_log stderr crit;\n"
        "events { worker_connections 1024; }\n"
        "http { access_log off; keepalive_requests 1000000; sendfile on;\n"
        f"  server {{ listen 127.0.0.1:{port}; root {workdir}; }} }}\n"
    )
    process = subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir)])
    return process, "nginx, 1 worker, a static 1 KB page and a 100 MB file"


def wait_for(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the upstream did not start")


def headers() -> CIMultiDict[str]:
    """What forwarding.upstream_request_headers hands the client for a browser's page view."""
    return CIMultiDict(
        [
            ("Host", "crm.example.com"),
            ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"),
            ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
            ("Accept-Language", "nl,en;q=0.5"),
            ("Accept-Encoding", "gzip, deflate, br"),
            ("Cookie", "crm_session=4f1c2a9e8b7d6c5e; theme=light"),
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "crm.example.com"),
            ("X-Request-Id", "2c1b6f0e9a8d4c3b"),
        ]
    )


def old_session(upstream: Upstream) -> aiohttp.ClientSession:
    """gateway/web/upstream.py's open_upstream_client before issue 14."""
    t = upstream.timeouts
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=upstream.max_connections,
            limit_per_host=0,
            keepalive_timeout=upstream.keepalive,
            ttl_dns_cache=60,
            enable_cleanup_closed=False,
        ),
        timeout=aiohttp.ClientTimeout(
            total=None, connect=t.pool + t.connect, sock_connect=t.connect, sock_read=t.read
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        requote_redirect_url=False,
        read_bufsize=2**16,
    )


Fetch = Callable[[str, bool], Awaitable[int]]


async def read_body(response: aiohttp.ClientResponse | CrmResponse, stream: bool) -> int:
    """The body's length, read as the gateway reads it: streamed, or in one read."""
    try:
        if stream:
            return sum([len(c) async for c in response.content.iter_any()])
        length = response.content_length or 0
        return len(await response.content.readexactly(length))
    finally:
        response.release()


def old_fetch(session: aiohttp.ClientSession, origin: str) -> Fetch:
    async def fetch(path: str, stream: bool) -> int:
        response = await session.request(
            "GET",
            URL(origin + path, encoded=True),
            headers=headers(),
            allow_redirects=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )
        return await read_body(response, stream)

    return fetch


def new_fetch(client: CrmClient) -> Fetch:
    async def fetch(path: str, stream: bool) -> int:
        response = await client.request("GET", path, headers())
        return await read_body(response, stream)

    return fetch


async def load(fetch: Fetch, requests: int, concurrency: int) -> tuple[float, float]:
    """(requests a second, CPU µs a request of this process) for `requests` page fetches by
    `concurrency` callers."""
    left = requests

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            assert await fetch("/page.html", False) == len(PAGE)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return requests / wall, cpu / requests * 1e6


async def download(fetch: Fetch) -> float:
    started = time.perf_counter()
    assert await fetch("/big.bin", True) == DOWNLOAD
    return DOWNLOAD / (time.perf_counter() - started) / 1e6


async def measure(args: argparse.Namespace, port: int, downloads: bool) -> None:
    upstream = Upstream(
        url=f"http://127.0.0.1:{port}",
        scheme="http",
        host=f"127.0.0.1:{port}",
        hostname="127.0.0.1",
        port=port,
        timeouts=Timeouts(),
    )
    session = old_session(upstream)
    client = CrmClient(upstream)
    fetches = {"old": old_fetch(session, upstream.url), "new": new_fetch(client)}
    names = {"old": "aiohttp ClientSession (before)", "new": "gateway.web.client (after)"}
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    speeds: dict[str, list[float]] = {"old": [], "new": []}
    for fetch in fetches.values():  # warm up: connections open, code paths hot
        await load(fetch, 2000, args.concurrency)
    for number in range(args.rounds):
        order = ["old", "new"] if number % 2 == 0 else ["new", "old"]
        for concurrency in (args.concurrency, 1):
            count = args.requests if concurrency > 1 else args.requests // 4
            for key in order:
                rps, cpu = await load(fetches[key], count, concurrency)
                runs.setdefault((key, concurrency), []).append((rps, cpu))
                print(
                    f"  round {number + 1}  c{concurrency:<3} {names[key]:<32} "
                    f"{rps:>9,.0f} req/s {cpu:7.1f} µs CPU/request"
                )
        if downloads:
            for key in order:
                speeds[key].append(await download(fetches[key]))
    await session.close()
    await client.close()
    print("\nmedians; ratio = after / before (req/s) and before / after (CPU per request)")
    for concurrency in (args.concurrency, 1):
        old = [statistics.median(v) for v in zip(*runs[("old", concurrency)], strict=True)]
        new = [statistics.median(v) for v in zip(*runs[("new", concurrency)], strict=True)]
        print(
            f"  {concurrency:>2} callers: before {old[0]:>8,.0f} req/s {old[1]:6.1f} µs | "
            f"after {new[0]:>8,.0f} req/s {new[1]:6.1f} µs | "
            f"req/s x{new[0] / old[0]:.2f}, CPU x{old[1] / new[1]:.2f} less"
        )
    if downloads:
        old_mb, new_mb = statistics.median(speeds["old"]), statistics.median(speeds["new"])
        print(
            f"  100 MB download: before {old_mb:,.0f} MB/s | after {new_mb:,.0f} MB/s | "
            f"x{new_mb / old_mb:.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="crm-gateway-client-bench-") as tmp:
        process, about = start_upstream(Path(tmp), port)
        try:
            wait_for(port)
            print(f"upstream: {about}; loop: uvloop; callers: {args.concurrency} and 1")
            uvloop.run(measure(args, port, downloads="nginx" in about))
        finally:
            process.terminate()
            process.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
