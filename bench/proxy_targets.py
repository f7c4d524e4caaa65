"""What `make bench` measures, and how each is started: the upstream (nginx serving a fixed
1 KB page and a 100 MB file, or the demo CRM when nginx is missing), nginx as a reverse proxy,
the naive aiohttp proxy, and the gateway anonymous and signed in, run as a user runs it.

Owns the benchmark's processes and their folders: each process starts in a session of its
own (a Ctrl-C reaches only the benchmark, which stops them) and its output goes to a log file
in the work folder. Everything listens on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

BENCH = Path(__file__).resolve().parent
PAGE = "/hello"  # the same path on both upstreams: nginx's file, the demo CRM's fixed page
DOWNLOAD = "/diag/stream?bytes=104857600"  # 100 MiB; nginx ignores the query
DOWNLOAD_BYTES = 100 * 1024 * 1024
# A fixed page of exactly 1 KiB, what the figures were measured with.
_HEAD = "<!doctype html><html><head><title>Bench</title></head><body><p>"
_TAIL = "</p></body></html>\n"
PAGE_BODY = (_HEAD + "x" * (1024 - len(_HEAD) - len(_TAIL)) + _TAIL).encode()


@dataclass
class Target:
    """One thing measured: `root` is the serving process whose tree's CPU time is counted."""

    key: str  # direct, nginx, naive, anonymous, signed-in
    name: str
    url: str
    root: subprocess.Popen[bytes]
    cookie: str = ""
    log: Path | None = None  # the gateway's log (its access log and errors)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_tool(name: str, package: str) -> str | None:
    """`name` on PATH (or in /usr/sbin), installed from Debian's packages when missing and
    running as root with apt-get, as the project's machines allow."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print(f"{name} is missing; installing it from Debian's packages (apt-get install {package})")
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", package],
        check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        timeout=600,
    )
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


class Processes:
    """Every process the benchmark started, stopped at the end however the run ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, args: list[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd or self.workdir,
            start_new_session=True,
        )
        self.started.append((name, process, log))
        return process

    def log_tail(self, name: str, lines: int = 15) -> str:
        text = (self.workdir / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop_all(self, seconds: float = 30.0) -> dict[str, int | None]:
        """SIGTERM to every process group (the gateway drains: about 5 s), SIGKILL to what is
        left after `seconds`; each process's exit status (None: it had to be killed)."""
        for _, process, _ in self.started:
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + seconds
        codes: dict[str, int | None] = {}
        for name, process, log in self.started:
            try:
                codes[name] = process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(5)
                codes[name] = None
            _signal_group(process, signal.SIGKILL)  # workers an ended leader left behind
            log.close()
        self.started.clear()
        return codes


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP end the run like Ctrl-C: through the cleanup."""

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, leave)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def wait_until_up(
    processes: Processes, name: str, process: subprocess.Popen[bytes], url: str
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} stopped at start:\n{processes.log_tail(name)}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # loopback only
                return
        except urllib.error.HTTPError as error:  # it answers: up, unless it is a 5xx
            if error.code < 500:
                return
            time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not answer {url} within 30 s:\n{processes.log_tail(name)}")


def start_demo_crm(processes: Processes) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    code = (
        "import asyncio\n"
        "from aiohttp import web\n"
        "from gateway.web.server import install_fast_loop\n"
        "from gateway.demo.crm import build_crm_app\n"
        "install_fast_loop()\n"
        f"web.run_app(build_crm_app(), host='127.0.0.1', port={port}, access_log=None, print=None)\n"
    )
    process = processes.start("demo-crm", [sys.executable, "-c", code])
    url = f"http://127.0.0.1:{port}"
    wait_until_up(processes, "demo-crm", process, url + PAGE)
    return url, process


def _nginx_conf(folder: Path, port: int, locations: str, upstreams: str = "") -> Path:
    # Debian's nginx compiles in absolute temp and log paths: every one is set here.
    temp = "".join(
        f"  {kind}_temp_path {folder}/{kind}-temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = folder / "nginx.conf"
    conf.write_text(
        f"worker_processes 2;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log warn;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n{temp}{upstreams}"
        f"  server {{\n    listen 127.0.0.1:{port};\n{locations}  }}\n}}\n"
    )
    return conf


def start_nginx(
    processes: Processes, nginx: str, name: str, locations: str, upstreams: str = ""
) -> tuple[str, subprocess.Popen[bytes]]:
    folder = processes.workdir / name
    folder.mkdir()
    folder.chmod(0o755)  # nginx's workers run as nobody when it is started as root
    port = free_port()
    conf = _nginx_conf(folder, port, locations, upstreams)
    error_log = f"{folder}/error.log"
    args = [nginx, "-p", str(folder), "-e", error_log, "-c", str(conf), "-g", "daemon off;"]
    process = processes.start(name, args)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(processes, name, process, url + PAGE)
    return url, process


def start_nginx_upstream(
    processes: Processes, nginx: str, crm: str
) -> tuple[str, subprocess.Popen[bytes]]:
    """nginx serving the 1 KB page and the 100 MB file; everything else (the CRM login that
    the signed-in gateway watches) goes on to the demo CRM."""
    www = processes.workdir / "www"
    www.mkdir()
    www.chmod(0o755)
    (www / "hello.html").write_bytes(PAGE_BODY)
    block = os.urandom(1 << 20)  # not zeros: nothing on the way may take a shortcut
    with (www / "100mb.bin").open("wb") as out:
        for _ in range(DOWNLOAD_BYTES >> 20):
            out.write(block)
    locations = (
        f"    location = {PAGE} {{ default_type text/html; alias {www}/hello.html; }}\n"
        "    location = /diag/stream {\n"
        f"      default_type application/octet-stream; alias {www}/100mb.bin;\n    }}\n"
        f"    location / {{ proxy_pass {crm}; proxy_set_header Host $http_host; }}\n"
    )
    return start_nginx(processes, nginx, "nginx-upstream", locations)


def start_nginx_proxy(
    processes: Processes, nginx: str, upstream: str
) -> tuple[str, subprocess.Popen[bytes]]:
    """nginx as a reverse proxy, as deployment guides write it: HTTP/1.1 to the upstream
    over kept-alive connections, the usual forwarded headers."""
    upstreams = f"  upstream crm {{ server {upstream.removeprefix('http://')}; keepalive 64; }}\n"
    locations = (
        "    location / {\n"
        "      proxy_pass http://crm;\n"
        "      proxy_http_version 1.1;\n"
        '      proxy_set_header Connection "";\n'
        "      proxy_set_header Host $http_host;\n"
        "      proxy_set_header X-Forwarded-For $remote_addr;\n"
        "      proxy_set_header X-Forwarded-Proto $scheme;\n"
        "    }\n"
    )
    return start_nginx(processes, nginx, "nginx-proxy", locations, upstreams)


def start_naive_proxy(processes: Processes, upstream: str) -> tuple[str, subprocess.Popen[bytes]]:
    url = f"http://127.0.0.1:{free_port()}"
    args = ["--listen", url.removeprefix("http://"), "--upstream", upstream]
    process = processes.start("naive-proxy", [sys.executable, str(BENCH / "naive_proxy.py"), *args])
    wait_until_up(processes, "naive-proxy", process, url + PAGE)
    return url, process


# Only the CRM's login is open to anyone: a request without a complete session cannot get the
# page, so the check before and after every round proves the cookie still signs in.
SIGNIN_POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: optional}
paths:
  - {path: /login, allow: [anyone]}
  - {path: "/**", allow: [authenticated]}
"""


def gateway_command() -> list[str]:
    """`crm-gateway` as pip installed it next to this Python, else `python -m gateway`."""
    script = Path(sys.executable).with_name("crm-gateway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


# gateway.yaml's lines for the files write_signin writes: the demo CRM's login watched.
SIGNIN_CONFIG = (
    "login: {path: /login, username_field: username, success: {cookie: crm_session}}\n"
    "secrets:\n  session_keys: {file: session.keys}\n  seal_keys: {file: seal.keys}\n"
    "policies: policies\n"
)


def write_signin(folder: Path) -> str:
    """What a signed-in gateway's folder holds besides gateway.yaml: policies/policy.yaml
    (SIGNIN_POLICY), and session.keys and seal.keys from `crm-gateway keys generate`,
    owner-only. Returns SIGNIN_CONFIG, the config lines naming them."""
    (folder / "policies").mkdir(parents=True)
    (folder / "policies" / "policy.yaml").write_text(SIGNIN_POLICY)
    for keys in ("session", "seal"):
        line = subprocess.run(
            [*gateway_command(), "keys", "generate"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        path = folder / f"{keys}.keys"
        path.write_text(line)
        path.chmod(0o600)
    return SIGNIN_CONFIG


def start_gateway(
    processes: Processes, name: str, upstream: str, *, signed_in: bool
) -> tuple[str, subprocess.Popen[bytes], Path]:
    """`crm-gateway run -c gateway.yaml` in a folder of its own (the SQLite store beside the
    config, as by default). Anonymous: only `listen` and `upstream`. Signed in: the demo
    CRM's login watched, keys from `crm-gateway keys generate`, a policy where bob (no
    authenticator; enforcement optional) gets a complete session at the CRM login. Logging,
    the access log, the audit trail, state and workers at their defaults."""
    folder = processes.workdir / name
    folder.mkdir()
    port = free_port()
    config = f"listen: 127.0.0.1:{port}\nupstream:\n  url: {upstream}\n"
    if signed_in:
        config += write_signin(folder)
    (folder / "gateway.yaml").write_text(config)
    process = processes.start(name, [*gateway_command(), "run", "-c", "gateway.yaml"], cwd=folder)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(processes, name, process, url + PAGE)
    return url, process, processes.workdir / f"{name}.log"


def sign_in(url: str) -> str:
    """Logs in to the demo CRM through the gateway as bob: the Cookie header a browser then
    sends with every request (the CRM's cookies and the gateway's complete session)."""
    import aiohttp

    async def run() -> str:
        jar = aiohttp.CookieJar(unsafe=True)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(cookie_jar=jar, timeout=timeout) as http:
            async with http.get(f"{url}/login") as answer:
                csrf = re.search(r'name="csrf_token" value="([^"]+)"', await answer.text())
            if csrf is None:
                raise SystemExit(f"no login form at {url}/login")
            form = {"csrf_token": csrf.group(1), "username": "bob", "password": "bob-demo"}
            async with http.post(f"{url}/login", data=form, allow_redirects=False) as answer:
                if answer.status != 303:
                    raise SystemExit(f"signing in through {url} gave {answer.status}, not 303")
        return "; ".join(f"{c.key}={c.value}" for c in jar)

    return asyncio.run(run())


def fetch(url: str, cookie: str = "") -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # loopback only
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def check_serves(target: Target, expected: bytes) -> None:
    """Every target must answer the page itself: a redirect to a sign-in page, an error page
    or another body would be measured as if it were the page."""
    status, body = fetch(target.url + PAGE, target.cookie)
    if status != 200 or body != expected:
        raise SystemExit(
            f"{target.name} answered {status} with {len(body)} bytes to {PAGE}, not the "
            f"{len(expected)}-byte page:\n{body[:300]!r}"
        )
