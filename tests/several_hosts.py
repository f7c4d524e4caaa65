"""Two gateway hosts behind nginx, as docs/several-hosts.md deploys them, for the tests: two
real `python -m gateway run` processes, each with its own folder (a copy of the same
gateway.yaml, key files and policy, as on two hosts), sharing a PostgreSQL cluster and a
`redis-server` of the test's own; and nginx running deploy/nginx/two-gateways.conf with only
its marked values replaced (the gateways' ports, the listener, a self-signed certificate),
balancing round-robin over TLS.

Which gateway served a request is read, not assumed: nginx passes its $request_id to the
gateways (a trusted proxy's X-Request-Id is kept), each gateway writes it in its own access
log and returns it in X-Request-Id. `Deployment.served_by` finds it in the logs;
`Deployment.next_goes_to` steers round-robin (one nginx worker takes turns strictly) so that
the next request lands on a chosen gateway.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from gateway.clock import SystemClock
from tests.conftest import Served
from tests.postgres_cluster import PostgresCluster
from tests.process import GatewayProcess, free_port, start_gateway_process
from tests.redis_server import RedisServer
from tests.signin_kit import DEMO_LOGIN, DEMO_POLICY, Browser, write_keys

NGINX_EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "two-gateways.conf"
NO_TLS_CHECK = False  # the test's own self-signed certificate, on loopback


def gateway_yaml(
    crm_url: str, cluster: PostgresCluster, redis: RedisServer, keys: str, extra: str = ""
) -> str:
    """One host's gateway.yaml: the same on every host (relative paths: its own folder)."""
    return (
        "listen: 127.0.0.1:0\n"
        f"upstream:\n  url: {crm_url}\n"
        "trusted_proxies: [127.0.0.1/32]\n"
        "state:\n"
        f"  durable: {{type: postgres, url: '{cluster.url()}'}}\n"
        f"  shared: {{type: redis, url: '{redis.url}', prefix: 'crm-gateway:'}}\n"
        "policies: policies\n"
        f"{DEMO_LOGIN}"
        f"{keys}"
        "shutdown: {drain_delay: 0s, grace: 5s}\n"
        f"{extra}"
    )


@dataclass
class Host:
    name: str  # "a", "b"
    folder: Path
    process: GatewayProcess
    metrics_port: int = 0

    async def store_calls(self, http: aiohttp.ClientSession) -> dict[tuple[str, str], int]:
        """(store, operation) → calls so far, from the gateway's own metrics (the count of
        crm_gateway_store_duration_seconds, taken at the store seam)."""
        assert self.metrics_port, "started without metrics"
        async with http.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            text = await r.text()
        found = re.finditer(
            r'^crm_gateway_store_duration_seconds_count\{operation="([^"]+)",store="([^"]+)"\} ([0-9.e+]+)$',
            text,
            re.M,
        )
        return {(m[2], m[1]): int(float(m[3])) for m in found}

    @property
    def config(self) -> Path:
        return self.folder / "gateway.yaml"

    @property
    def url(self) -> str:
        return self.process.url

    def logged(self, request_id: str) -> bool:
        """Whether this gateway's access log has a line for the request."""
        return (
            re.search(rb"\b" + re.escape(request_id.encode()) + rb"\b", self.process.log)
            is not None
        )


def render_nginx(
    template: str, *, listen: int, gateways: list[int], cert: Path, key: Path, log: Path
) -> str:
    """deploy/nginx/two-gateways.conf with its marked values replaced; each must be there
    exactly once, so an edit of the example that the test no longer runs fails here."""
    changes = {
        "listen 443 ssl;": f"listen 127.0.0.1:{listen} ssl;",
        "server gw1.internal:8080 ": f"server 127.0.0.1:{gateways[0]} ",
        "server gw2.internal:8080 ": f"server 127.0.0.1:{gateways[1]} ",
        "/etc/ssl/certs/crm.example.com.pem": str(cert),
        "/etc/ssl/private/crm.example.com.key": str(key),
        "/var/log/nginx/crm-gateways.log": str(log),
    }
    for old, new in changes.items():
        assert template.count(old) == 1, f"{NGINX_EXAMPLE}: {old!r} is not there exactly once"
        template = template.replace(old, new)
    return template


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, made here (cryptography, a gateway dependency)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def nginx_binary() -> str:
    """Debian's nginx, installed with apt when missing and we are root; else the test fails
    saying how to install it."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "-o", "DPkg::Lock::Timeout=120", "install", "-y", "-qq", "nginx"],
            check=False,
            capture_output=True,
            timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail("nginx is needed for the several-hosts tests: apt-get install nginx")
    return found


class Nginx:
    """nginx with the example as its only server, in a folder of its own (its workers run
    as nobody when it is started as root, so the folder is world-readable)."""

    def __init__(self, gateways: list[int]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="crmgw-nginx-"))
        self.folder.chmod(0o755)
        self.port = free_port()
        cert, key = self_signed(self.folder)
        self.access_log = self.folder / "access.log"
        site = render_nginx(
            NGINX_EXAMPLE.read_text(),
            listen=self.port,
            gateways=gateways,
            cert=cert,
            key=key,
            log=self.access_log,
        )
        (self.folder / "two-gateways.conf").write_text(site)
        temp = "".join(
            f"  {kind}_temp_path {self.folder}/{kind}-temp;\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # One worker: round-robin then takes strict turns, which the tests steer by.
        (self.folder / "nginx.conf").write_text(
            f"worker_processes 1;\npid {self.folder}/nginx.pid;\n"
            f"error_log {self.folder}/error.log warn;\n"
            "events { worker_connections 1024; }\n"
            f"http {{\n{temp}  include {self.folder}/two-gateways.conf;\n}}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [nginx_binary(), "-p", str(self.folder), "-e", f"{self.folder}/error.log"]
        args += ["-c", str(self.folder / "nginx.conf"), "-g", "daemon off;"]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
            err = self.process.stderr.read() if self.process.stderr else b""
            raise AssertionError(f"nginx did not start: {err.decode(errors='replace')}")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                self.process.wait(10)
            if self.process.stderr is not None:
                self.process.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class SystemTime:
    """What tests.signin_kit.Browser needs of a gateway: its address and its clock (the
    gateways run on the system clock)."""

    url: str
    clock: SystemClock = field(default_factory=SystemClock)


async def scripted_browser(url: str, *, accept: str = "text/html") -> Browser:
    """tests.signin_kit.Browser through nginx's TLS (the test's own certificate)."""
    browser = Browser(SystemTime(url), headers={"Accept": accept})  # type: ignore[arg-type]
    headers = dict(browser.http.headers)
    await browser.http.close()
    browser.http = aiohttp.ClientSession(
        cookie_jar=browser.jar,
        headers=headers,
        connector=aiohttp.TCPConnector(ssl=NO_TLS_CHECK),
        timeout=aiohttp.ClientTimeout(total=30),
    )
    return browser


@dataclass
class Deployment:
    crm: Served
    cluster: PostgresCluster
    redis: RedisServer
    nginx: Nginx
    hosts: list[Host]
    http: aiohttp.ClientSession = field(repr=False)

    @property
    def url(self) -> str:
        return self.nginx.url

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def other(self, host: Host) -> Host:
        return next(h for h in self.hosts if h is not host)

    async def served_by(self, request_id: str) -> Host:
        """The gateway whose access log has the request (lines are written every 0.2 s)."""
        assert request_id, "a response without X-Request-Id"
        deadline = time.monotonic() + 5
        while True:
            found = [h for h in self.hosts if h.logged(request_id)]
            if found:
                assert len(found) == 1, f"{request_id} in both gateways' logs"
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"request {request_id} is in neither gateway's access log")
            await asyncio.sleep(0.05)

    async def probe(self) -> Host:
        """One request through nginx (healthz, which every gateway answers): who served it."""
        async with self.http.get(f"{self.url}/_gateway/healthz", ssl=NO_TLS_CHECK) as r:
            assert r.status == 200, r.status
            return await self.served_by(r.headers.get("X-Request-Id", ""))

    async def next_goes_to(self, host: Host) -> None:
        """Probe until one lands on the other gateway: round-robin then sends the next
        request to `host`. The test checks where that request went all the same."""
        for _ in range(4):
            if await self.probe() is not host:
                return
        raise AssertionError("round-robin did not take turns")


async def start_deployment(
    crm: Served,
    cluster: PostgresCluster,
    redis: RedisServer,
    folder: Path,
    *,
    policy: str = DEMO_POLICY,
    extra: str = "",
    metrics: bool = False,
) -> Deployment:
    """Two hosts' folders (a copy of the same config, keys and policy in each), both gateways
    started at once (they make the schema together: the advisory lock), then nginx.
    `metrics`: each serves Prometheus metrics on a port of its own (`Host.metrics_url`)."""
    first = folder / "host-a"
    first.mkdir()
    (first / "policies").mkdir()
    (first / "policies" / "policy.yaml").write_text(policy)
    keys = write_keys(first).replace(f"{first}/", "")
    (first / "gateway.yaml").write_text(gateway_yaml(crm.url, cluster, redis, keys, extra))
    second = folder / "host-b"
    shutil.copytree(first, second)
    ports = {}
    for host in (first, second):
        if metrics:  # the one line that differs: two "hosts" on one machine
            ports[host] = free_port()
            with (host / "gateway.yaml").open("a") as config:
                config.write(f"admin: {{listen: '127.0.0.1:{ports[host]}'}}\n")
    processes = await asyncio.gather(
        start_gateway_process(first / "gateway.yaml"),
        start_gateway_process(second / "gateway.yaml"),
    )
    hosts = [
        Host("a", first, processes[0], ports.get(first, 0)),
        Host("b", second, processes[1], ports.get(second, 0)),
    ]
    nginx = Nginx([h.process.port for h in hosts])
    try:
        nginx.start()
    except BaseException:
        for h in hosts:
            await h.process.stop()
        raise
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
    return Deployment(crm, cluster, redis, nginx, hosts, http)


async def stop_deployment(deployment: Deployment) -> None:
    await deployment.http.close()
    deployment.nginx.stop()
    for host in deployment.hosts:
        if host.process.process.returncode is None:
            await host.process.stop()


@pytest.fixture
async def deployment(
    crm: Served, postgres_cluster: PostgresCluster, own_redis: RedisServer, tmp_path: Path
) -> AsyncIterator[Deployment]:
    started = await start_deployment(crm, postgres_cluster, own_redis, tmp_path)
    try:
        yield started
    finally:
        await stop_deployment(started)
