"""`make bench`: what proxying through the gateway costs, as ratios measured in one run.

Targets, all on loopback and on the same cores: the demo CRM directly, the gateway in front
of it (1 and 2 workers), and nginx as a reference reverse proxy when it is installed. Load
from wrk (`-t2 -c64`), rounds alternate between targets so drift hits each alike; medians are
reported. Then a 100 MB download through the gateway: throughput and the gateway's peak RSS.
Only ratios mean anything on a shared machine (shared/reference/perf-baselines.md).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH = "/hello"  # a fixed ~1 KB page of the demo CRM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # loopback only
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing; installing it from Debian's packages (apt-get install wrk)")
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit(
        "wrk is needed for the benchmark: install it (Debian/Ubuntu: apt-get install wrk) "
        "and run make bench again"
    )


def start_crm(port: int) -> subprocess.Popen[bytes]:
    code = (
        "import asyncio, sys\n"
        "from aiohttp import web\n"
        "from gateway.web.server import install_fast_loop\n"
        "from gateway.demo.crm import build_crm_app\n"
        "install_fast_loop()\n"
        f"web.run_app(build_crm_app(), host='127.0.0.1', port={port},"
        " access_log=None, print=None)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code])


def start_gateway(port: int, upstream: str, workers: int, workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / f"gateway-{workers}.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nworkers: {workers}\nupstream:\n  url: {upstream}\n"
        f"state:\n  durable: {{type: sqlite, path: {workdir}/gateway-{workers}.db}}\n"
        "logging: {level: warning}\n"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        stderr=subprocess.DEVNULL,
    )


SIGNIN_POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: optional}
paths:
  - {path: "/**", allow: [authenticated, anyone]}
"""


def start_signin_gateway(port: int, upstream: str, workdir: Path) -> subprocess.Popen[bytes]:
    """One worker with sign-in on; the benchmark's user has no authenticator (optional), so
    the CRM login gives a complete session at once: every request then pays for the session
    lookup, the user's address and path rules and the cookie filtering."""
    from gateway.crypto import new_key_line

    policies = workdir / "signin-policies"
    policies.mkdir()
    (policies / "policy.yaml").write_text(SIGNIN_POLICY)
    for name in ("session", "seal"):
        (workdir / f"{name}.keys").write_text(new_key_line("k1") + "\n")
    config = workdir / "gateway-signin.yaml"
    config.write_text(
        f"listen: 127.0.0.1:{port}\nupstream:\n  url: {upstream}\n"
        f"state:\n  durable: {{type: sqlite, path: {workdir}/gateway-signin.db}}\n"
        "logging: {level: warning}\n"
        f"audit: {{file: {workdir}/audit.jsonl}}\n"
        f"policies: {policies}\n"
        "login: {path: /login, username_field: username, success: {cookie: crm_session}}\n"
        f"secrets:\n  session_keys: {{file: {workdir}/session.keys}}\n"
        f"  seal_keys: {{file: {workdir}/seal.keys}}\n"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        stderr=subprocess.DEVNULL,
    )


def sign_in(url: str) -> str:
    """Log in to the demo CRM through the gateway as bob; the Cookie header a browser sends."""
    import asyncio
    import re as regex

    import aiohttp

    async def run() -> str:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(f"{url}/login") as r:
                csrf = regex.search(r'name="csrf_token" value="([^"]+)"', await r.text())
            assert csrf is not None
            form = {"csrf_token": csrf.group(1), "username": "bob", "password": "bob-demo"}
            async with http.post(f"{url}/login", data=form, allow_redirects=False) as r:
                assert r.status == 303, r.status
        return "; ".join(f"{c.key}={c.value}" for c in jar)

    return asyncio.run(run())


def start_nginx(port: int, upstream_port: int, workdir: Path) -> subprocess.Popen[bytes] | None:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        return None
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 2;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/nginx-body;
  proxy_temp_path {workdir}/nginx-proxy;
  upstream crm {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://crm;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}
}}
"""
    )
    return subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"])


@dataclass
class Samples:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    wrk: str, url: str, duration: int, connections: int, cookie: str = ""
) -> tuple[float, float, float]:
    extra = ["-H", f"Cookie: {cookie}"] if cookie else []
    out = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{duration}s", "--latency", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Latency Distribution" not in out:
        raise SystemExit(f"wrk against {url} gave no latency figures:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"(?m)^\s+50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"(?m)^\s+99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"  warning: {url}: {errors.group(0)}")
    return rps, p50, p99


def process_rss_kib(pid: int, field: str) -> int:
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        status = Path(f"/proc/{p}/status").read_text()
        total += int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]
    return total


def download(url: str) -> float:
    started = time.perf_counter()
    size = 0
    with urllib.request.urlopen(url, timeout=60) as r:  # loopback only
        while chunk := r.read(1 << 20):
            size += len(chunk)
    return size / (time.perf_counter() - started) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    wrk = ensure_wrk()
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="crm-gateway-bench-") as tmp:
        workdir = Path(tmp)
        try:
            crm_port = free_port()
            processes.append(start_crm(crm_port))
            upstream = f"http://127.0.0.1:{crm_port}"
            wait_until_up(upstream + PATH)
            targets = {"direct to the demo CRM": upstream}
            gateways = {}
            for workers in (1, 2):
                port = free_port()
                gw = start_gateway(port, upstream, workers, workdir)
                processes.append(gw)
                gateways[workers] = gw
                targets[f"crm-gateway, {workers} worker{'s' if workers > 1 else ''}"] = (
                    f"http://127.0.0.1:{port}"
                )
            signin_port = free_port()
            processes.append(start_signin_gateway(signin_port, upstream, workdir))
            signed_in_name = "crm-gateway, 1 worker, signed-in user"
            targets[signed_in_name] = f"http://127.0.0.1:{signin_port}"
            nginx_port = free_port()
            nginx = start_nginx(nginx_port, crm_port, workdir)
            if nginx is not None:
                processes.append(nginx)
                targets["nginx reverse proxy, 2 workers"] = f"http://127.0.0.1:{nginx_port}"
            else:
                print(
                    "nginx is not installed: no reference proxy in this run "
                    "(apt-get install nginx-light)"
                )
            cookies = {}
            for name, url in targets.items():
                wait_until_up(url + PATH)
                if name == signed_in_name:
                    cookies[name] = sign_in(url)
                run_wrk(wrk, url + PATH, 2, args.connections, cookies.get(name, ""))  # warm-up
            samples = {name: Samples() for name in targets}
            for round_no in range(args.rounds):
                print(f"round {round_no + 1}/{args.rounds}")
                for name, url in targets.items():
                    rps, p50, p99 = run_wrk(
                        wrk, url + PATH, args.duration, args.connections, cookies.get(name, "")
                    )
                    samples[name].rps.append(rps)
                    samples[name].p50.append(p50)
                    samples[name].p99.append(p99)
            report(samples)
            gw_url = targets["crm-gateway, 1 worker"]
            gw_pid = gateways[1].pid
            before = process_rss_kib(gw_pid, "VmRSS")
            direct = statistics.median(
                download(f"{upstream}/diag/stream?bytes=104857600") for _ in range(3)
            )
            through = statistics.median(
                download(f"{gw_url}/diag/stream?bytes=104857600") for _ in range(3)
            )
            peak = process_rss_kib(gw_pid, "VmHWM")
            print(
                f"\n100 MB download (median of 3): direct {direct:.0f} MB/s, through the gateway "
                f"{through:.0f} MB/s ({through / direct:.2f}x); gateway RSS {before / 1024:.1f} MB "
                f"before, peak {peak / 1024:.1f} MB"
            )
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
    return 0


def report(samples: dict[str, Samples]) -> None:
    medians = {name: statistics.median(s.rps) for name, s in samples.items()}
    direct = medians["direct to the demo CRM"]
    nginx = medians.get("nginx reverse proxy, 2 workers")
    print(
        f"\n{'target':<34} {'req/s':>9} {'vs direct':>10} {'vs nginx':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8}"
    )
    for name, s in samples.items():
        rps = medians[name]
        vs_nginx = f"{rps / nginx:.2f}" if nginx else "-"
        print(
            f"{name:<34} {rps:>9.0f} {rps / direct:>10.2f} {vs_nginx:>9} "
            f"{statistics.median(s.p50):>8.2f} {statistics.median(s.p99):>8.2f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
