"""What forward auth costs (issue 18, item 4): nginx in front with `auth_request` to the gateway,
as deploy/forward-auth/nginx.conf writes it, against nginx alone as a reverse proxy, in the
same run.

All on 127.0.0.1 and the same cores as the load: nginx serving a fixed 1 KB page (the upstream;
the demo CRM behind it for the login), nginx as a plain reverse proxy to it (the reference),
nginx with deploy/forward-auth/nginx.conf (its three addresses changed, 2 workers like the
reference) asking `crm-gateway run -c gateway.yaml` (forward_auth on, the demo CRM's login
watched, bob signed in: every request carries his complete session), and, for scale, the same
gateway asked directly (wrk at /_gateway/auth with nginx's headers) and as the standalone proxy
with the same session. `wrk -t2 -c64` then `-t1 -c1` per target per round, the order rotating;
medians; each ratio taken round by round. CPU µs per request counts every process on the path
(the front nginx and the gateway together for auth_request). Every process is stopped and the
work folder removed at the end, on Ctrl-C and on failure too.

    python bench/forwardauth_bench.py [--duration 3] [--rounds 5] [--doc docs/performance.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from proxy_measure import TICK, OtherWork, cpu_ticks, memory_mb, parse_wrk
from proxy_report import put_into_doc
from proxy_targets import (
    PAGE,
    Processes,
    fetch,
    find_tool,
    free_port,
    gateway_command,
    sign_in,
    start_demo_crm,
    start_nginx,
    start_nginx_proxy,
    start_nginx_upstream,
    stop_on_signals,
    wait_until_up,
    write_signin,
)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "forward-auth" / "nginx.conf"
LISTEN, GATEWAY, CRM = "127.0.0.1:8000", "127.0.0.1:8080", "127.0.0.1:8081"
LOADED, SINGLE = 64, 1
WARM_UP = 2
BEGIN, END = "<!-- forwardauth_bench: begin -->", "<!-- forwardauth_bench: end -->"


@dataclass
class Target:
    key: str
    name: str
    url: str
    roots: list[int]  # the serving processes whose trees' CPU counts for this row
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    errors: str
    cpu_parts: tuple[float, ...]  # µs per request of each of the target's roots, in order


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=3, help="seconds of each wrk run (3)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (5)")
    parser.add_argument("--doc", type=Path, help=f"also write the report between {BEGIN} and {END}")
    args = parser.parse_args()
    if not (1 <= args.duration <= 600 and 1 <= args.rounds <= 50):
        parser.error("--duration 1..600, --rounds 1..50")
    return args


def start_gateway(processes: Processes, upstream: str) -> tuple[int, subprocess.Popen[bytes]]:
    """The gateway as the forward-auth deployment runs it: the demo CRM's login watched, a
    policy that lets only signed-in users past the login page, forward_auth on, the front
    nginx (127.0.0.1) trusted. Everything else at its defaults (1 worker, access log on)."""
    folder = processes.workdir / "gateway"
    folder.mkdir()
    signin = write_signin(folder)
    port = free_port()
    (folder / "gateway.yaml").write_text(
        f"listen: 127.0.0.1:{port}\nupstream:\n  url: {upstream}\n{signin}"
        "forward_auth: {}\ntrusted_proxies: [127.0.0.1/32]\n"
    )
    process = processes.start("gateway", [*gateway_command(), "run", "-c", "gateway.yaml"], folder)
    wait_until_up(processes, "gateway", process, f"http://127.0.0.1:{port}/_gateway/healthz")
    return port, process


def start_forward_auth_nginx(
    processes: Processes, nginx: str, gateway_port: int, upstream: str
) -> tuple[str, subprocess.Popen[bytes]]:
    """deploy/forward-auth/nginx.conf, its addresses changed, in the reference's nginx.conf."""
    port = free_port()
    server = DEPLOY.read_text()
    for old, new in (
        (LISTEN, f"127.0.0.1:{port}"),
        (GATEWAY, f"127.0.0.1:{gateway_port}"),
        (CRM, upstream.removeprefix("http://")),
    ):
        if old not in server:
            raise SystemExit(f"{DEPLOY} no longer names {old}")
        server = server.replace(old, new)
    # start_nginx writes `server { listen …; LOCATIONS }` inside http {}: the deploy file is a
    # whole server block (and its upstreams), so it goes in as the "upstreams" part, and the
    # server start_nginx adds is a second one on another port, unused.
    folder_name = "nginx-forward-auth"
    url, process = start_nginx(
        processes, nginx, folder_name, f"    location = {PAGE} {{ return 200; }}\n", server
    )
    del url
    front = f"http://127.0.0.1:{port}"
    wait_until_up(processes, folder_name, process, front + "/_gateway/healthz")
    return front, process


def run_wrk(wrk: str, target: Target, seconds: int, connections: int) -> Run:
    threads = min(2, connections)
    headers = [arg for name, value in target.headers.items() for arg in ("-H", f"{name}: {value}")]
    args = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *headers]
    before = [cpu_ticks(root) for root in target.roots]
    out = subprocess.run(
        [*args, target.url], capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    spent = [cpu_ticks(root) - ticks for root, ticks in zip(target.roots, before, strict=True)]
    rps, p50, p99, requests, errors = parse_wrk(out)
    parts = tuple(ticks / TICK * 1e6 / requests if requests else 0.0 for ticks in spent)
    return Run(rps, p50, p99, sum(parts), errors, parts)


def start_targets(processes: Processes, nginx: str) -> tuple[dict[str, Target], int]:
    crm, _ = start_demo_crm(processes)
    upstream, upstream_process = start_nginx_upstream(processes, nginx, crm)
    reference, reference_process = start_nginx_proxy(processes, nginx, upstream)
    gateway_port, gateway = start_gateway(processes, upstream)
    front, front_process = start_forward_auth_nginx(processes, nginx, gateway_port, upstream)
    cookie = sign_in(front)  # through the front: the login goes through the gateway's proxy
    page = fetch(upstream + PAGE)[1]
    if fetch(front + PAGE) == (200, page):
        raise SystemExit("the front nginx serves the page without a session: check the policy")
    signed = {"Cookie": cookie}
    asked = {**signed, "X-Original-Method": "GET", "X-Original-URI": PAGE}
    targets = {
        "direct": Target(
            "direct", "upstream alone (nginx, 1 KB file)", upstream + PAGE, [upstream_process.pid]
        ),
        "nginx": Target("nginx", "nginx reverse proxy", reference + PAGE, [reference_process.pid]),
        "auth": Target(
            "auth",
            "nginx + auth_request to crm-gateway, signed in",
            front + PAGE,
            [front_process.pid, gateway.pid],
            signed,
        ),
        "endpoint": Target(
            "endpoint",
            "crm-gateway /_gateway/auth alone, signed in",
            f"http://127.0.0.1:{gateway_port}/_gateway/auth",
            [gateway.pid],
            asked,
        ),
        "standalone": Target(
            "standalone",
            "crm-gateway as the proxy, signed in",
            f"http://127.0.0.1:{gateway_port}{PAGE}",
            [gateway.pid],
            signed,
        ),
    }
    for target in targets.values():
        if target.key == "endpoint":
            check_endpoint(target)
            continue
        status, body = fetch(target.url, target.headers.get("Cookie", ""))
        if (status, body) != (200, page):
            raise SystemExit(f"{target.name} answered {status}, not the page: {body[:200]!r}")
    return targets, gateway.pid


def check_endpoint(target: Target) -> None:
    """The endpoint asked as nginx asks it must let bob's request pass, naming him: a refusal
    would be measured as if it were the answer."""
    request = urllib.request.Request(target.url, headers=target.headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # loopback only
            status, user = answer.status, answer.headers.get("Remote-User")
    except urllib.error.HTTPError as error:
        status, user = error.code, None
    if (status, user) != (200, "bob"):
        raise SystemExit(f"{target.name} answered {status} naming {user!r}, not 200 for bob")


def measure(
    args: argparse.Namespace, wrk: str, targets: dict[str, Target], roots: list[int]
) -> tuple[dict[tuple[str, int], list[Run]], list[float]]:
    runs: dict[tuple[str, int], list[Run]] = {}
    keys = list(targets)
    for key in keys:
        run_wrk(wrk, targets[key], WARM_UP, LOADED)
    other = OtherWork(roots)
    shares = []
    for number in range(args.rounds):
        order = keys if number % 2 == 0 else keys[::-1]
        for conns in (LOADED, SINGLE):
            for key in order:
                run = run_wrk(wrk, targets[key], args.duration, conns)
                runs.setdefault((key, conns), []).append(run)
                print(
                    f"  round {number + 1}/{args.rounds}  {conns:>2} conns  {targets[key].name:<48}"
                    f" {run.rps:>9,.0f} req/s  p50 {run.p50_ms:7.3f} ms  {run.cpu_us:5.0f} µs CPU"
                )
        shares.append(other.share())
    return runs, shares


def report(
    targets: dict[str, Target], runs: dict[tuple[str, int], list[Run]], shares: list[float]
) -> tuple[str, list[str]]:
    lines = [
        "| target | conns | req/s | p50 ms | p99 ms | CPU µs/req | ÷ nginx proxy | rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    warnings = []
    for conns in (LOADED, SINGLE):
        reference = runs[("nginx", conns)]
        for key, target in targets.items():
            mine = runs[(key, conns)]
            ratios = [m.rps / r.rps for m, r in zip(mine, reference, strict=True)]
            med = statistics.median
            ratio = "-" if key == "nginx" else f"{med(ratios):.2f}"
            spread = "-" if key == "nginx" else f"{min(ratios):.2f} to {max(ratios):.2f}"
            lines.append(
                f"| {target.name} | {conns} | {med([m.rps for m in mine]):,.0f} | "
                f"{med([m.p50_ms for m in mine]):.3f} | {med([m.p99_ms for m in mine]):.2f} | "
                f"{med([m.cpu_us for m in mine]):.0f} | {ratio} | {spread} |"
            )
            warnings += [f"{target.name}, {conns} conns: {m.errors}" for m in mine if m.errors]
    single = {key: statistics.median([m.p50_ms for m in runs[(key, SINGLE)]]) for key in targets}
    added = (single["auth"] - single["nginx"]) * 1000
    lines.append("")
    lines.append(
        f"p50 added by asking the gateway, at 1 connection: {added:+.0f} µs over nginx alone "
        f"({single['nginx'] * 1000:.0f} µs → {single['auth'] * 1000:.0f} µs)."
    )
    for conns in (LOADED, SINGLE):
        front, gateway = (
            statistics.median(m.cpu_parts[i] for m in runs[("auth", conns)]) for i in (0, 1)
        )
        lines.append(
            f"CPU µs per request on the auth_request path at {conns} connection"
            f"{'s' if conns > 1 else ''}: front nginx {front:.0f}, gateway {gateway:.0f}."
        )
    lines.append(
        "Other work on the machine took "
        + ", ".join(f"{s * 100:.0f} %" for s in shares)
        + " of its CPU in the rounds."
    )
    return "\n".join(lines), warnings


def main() -> int:
    args = parse_args()
    stop_on_signals()
    wrk = find_tool("wrk", "wrk")
    nginx = find_tool("nginx", "nginx")
    if wrk is None or nginx is None:
        raise SystemExit("wrk and nginx are needed: apt-get install wrk nginx, then run again")
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    about = (
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load "
        f"average {load}; commit {commit or '?'}; nginx {version.rsplit('/', 1)[-1]}\n"
        f"wrk -t2 -c{LOADED} and -t1 -c{SINGLE}, {args.duration} s runs, {args.rounds} rounds; "
        "gateway: 1 worker, defaults but forward_auth and the login"
    )
    print(about)
    with tempfile.TemporaryDirectory(prefix="crm-gateway-fa-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o711)
        processes = Processes(workdir)
        try:
            targets, gateway_pid = start_targets(processes, nginx)
            rest = memory_mb(gateway_pid)
            roots = [process.pid for _, process, _ in processes.started]
            runs, shares = measure(args, wrk, targets, roots)
            peak = memory_mb(gateway_pid, "VmHWM")
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            print("stopping every process the benchmark started")
            codes = processes.stop_all()
            signal.signal(signal.SIGINT, signal.default_int_handler)
    table, warnings = report(targets, runs, shares)
    if codes.get("gateway") != 0:
        warnings.append(f"the gateway did not stop cleanly: {codes.get('gateway')}")
    text = "\n".join(
        [about, "", table, f"Gateway RSS: {rest:.1f} MB at rest, {peak:.1f} MB at its peak."]
        + [f"\nwarning: {w}" for w in warnings]
    )
    print("\n" + text)
    if args.doc:
        put_into_doc(args.doc, text, BEGIN, END)
    return 1 if warnings else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every process stopped, the work folder removed", file=sys.stderr)
        raise SystemExit(130) from None
