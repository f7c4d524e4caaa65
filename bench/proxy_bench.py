"""`make bench` (part 1): what proxying through the gateway costs, as users run it, measured
against a naive aiohttp proxy and nginx in the same run (issue 14, item 6).

Upstream: nginx serving a fixed 1 KB page and a 100 MB file (the demo CRM when nginx is not
installed: said in the output). Measured, round after round, forward then backward: the
upstream alone, nginx as a reverse proxy, bench/naive_proxy.py, and `crm-gateway run -c
gateway.yaml` anonymous (a config of only `listen` and `upstream`) and signed in (every
request with a complete session), each under `wrk -t2 -c64` and `wrk -t1 -c1`; then 100 MB
downloads through each, and the gateways' RSS all along. Medians; ratios taken round by
round; the rounds' spread printed. Everything on 127.0.0.1; every process and the work
folder are removed at the end, on Ctrl-C and on failure too.

    python bench/proxy_bench.py [--duration 3] [--rounds 5] [--doc docs/performance.md]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proxy_measure import OtherWork, download, memory_mb, run_wrk
from proxy_report import GATEWAYS, LOADED, ROWS, SINGLE, Memory, Results, put_into_doc, report
from proxy_targets import (
    DOWNLOAD,
    DOWNLOAD_BYTES,
    PAGE,
    Processes,
    Target,
    check_serves,
    fetch,
    find_tool,
    sign_in,
    start_demo_crm,
    start_gateway,
    start_naive_proxy,
    start_nginx_proxy,
    start_nginx_upstream,
    stop_on_signals,
)

ROOT = Path(__file__).resolve().parent.parent
WARM_UP = 2  # seconds of load per target before the rounds
BEGIN, END = "<!-- proxy_bench: begin -->", "<!-- proxy_bench: end -->"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=3, help="seconds of each wrk run (3)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of wrk runs (5)")
    parser.add_argument("--downloads", type=int, default=3, help="100 MB downloads per target (3)")
    parser.add_argument(
        "--no-nginx",
        action="store_true",
        help="as on a machine without nginx: the demo CRM as the upstream, no nginx proxy",
    )
    parser.add_argument(
        "--doc",
        type=Path,
        help=f"also put the report into this file, between the lines {BEGIN} and {END}",
    )
    args = parser.parse_args()
    if not (1 <= args.duration <= 600 and 1 <= args.rounds <= 50 and 0 <= args.downloads <= 50):
        parser.error("--duration 1..600, --rounds 1..50, --downloads 0..50")
    return args


def describe(nginx: str | None) -> list[str]:
    """Where, when and what: enough to compare two runs' conditions."""
    spec = importlib.util.find_spec("gateway")
    source = Path(spec.origin).parent if spec and spec.origin else Path("?")
    git = ["git", "-C", str(source.parent)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--", source.name], capture_output=True, text=True
    )
    code = f"commit {commit.stdout.strip()}" if commit.returncode == 0 else "not a git checkout"
    if changed.stdout.strip():
        code += f" + {len(changed.stdout.splitlines())} files in {source.name}/ changed or new"
    versions = ", ".join(
        f"{name} {importlib.metadata.version(name)}" for name in ("aiohttp", "uvloop")
    )
    nginx_version = "not installed"
    if nginx:
        out = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
        nginx_version = out.strip().rsplit("/", 1)[-1]
    load = Path("/proc/loadavg").read_text().split()[:3]
    return [
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"load average {' '.join(load)}; gateway from {source} ({code})",
        f"Python {sys.version.split()[0]}, {versions}, nginx {nginx_version}",
    ]


def start_targets(processes: Processes, nginx: str | None) -> dict[str, Target]:
    crm, crm_process = start_demo_crm(processes)
    targets: dict[str, Target] = {}
    if nginx:
        upstream, process = start_nginx_upstream(processes, nginx, crm)
        targets["direct"] = Target("direct", "upstream alone (nginx, 1 KB file)", upstream, process)
        url, process = start_nginx_proxy(processes, nginx, upstream)
        targets["nginx"] = Target("nginx", "nginx reverse proxy", url, process)
    else:
        upstream = crm
        targets["direct"] = Target("direct", "upstream alone (demo CRM)", crm, crm_process)
    url, process = start_naive_proxy(processes, upstream)
    targets["naive"] = Target("naive", "naive aiohttp proxy", url, process)
    for key, name in (
        ("anonymous", "crm-gateway, anonymous"),
        ("signed-in", "crm-gateway, signed in"),
    ):
        url, process, log = start_gateway(processes, key, upstream, signed_in=key == "signed-in")
        targets[key] = Target(key, name, url, process, log=log)
    signed_in = targets["signed-in"]
    page = fetch(upstream + PAGE)[1]
    if fetch(signed_in.url + PAGE) == (200, page):
        raise SystemExit(f"{signed_in.name} serves the page without signing in: check the policy")
    signed_in.cookie = sign_in(signed_in.url)
    for target in targets.values():
        check_serves(target, page)
    return targets


def in_turn(keys: list[str], round_number: int) -> list[str]:
    """Forward one round, backward the next (A B C, C B A, ...): a drift in the machine's
    speed hits each target alike, and the pairs the targets compare stay next to each other."""
    return keys if round_number % 2 == 0 else keys[::-1]


def measure(
    args: argparse.Namespace, wrk: str, targets: dict[str, Target], roots: list[int]
) -> tuple[Results, list[str]]:
    results = Results({key: t.name for key, t in targets.items()})
    warnings: list[str] = []
    gateways = [targets[key] for key in GATEWAYS]
    for g in gateways:
        results.memory[g.key] = Memory(at_rest=memory_mb(g.root.pid))
    keys = [key for key in ROWS if key in targets]
    for key in keys:
        t = targets[key]
        run_wrk(wrk, t.url + PAGE, WARM_UP, LOADED, t.root.pid, t.cookie)
    for g in gateways:
        results.memory[g.key].after_warmup = memory_mb(g.root.pid)
    other = OtherWork(roots)
    for number in range(args.rounds):
        for conns in (LOADED, SINGLE):
            for key in in_turn(keys, number):
                t = targets[key]
                run = run_wrk(wrk, t.url + PAGE, args.duration, conns, t.root.pid, t.cookie)
                results.runs.setdefault((key, conns), []).append(run)
                print(
                    f"  round {number + 1}/{args.rounds}  {conns:>2} conns  {t.name:<34} "
                    f"{run.rps:>9,.0f} req/s  p50 {run.p50_ms:7.3f} ms  {run.cpu_us:5.0f} µs CPU"
                )
                if run.errors:
                    warnings.append(f"round {number + 1}, {t.name}, {conns} conns: {run.errors}")
        for g in gateways:
            check_serves(g, fetch(targets["direct"].url + PAGE)[1])  # still signed in
            results.memory[g.key].rounds.append(memory_mb(g.root.pid))
        results.other_work.append(other.share())
    for number in range(args.downloads):
        for key in in_turn(keys, number):
            t = targets[key]
            speed = download(t.url + DOWNLOAD, DOWNLOAD_BYTES, t.cookie)
            results.downloads.setdefault(key, []).append(speed)
            print(f"  download {number + 1}/{args.downloads}  {t.name:<34} {speed:>7,.0f} MB/s")
    time.sleep(1)  # idle: what a worker keeps after a busy spell
    for g in gateways:
        results.memory[g.key].after = memory_mb(g.root.pid)
        results.memory[g.key].peak = memory_mb(g.root.pid, "VmHWM")
        warnings += log_problems(g)
    return results, warnings


def log_problems(gateway: Target) -> list[str]:
    """Errors the gateway logged during the run (the access log is there too)."""
    if gateway.log is None:
        return []
    bad = re.compile(r" (ERROR|CRITICAL) |^Traceback")
    with gateway.log.open(errors="replace") as lines:
        found = [line.rstrip() for line in lines if bad.search(line)]
    return [f"{gateway.name} logged: {line}" for line in found[:5]]


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    stop_on_signals()
    wrk = find_tool("wrk", "wrk")
    if wrk is None:
        raise SystemExit("wrk is needed: apt-get install wrk (Debian/Ubuntu), then run again")
    nginx = None if args.no_nginx else find_tool("nginx", "nginx")
    about = describe(nginx)
    print("\n".join(about))
    if nginx is None:
        print(
            "nginx is not installed: the upstream is the demo CRM (one aiohttp process, which "
            "caps every proxy's req/s) and there is no nginx reference (apt-get install nginx)"
        )
    targets_count = 5 if nginx else 4
    minutes = (targets_count * (WARM_UP + 2 * args.rounds * args.duration) + 30) / 60
    print(f"about {minutes:.0f} min: {args.rounds} rounds of {args.duration} s runs, 2 loads")
    with tempfile.TemporaryDirectory(prefix="crm-gateway-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o711)  # nginx's workers (nobody, when started as root) reach their files
        processes = Processes(workdir)
        try:
            targets = start_targets(processes, nginx)
            roots = [process.pid for _, process, _ in processes.started]
            results, warnings = measure(args, wrk, targets, roots)
        finally:
            # A second Ctrl-C must not leave processes behind: the stop is bounded (30 s).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            print("stopping every process the benchmark started (the gateways drain: ~5 s)")
            codes = processes.stop_all()
            signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in GATEWAYS:
        if codes.get(name) != 0:
            warnings.append(
                f"the {name} gateway did not stop cleanly on SIGTERM: {codes.get(name)}"
            )
    upstream = "nginx serving a 1 KB file" if nginx else "the demo CRM (nginx is missing)"
    settings = (
        f"upstream: {upstream}; wrk -t2 -c64 and -t1 -c1, {args.duration} s runs, "
        f"{args.rounds} rounds, {args.downloads} downloads; gateway: 1 worker, installed "
        f"defaults; {(time.monotonic() - started) / 60:.1f} min in all"
    )
    text = "\n".join(
        [*about, settings, "", report(results), *(f"\nwarning: {w}" for w in warnings)]
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
