"""Real nginx and Caddy in front of a gateway in forward-auth mode, started from the very files
in deploy/forward-auth/ with only their addresses changed (the ones docs/deployment.md shows).

Debian's packages: when one is missing and we are root with apt-get it is installed once
(under a lock, so parallel runs do not collide); otherwise the test fails saying how to
install it. Everything listens on 127.0.0.1; each process is stopped at the end of its test.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.process import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "forward-auth"
# The addresses the deploy files are written with: where the proxy listens, the gateway, the CRM.
LISTEN, GATEWAY, CRM = "127.0.0.1:8000", "127.0.0.1:8080", "127.0.0.1:8081"
INSTALL_LOCK = Path(tempfile.gettempdir()) / "crm-gateway-front-proxy-install.lock"


def installed(binary: str, package: str) -> str:
    """The binary's path, installing Debian's package first when it is missing and we may."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"{binary} is needed: apt-get install {package} (as root), then run again")
    with INSTALL_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not shutil.which(binary, path="/usr/sbin:/sbin:/usr/bin"):
            done = subprocess.run(
                ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", package],
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(f"apt-get install {package} failed:\n{done.stdout}{done.stderr}")
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(f"apt-get installed {package} but no {binary} is on PATH")
    return found


def render(name: str, replacements: dict[str, str]) -> str:
    """A deploy file with its example addresses replaced; each must be in it (a file changed
    so that the test would no longer run it as written fails here)."""
    text = (DEPLOY / name).read_text()
    for old, new in replacements.items():
        assert old in text, f"deploy/forward-auth/{name} no longer names {old}"
        text = text.replace(old, new)
    return text


@dataclass
class FrontProxy:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _wait_listening(proxy: FrontProxy) -> FrontProxy:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise AssertionError(f"{proxy.name} stopped at start:\n{proxy.log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5):
                return proxy
        except OSError:
            time.sleep(0.05)
    proxy.stop()
    raise AssertionError(f"{proxy.name} did not listen within 20 s:\n{proxy.log.read_text()}")


def start_nginx(folder: Path, gateway_port: int, crm_port: int) -> FrontProxy:
    """deploy/forward-auth/nginx.conf (a server block) inside a minimal nginx.conf of the
    test's own: its pid, logs and temp folders in `folder`."""
    nginx = installed("nginx", "nginx")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = render(
        "nginx.conf",
        {
            LISTEN: f"127.0.0.1:{port}",
            GATEWAY: f"127.0.0.1:{gateway_port}",
            CRM: f"127.0.0.1:{crm_port}",
        },
    )
    (folder / "server.conf").write_text(server)
    temp = "".join(
        f"  {kind}_temp_path {folder}/{kind}-temp;\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx's workers would run as nobody, who cannot enter pytest's private folders.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    main = (
        f"{user}worker_processes 1;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log info;\n"
        "events { worker_connections 512; }\n"
        f"http {{\n  access_log {folder}/access.log;\n{temp}  include {folder}/server.conf;\n}}\n"
    )
    (folder / "nginx.conf").write_text(main)
    log = folder / "nginx.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                nginx,
                "-p",
                str(folder),
                "-e",
                f"{folder}/error.log",
                "-c",
                str(folder / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return _wait_listening(FrontProxy("nginx", port, process, folder / "error.log"))


def start_caddy(folder: Path, gateway_port: int, crm_port: int) -> FrontProxy:
    """deploy/forward-auth/Caddyfile on http://127.0.0.1:PORT, with `admin off` (no admin
    endpoint on :2019, which parallel tests would share) and Caddy's data in `folder`."""
    caddy = installed("caddy", "caddy")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    site = render(
        "Caddyfile",
        {
            # Caddy would listen on every interface for that port: loopback only.
            "crm.example.com {": f"http://127.0.0.1:{port} {{\n\tbind 127.0.0.1",
            GATEWAY: f"127.0.0.1:{gateway_port}",
            CRM: f"127.0.0.1:{crm_port}",
        },
    )
    config = folder / "Caddyfile"
    config.write_text("{\n\tadmin off\n}\n\n" + site)
    log = folder / "caddy.out"
    env = {
        **os.environ,
        "HOME": str(folder),
        "XDG_DATA_HOME": str(folder / "data"),
        "XDG_CONFIG_HOME": str(folder / "config"),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [caddy, "run", "--config", str(config), "--adapter", "caddyfile"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return _wait_listening(FrontProxy("caddy", port, process, log))


PROXIES = {"nginx": start_nginx, "caddy": start_caddy}


def start_proxy(name: str, folder: Path, gateway_port: int, crm_port: int) -> FrontProxy:
    """The proxy `name` started in `folder`. A port free_port found free may be taken before
    the proxy binds it (an outgoing connection of a test running beside this one): tried
    again on another, in a folder of its own, up to three times."""
    for attempt in range(3):
        try:
            return PROXIES[name](folder / f"try-{attempt}", gateway_port, crm_port)
        except AssertionError as failed:
            if attempt == 2 or "address already in use" not in str(failed).lower():
                raise
    raise AssertionError("unreachable")
