"""`make soak`: a bounded mixed load against the real gateway, run as a user runs it, watching
for leaks and errors. Owns the soak's processes (`crm-gateway demo` for its CRM, `crm-gateway
run`, the admin commands that set it up), their configs and the verdict; imports no gateway code.

Two configurations, one after the other: one worker on SQLite with the memory shared store,
and two workers sharing the machine's Redis (127.0.0.1:6379, under a key prefix of their own,
removed afterwards); sign-in on in both. The load is soak_load.py's, the /proc samples and the
report soak_watch.py's. Loopback only; every wait is bounded. Exit status 1 when a request
failed (5xx, a refused or cut connection, a timeout), an answer was not the expected one, the
gateway logged an error or did not stop cleanly on SIGTERM, or memory or descriptors grew past
the limits (docs/soak.md); 2 when the soak could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from soak_load import Target, enrol, mixed_load, wrong_codes
from soak_watch import Limits, Outcome, cpu_seconds, report, sample, watch

REDIS = ("127.0.0.1", 6379)
WRONG_CODE_EVERY = 15.0  # seconds between two mistyped codes: "a few"
SETTLE = 3.0  # seconds after the load before the last sample: the client's sockets are closed

POLICY = """\
# The soak's policy: an organisation deny list (TEST-NET-2), a path only admins may open, the
# API for tokens only, everything else for anyone; every demo user verifies with a code.
networks:
  blocked: [198.51.100.0/24]
organisation: {deny: [blocked]}
roles: {admin: {}}
defaults: {interval: always, factors: [totp, recovery], enforcement: required, remember_device: off}
users:
  alice: {}
  bob: {}
  carol: {}
paths:
  - {path: "/admin/**", allow: ["role:admin"]}
  - {path: "/api/**", allow: [token]}
  - {path: "/**", allow: [anyone]}
api:
  tokens: [{header: X-API-Key}]
  unknown_tokens: deny
"""

CONFIG = """\
# crm-gateway soak: {name}
listen: 127.0.0.1:{port}
workers: {workers}
upstream: {{url: "http://127.0.0.1:{crm_port}"}}
trusted_proxies: [127.0.0.1/32]
state:
  durable: {{type: sqlite, path: gateway.db}}
  shared: {shared}
policies: policies
login:
  mode: upstream
  path: /login
  username_field: username
  success: {{status: [302], cookie: crm_session}}
  logout: {{path: /logout, method: POST}}
secrets:
  session_keys: {{file: session.keys}}
  seal_keys: {{file: seal.keys}}
"""


@dataclass(frozen=True)
class Setup:
    key: str  # --only picks by it
    name: str
    workers: int
    redis_prefix: str | None = None

    def shared(self) -> str:
        if self.redis_prefix is None:
            return "{type: memory}"
        url = f"redis://{REDIS[0]}:{REDIS[1]}/0"
        return f'{{type: redis, url: "{url}", prefix: "{self.redis_prefix}"}}'


# -- processes ------------------------------------------------------------------------------


def command() -> list[str]:
    """The `crm-gateway` program, as `python -m gateway` (its documented equivalent) from this
    interpreter: a console script made by an older install could point at moved modules."""
    return [sys.executable, "-m", "gateway"]


def run_command(*args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [*command(), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"crm-gateway {' '.join(args)}: exit {done.returncode}: {done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], logs: Path, name: str) -> subprocess.Popen[bytes]:
    """A child in its own process group, its output in files (never the terminal)."""
    with open(logs / f"{name}.log", "wb") as err, open(logs / f"{name}.out", "wb") as out:
        return subprocess.Popen(
            [*command(), *args], stdout=out, stderr=err, cwd=logs, start_new_session=True
        )


async def wait_until_up(url: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except (TimeoutError, aiohttp.ClientError):
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up (exit status {process.poll()})")


async def stop(process: subprocess.Popen[bytes], seconds: float) -> tuple[int | None, float]:
    """SIGTERM, as systemd sends it; its whole group killed if it outlives `seconds`.
    (exit status, or None when it had to be killed; seconds it took)"""
    started = time.monotonic()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        status: int | None = await asyncio.to_thread(process.wait, seconds)
    except subprocess.TimeoutExpired:
        status = None
        os.killpg(process.pid, signal.SIGKILL)  # not reaped yet: the group is still its own
        await asyncio.to_thread(process.wait, 10)
    return status, time.monotonic() - started


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def clean_redis(prefix: str) -> int:
    """Removes the soak's keys; how many there were."""
    import redis  # the dev extra: only the Redis configuration needs it

    client = redis.Redis(host=REDIS[0], port=REDIS[1], db=0, socket_timeout=5)
    removed = 0
    try:
        keys = list(itertools.islice(client.scan_iter(match=f"{prefix}*", count=1000), 10**6))
        for i in range(0, len(keys), 500):
            removed += int(client.delete(*keys[i : i + 500]))
    finally:
        client.close()
    return removed


# -- one configuration -----------------------------------------------------------------------


def prepare(setup: Setup, folder: Path, port: int, crm_port: int) -> Path:
    """gateway.yaml, keys from `crm-gateway keys generate`, the policy: as an operator would."""
    (folder / "policies").mkdir(parents=True)
    (folder / "policies" / "soak.yaml").write_text(POLICY)
    for name in ("session", "seal"):
        key = folder / f"{name}.keys"
        key.write_text(run_command("keys", "generate"))
        key.chmod(0o600)
    config = folder / "gateway.yaml"
    config.write_text(
        CONFIG.format(
            name=setup.name,
            port=port,
            workers=setup.workers,
            crm_port=crm_port,
            shared=setup.shared(),
        )
    )
    return config


async def register_token(config: Path, url: str) -> str:
    """bob's API token, added with `crm-gateway tokens add`; waits until the gateway takes it
    (running gateways read new tokens within 2 s)."""
    token = secrets.token_urlsafe(24)
    await asyncio.to_thread(
        run_command, "tokens", "add", "--user", "bob", "--label", "soak", "-c", str(config),
        stdin=token + "\n",
    )  # fmt: skip
    headers = {"X-API-Key": token, "Authorization": "Token demo-token-bob"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for _ in range(100):
            async with http.get(url + "/api/contacts", headers=headers) as r:
                if r.status == 200:
                    return token
            await asyncio.sleep(0.1)
    raise RuntimeError("the gateway did not take the registered token within 10 s")


def log_errors(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [
        line for line in lines if " ERROR " in line or " CRITICAL " in line or "Traceback" in line
    ]


def folder_mb(folder: Path, pattern: str) -> float:
    return sum(p.stat().st_size for p in folder.glob(pattern)) / 1e6


async def load(
    gateway: int, crm: int, target: Target, secret: str, outcome: Outcome, args: argparse.Namespace
) -> None:
    """The mixed load, the wrong codes and the watch side by side for --minutes; then what
    each process cost in CPU (the three share the machine's cores)."""
    seconds = args.minutes * 60
    before = (cpu_seconds(gateway), cpu_seconds(crm), time.process_time())
    try:
        async with asyncio.timeout(seconds + 60):  # each request gives up after 10 s anyway
            _, outcome.seconds, _ = await asyncio.gather(
                watch(gateway, target.url, outcome.stats, seconds, args.sample_seconds,
                      outcome.samples),
                mixed_load(target, outcome.stats, seconds, args.concurrency),
                wrong_codes(target, "carol", secret, outcome.stats, seconds, WRONG_CODE_EVERY),
            )  # fmt: skip
    except TimeoutError:
        raise RuntimeError("the load did not end within a minute of its deadline") from None
    after = (cpu_seconds(gateway), cpu_seconds(crm), time.process_time())
    names = ("gateway", "demo CRM", "load client")
    outcome.cpu_cores = {
        n: (b - a) / outcome.seconds for n, a, b in zip(names, before, after, strict=True)
    }


async def soak_one(setup: Setup, folder: Path, args: argparse.Namespace) -> Outcome:
    outcome = Outcome(setup.name)
    port, crm_port = free_port(), free_port()
    config = prepare(setup, folder, port, crm_port)
    url = f"http://127.0.0.1:{port}"
    crm = start(
        ["demo", "--listen", "127.0.0.1:0", "--crm-listen", f"127.0.0.1:{crm_port}",
         "--data-dir", str(folder / "demo-crm")],
        folder, "demo-crm",
    )  # fmt: skip
    gateway: subprocess.Popen[bytes] | None = None
    try:
        await wait_until_up(f"http://127.0.0.1:{crm_port}/hello", crm)
        gateway = start(["run", "-c", str(config)], folder, "gateway")
        await wait_until_up(url + "/_gateway/healthz", gateway)
        token = await register_token(config, url)
        cookie, _ = await enrol(url, "alice", "10.20.0.5")
        _, carol_secret = await enrol(url, "carol", "10.20.0.6")
        target = Target(url, cookie, token, args.addresses)
        await load(gateway.pid, crm.pid, target, carol_secret, outcome, args)
        await asyncio.sleep(SETTLE)
        outcome.after = sample(gateway.pid, outcome.seconds + SETTLE)
    finally:
        if gateway is not None:
            outcome.stop_status, outcome.stop_seconds = await stop(gateway, 60)
        await stop(crm, 15)
        if setup.redis_prefix is not None:
            outcome.redis_keys_left = await asyncio.to_thread(clean_redis, setup.redis_prefix)
    outcome.log_errors = log_errors(folder / "gateway.log")
    outcome.store_mb = folder_mb(folder, "gateway.db*")
    return outcome


# -- main ------------------------------------------------------------------------------------


def setups(only: str | None) -> list[Setup]:
    prefix = f"crm-gateway-soak-{secrets.token_hex(4)}:"
    every = [
        Setup("sqlite", "1 worker, SQLite + memory shared store, sign-in on", 1),
        Setup("redis", "2 workers, SQLite + Redis shared store, sign-in on", 2, prefix),
    ]
    return [s for s in every if only in (None, s.key)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    parser.add_argument(
        "--minutes",
        type=float,
        default=float(env("SOAK_MINUTES", "3")),
        help="minutes of load per configuration (SOAK_MINUTES, default 3)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(env("SOAK_CONCURRENCY", "32")),
        help="clients sending at once (SOAK_CONCURRENCY, default 32)",
    )
    parser.add_argument(
        "--addresses",
        type=int,
        default=int(env("SOAK_ADDRESSES", "4096")),
        help="client addresses the anonymous requests come from (SOAK_ADDRESSES, default 4096;"
        " 16777216: a new one each time)",
    )
    parser.add_argument("--sample-seconds", type=float, default=2.0)
    parser.add_argument("--only", choices=["sqlite", "redis"])
    parser.add_argument(
        "--max-growth",
        type=float,
        default=5.0,
        help="MB/min of RSS growth in the last minute that fails the soak",
    )
    parser.add_argument(
        "--max-fd-creep",
        type=int,
        default=16,
        help="descriptors held in the last minute over the earlier peak that fail the soak",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs even after a pass")
    args = parser.parse_args()
    if not 0.1 <= args.minutes <= 120 or not 1 <= args.concurrency <= 512:
        parser.error("--minutes must be 0.1 to 120 and --concurrency 1 to 512")
    if not 1 <= args.addresses <= 1 << 24 or not 0.5 <= args.sample_seconds <= 60:
        parser.error("--addresses must be 1 to 16777216 and --sample-seconds 0.5 to 60")
    return args


async def run(args: argparse.Namespace, chosen: list[Setup], workdir: Path) -> list[str]:
    limits = Limits(args.max_growth, args.max_fd_creep)
    problems = []
    for setup in chosen:
        outcome = await soak_one(setup, workdir / setup.key, args)
        problems += [f"{setup.key}: {p}" for p in report(outcome, args.concurrency, limits)]
    return problems


def main() -> int:
    args = parse_args()
    chosen = setups(args.only)
    if any(s.redis_prefix for s in chosen) and not redis_answers():
        print("Redis does not answer on 127.0.0.1:6379: start it, or run with --only sqlite")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="crm-gateway-soak-"))
    print(
        f"soak: {len(chosen)} configuration(s) x {args.minutes:g} min of load, "
        f"{args.concurrency} clients; about {len(chosen) * (args.minutes + 0.5):.0f} min in all. "
        f"Gateway logs: {workdir}"
    )
    try:
        problems = asyncio.run(run(args, chosen, workdir))
    except (RuntimeError, TimeoutError, aiohttp.ClientError) as exc:
        print(f"soak could not run to its end: {exc!r}\nlogs kept in {workdir}")
        return 2
    if problems or args.keep:
        print(f"\nlogs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nsoak: {'FAIL: ' + '; '.join(problems) if problems else 'pass'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
