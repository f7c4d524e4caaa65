"""Two gateway hosts on PostgreSQL + Redis behind nginx, against nginx alone, in the same run
(issue 15, item 7).

Started here, all on 127.0.0.1: the upstream (nginx serving bench/proxy_targets.py's 1 KB page,
the demo CRM behind it for the login), and three targets measured in alternating rounds
(forward one round, backward the next):

- nginx alone: nginx as a reverse proxy to the upstream (the reference of the ratios);
- one gateway: `crm-gateway run`, signed in, on its defaults (SQLite and memory, 1 worker),
  as `make bench` runs it;
- two gateways: two `crm-gateway run` processes (1 worker each) on one PostgreSQL database and
  one redis-server, behind nginx running deploy/nginx/two-gateways.conf (its marked values
  replaced; plain HTTP on both sides of the comparison, so TLS is left out of both).

Every gateway request carries a complete session (bob, signed in through the target). wrk
-t2 -c64 and -t1 -c1; req/s, p50/p99, the CPU per request of every process serving the target
(for two gateways: the front nginx, both gateways and Redis); ratios to nginx alone taken
round by round. The database is made on the machine's PostgreSQL (a name of its own, dropped
at the end); Redis is a redis-server of the benchmark's own. Every process is stopped and the
work folder removed at the end, on Ctrl-C and on failure too.

    python bench/several_hosts_bench.py [--duration 3] [--rounds 5] [--postgres URL] [--doc FILE]...
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from proxy_measure import TICK, OtherWork, cpu_ticks, parse_wrk
from proxy_report import put_into_doc
from proxy_targets import (
    PAGE,
    PAGE_BODY,
    Processes,
    fetch,
    find_tool,
    free_port,
    gateway_command,
    sign_in,
    start_demo_crm,
    start_gateway,
    start_nginx_proxy,
    start_nginx_upstream,
    stop_on_signals,
    wait_until_up,
    write_signin,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "nginx" / "two-gateways.conf"
BEGIN, END = "<!-- several_hosts_bench: begin -->", "<!-- several_hosts_bench: end -->"
LOADS = (64, 1)
WARM_UP = 2
NAMES = {
    "nginx": "nginx alone (reverse proxy)",
    "one": "one gateway, signed in (SQLite + memory)",
    "two": "two gateways, signed in (PostgreSQL + Redis) behind nginx",
}


@dataclass
class Target:
    key: str
    url: str
    roots: list[int]  # the processes whose trees serve it: their CPU is counted
    cookie: str = ""


@dataclass
class Runs:
    rps: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    p50: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    p99: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    ratio: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    parts: dict[tuple[str, int], list[list[float]]] = field(default_factory=dict)
    other_work: list[float] = field(default_factory=list)  # per round: others' share of the CPU


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=3, help="seconds of each wrk run (3)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a maintenance URL of the PostgreSQL to make the database on",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        action="append",
        default=[],
        help=f"write the report between {BEGIN} and {END}",
    )
    return parser.parse_args()


def database(admin_url: str, name: str, *, drop: bool = False) -> str:
    """Make (or drop) a database on the machine's PostgreSQL; its URL."""

    async def run() -> None:
        conn = await asyncpg.connect(admin_url, timeout=5)
        try:
            if drop:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            else:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())
    return re.sub(r"/[^/]*$", f"/{name}", admin_url)


def start_redis(processes: Processes) -> tuple[str, int]:
    binary = find_tool("redis-server", "redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed: apt-get install redis-server")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = processes.start("redis", args)
    deadline = time.monotonic() + 10
    while not _redis_answers(port):
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"redis-server did not start:\n{processes.log_tail('redis')}")
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0", process.pid


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_two_gateways(
    processes: Processes, upstream: str, postgres: str, redis: str
) -> list[tuple[int, int]]:
    """Two hosts' folders with the same config, keys and policy; (port, pid) of each."""
    first = processes.workdir / "host-a"
    signin = write_signin(first)
    config = (
        f"upstream:\n  url: {upstream}\n"
        "trusted_proxies: [127.0.0.1/32]\n"
        f"state:\n  durable: {{type: postgres, url: '{postgres}'}}\n"
        f"  shared: {{type: redis, url: '{redis}', prefix: 'crm-gateway-bench:'}}\n"
        f"{signin}"
    )
    shutil.copytree(first, processes.workdir / "host-b")
    started = []
    for name in ("host-a", "host-b"):
        folder = processes.workdir / name
        port = free_port()
        (folder / "gateway.yaml").write_text(f"listen: 127.0.0.1:{port}\n{config}")
        process = processes.start(name, [*gateway_command(), "run", "-c", "gateway.yaml"], folder)
        started.append((port, process.pid))
    for (port, _), name in zip(started, ("host-a", "host-b"), strict=True):
        process = next(p for n, p, _ in processes.started if n == name)
        wait_until_up(processes, name, process, f"http://127.0.0.1:{port}{PAGE}")
    return started


def start_front(processes: Processes, nginx: str, ports: list[int]) -> tuple[str, int]:
    """nginx running the example, its marked values replaced (plain HTTP: see the docstring)."""
    folder = processes.workdir / "nginx-front"
    folder.mkdir()
    folder.chmod(0o755)
    port = free_port()
    site = EXAMPLE.read_text()
    changes = {
        "listen 443 ssl;": f"listen 127.0.0.1:{port};",
        "server gw1.internal:8080 ": f"server 127.0.0.1:{ports[0]} ",
        "server gw2.internal:8080 ": f"server 127.0.0.1:{ports[1]} ",
        "/var/log/nginx/crm-gateways.log": f"{folder}/access.log",
    }
    for old, new in changes.items():
        if site.count(old) != 1:
            raise SystemExit(f"{EXAMPLE}: {old!r} is not there exactly once")
        site = site.replace(old, new)
    site = "\n".join(line for line in site.splitlines() if "ssl_certificate" not in line)
    (folder / "two-gateways.conf").write_text(site)
    temp = "".join(
        f"  {kind}_temp_path {folder}/{kind}-temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (folder / "nginx.conf").write_text(
        f"worker_processes 2;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log warn;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n{temp}  include {folder}/two-gateways.conf;\n}}\n"
    )
    args = [nginx, "-p", str(folder), "-e", f"{folder}/error.log", "-c", f"{folder}/nginx.conf"]
    process = processes.start("nginx-front", [*args, "-g", "daemon off;"])
    url = f"http://127.0.0.1:{port}"
    wait_until_up(processes, "nginx-front", process, url + PAGE)
    return url, process.pid


def check_serves(target: Target) -> None:
    status, body = fetch(target.url + PAGE, target.cookie)
    if status != 200 or body != PAGE_BODY:
        raise SystemExit(f"{NAMES[target.key]} answered {status}, not the page: {body[:200]!r}")


def run_wrk(
    wrk: str, target: Target, seconds: int, connections: int
) -> tuple[float, float, float, list[float]]:
    """One wrk run: req/s, p50 ms, p99 ms, CPU µs per request of each of the target's
    processes (their trees)."""
    extra = ["-H", f"Cookie: {target.cookie}"] if target.cookie else []
    args = [wrk, f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    before = [cpu_ticks(root) for root in target.roots]
    out = subprocess.run(
        [*args, *extra, target.url + PAGE],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    spent = [cpu_ticks(root) - b for root, b in zip(target.roots, before, strict=True)]
    rps, p50, p99, requests, errors = parse_wrk(out)
    if errors:
        raise SystemExit(f"wrk saw errors on {NAMES[target.key]}: {errors}")
    return rps, p50, p99, [t / TICK * 1e6 / max(1, requests) for t in spent]


def measure(
    args: argparse.Namespace, wrk: str, targets: dict[str, Target], roots: list[int]
) -> Runs:
    runs = Runs()
    for t in targets.values():
        run_wrk(wrk, t, WARM_UP, LOADS[0])
    other = OtherWork(roots)
    keys = list(targets)
    for number in range(args.rounds):
        order = keys if number % 2 == 0 else keys[::-1]
        for connections in LOADS:
            this_round: dict[str, float] = {}
            for key in order:
                t = targets[key]
                check_serves(t)
                rps, p50, p99, cpu = run_wrk(wrk, t, args.duration, connections)
                for table, value in (
                    (runs.rps, rps),
                    (runs.p50, p50),
                    (runs.p99, p99),
                    (runs.cpu, sum(cpu)),
                ):
                    table.setdefault((key, connections), []).append(value)
                runs.parts.setdefault((key, connections), []).append(cpu)
                this_round[key] = rps
            for key in keys:
                runs.ratio.setdefault((key, connections), []).append(
                    this_round[key] / this_round["nginx"]
                )
        runs.other_work.append(other.share())
        print(f"round {number + 1}/{args.rounds} done", flush=True)
    for t in targets.values():
        check_serves(t)  # the sessions held to the end
    return runs


def report(runs: Runs) -> str:
    lines = [
        "| target | connections | req/s | p50 ms | p99 ms | CPU µs/req | ÷ nginx alone (rounds) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for connections in LOADS:
        for key, name in NAMES.items():
            k = (key, connections)
            ratio = runs.ratio[k]
            lines.append(
                f"| {name} | {connections} | {statistics.median(runs.rps[k]):,.0f} | "
                f"{statistics.median(runs.p50[k]):.2f} | {statistics.median(runs.p99[k]):.2f} | "
                f"{statistics.median(runs.cpu[k]):.0f} | {statistics.median(ratio):.2f} "
                f"({min(ratio):.2f}–{max(ratio):.2f}) |"
            )
    shares = ", ".join(f"{share:.0%}" for share in runs.other_work)
    lines.append(f"\nOther work on the machine, per round: {shares} of its CPU.")
    for connections in LOADS:
        parts = runs.parts[("two", connections)]
        share = [statistics.median(p[i] for p in parts) for i in range(len(parts[0]))]
        lines.append(
            f"\nTwo gateways at {connections} connection{'s' if connections > 1 else ''}, CPU "
            f"µs per request: front nginx {share[0]:.0f}, gateways {share[1] + share[2]:.0f} "
            f"({share[1]:.0f} + {share[2]:.0f}), Redis {share[3]:.0f}."
        )
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    stop_on_signals()
    wrk, nginx = find_tool("wrk", "wrk"), find_tool("nginx", "nginx")
    if wrk is None or nginx is None:
        raise SystemExit("wrk and nginx are needed: apt-get install wrk nginx")
    name = f"crmgw_bench_{secrets.token_hex(4)}"
    try:
        postgres = database(args.postgres, name)
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(f"no PostgreSQL at {args.postgres}: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="crm-gateway-several-") as tmp:
        processes = Processes(Path(tmp))
        processes.workdir.chmod(0o711)
        try:
            crm, _ = start_demo_crm(processes)
            upstream, _ = start_nginx_upstream(processes, nginx, crm)
            proxy_url, proxy = start_nginx_proxy(processes, nginx, upstream)
            one_url, one, _ = start_gateway(processes, "gateway-one", upstream, signed_in=True)
            redis, redis_pid = start_redis(processes)
            two = start_two_gateways(processes, upstream, postgres, redis)
            front_url, front = start_front(processes, nginx, [port for port, _ in two])
            targets = {
                "nginx": Target("nginx", proxy_url, [proxy.pid]),
                "one": Target("one", one_url, [one.pid], sign_in(one_url)),
                "two": Target(
                    "two",
                    front_url,
                    [front, *(pid for _, pid in two), redis_pid],
                    sign_in(front_url),
                ),
            }
            roots = [process.pid for _, process, _ in processes.started]
            runs = measure(args, wrk, targets, roots)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            processes.stop_all()
            database(args.postgres, name, drop=True)
            signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = (
        f"{time.strftime('%Y-%m-%d')}, {args.rounds} rounds of {args.duration} s wrk runs (-t2 -c64, "
        f"-t1 -c1), upstream nginx's 1 KB page, every gateway 1 worker, access log on; "
        f"{(time.monotonic() - started) / 60:.1f} min in all"
    )
    text = f"{settings}\n\n{report(runs)}"
    print("\n" + text)
    for doc in args.doc:
        put_into_doc(doc, text, BEGIN, END)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every process stopped, the work folder removed", file=sys.stderr)
        raise SystemExit(130) from None
