"""The image at work: the gateway started from the image's own entrypoint and command with a
config mounted where the docs say, in front of a stand-in CRM on loopback; then stopped as
`docker stop` stops it; then started on a broken config."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.image.container import Container, kill, served_by, terminate, uids
from tests.image.report import Report
from tests.image.standin_crm import MARK, StandinCrm, start_standin_crm

START_TIMEOUT = 60.0  # seconds from `buildah run` to a healthz answer
STOP_TIMEOUT = 20.0
KEPT = "session entries for the next start"  # the gateway's log line at a clean stop
# Listed by a short Python run inside the container, as the image's user: the state folder.
LIST_STATE = (
    "import json, os, sys; d = sys.argv[1]; "
    "print(json.dumps({n: [os.stat(os.path.join(d, n)).st_uid, "
    "os.stat(os.path.join(d, n)).st_mode & 0o777] for n in os.listdir(d)}))"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fetch(url: str) -> tuple[int, str, dict[str, str]]:
    """Status, body and headers; an error status is an answer too. Connection errors raise."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode(), dict(answer.headers.items())
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read().decode(), dict(answer.headers.items())


def write_config(
    folder: Path, port: int, crm_url: str, data_dir: str, keys: list[str], owner: int
) -> None:
    """What an operator mounts: gateway.yaml with sign-in on (so sessions are kept across a
    stop, beside the SQLite file) and the two key files, readable by the image's user only."""
    for name, key in zip(("session.keys", "seal.keys"), keys, strict=True):
        path = folder / name
        path.write_text(key + "\n")
        os.chown(path, owner, owner)
        path.chmod(0o400)
    (folder / "gateway.yaml").write_text(
        f"""\
listen: 127.0.0.1:{port}        # 0.0.0.0:8080 in a container of its own; the host's network here
upstream: {{url: "{crm_url}"}}
state:
  durable: {{type: sqlite, path: {data_dir}/gateway.db}}
  shared: {{type: memory}}
login:
  mode: upstream
  path: /login
  username_field: username
  success: {{status: [302], cookie: crm_session}}
secrets:
  session_keys: {{file: session.keys}}
  seal_keys: {{file: seal.keys}}
shutdown: {{drain_delay: 0s, grace: 2s}}
"""
    )


def wait_for_healthz(url: str, launcher: subprocess.Popen[bytes], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if launcher.poll() is not None:
            return False
        try:
            if fetch(url)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def check_running(report: Report, box: Container, config_dir: str, data_dir: str) -> None:
    crm = start_standin_crm()
    folder = Path(tempfile.mkdtemp(prefix="crm-gateway-image-"))
    folder.chmod(0o755)
    try:
        keys = [box.run(box.argv("keys", "generate")).stdout.strip() for _ in range(2)]
        report.check(
            "`crm-gateway keys generate` works in the image",
            all(":" in key for key in keys),
            "two key lines for the mounted config",
        )
        port = free_port()
        write_config(folder, port, crm.url, data_dir, keys, owner=box.uid)
        _serve_and_stop(report, box, folder, port, config_dir, data_dir, crm)
    finally:
        crm.stop()
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink()
        folder.rmdir()


def _serve_and_stop(
    report: Report,
    box: Container,
    folder: Path,
    port: int,
    config_dir: str,
    data_dir: str,
    crm: StandinCrm,
) -> None:
    base = f"http://127.0.0.1:{port}"
    healthz = f"{base}/_gateway/healthz"
    noop = box.run(["true"]).seconds
    log = folder / "gateway.log"
    started = time.monotonic()
    launcher = box.start(box.argv(), volumes={folder: f"{config_dir}:ro"}, log=log, env={})
    try:
        up = wait_for_healthz(healthz, launcher, started + START_TIMEOUT)
        seconds = time.monotonic() - started
        text = log.read_text(errors="replace")
        if not report.check("it starts and healthz answers 200", up, f"{seconds:.2f} s"):
            report.note(f"the gateway's output:\n{text}")
            return
        report.figure(
            "start",
            f"healthz 200 {seconds:.2f} s after `buildah run` ({noop:.2f} s of it buildah's own, a no-op's run)",
        )
        pid = served_by(launcher, "crm-gateway")
        real, effective = uids(pid) if pid else (0, 0)
        report.check(
            "the gateway process runs as the image's non-root user",
            pid is not None and real == effective == box.uid != 0,
            f"pid {pid}: uid {real}, euid {effective} (host's /proc)",
        )
        report.check("it runs on uvloop", "(uvloop," in text, _line_with(text, "listening on"))
        status, body, _ = fetch(f"{base}/_gateway/readyz")
        ready = json.loads(body) if body.startswith("{") else {}
        checks = {name: c.get("status") for name, c in ready.get("checks", {}).items()}
        report.check(
            "readyz answers 200 with the CRM and both stores up",
            status == 200 and len(checks) == 3 and set(checks.values()) == {"ok"},
            f"{status} {checks} {ready.get('reasons') or ''}",
        )
        path = f"/image-test/{secrets.token_hex(4)}?q=1"
        status, body, headers = fetch(base + path)
        seen = [s for s in crm.seen if s.path == path]
        report.check(
            "a request is proxied to the CRM",
            status == 200
            and body.startswith(MARK)
            and len(seen) == 1
            and seen[0].headers.get("X-Forwarded-For") == "127.0.0.1"
            and seen[0].headers.get("X-Request-Id") == headers.get("X-Request-Id"),
            f"GET {path}: {status} {body.strip()!r}, X-Request-Id passed on",
        )
        env = {"CRM_GATEWAY_HEALTHZ": healthz}
        done = box.run(box.healthcheck or ["false"], env=env)
        report.check(
            "the image's HEALTHCHECK passes",
            bool(box.healthcheck) and done.status == 0,
            f"exit {done.status}" if box.healthcheck else "no HEALTHCHECK",
        )
        exit_status = terminate(pid, launcher, STOP_TIMEOUT) if pid else None
        text = log.read_text(errors="replace")
        report.check(
            "SIGTERM stops it cleanly, sessions kept",
            exit_status == 0 and KEPT in text,
            f"exit {exit_status}: {_line_with(text, KEPT) or 'no sessions kept'}",
        )
        done = box.run(box.healthcheck or ["false"], env=env)
        report.check(
            "the HEALTHCHECK fails once it stopped", done.status != 0, f"exit {done.status}"
        )
        state = box.run(["python3", "-c", LIST_STATE, data_dir])
        files = json.loads(state.stdout) if state.status == 0 else {}
        wanted = ("gateway.db", "gateway.db.sessions")
        report.check(
            "the SQLite file and the kept sessions are written by the image's user",
            all(files.get(n, [0])[0] == box.uid != 0 for n in wanted)
            and files.get("gateway.db.sessions", [0, 0])[1] == 0o600,
            f"{data_dir}: {files or state.stderr.strip()}",
        )
    finally:
        kill(launcher)


def _line_with(text: str, needle: str) -> str:
    return next((line.strip()[-110:] for line in text.splitlines() if needle in line), "")


def check_bad_config(report: Report, box: Container, config_dir: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="crm-gateway-image-bad-"))
    folder.chmod(0o755)
    try:
        (folder / "gateway.yaml").write_text(
            f"listen: 127.0.0.1:{free_port()}\nupstream: {{url: crm.local}}\nbogus: 1\n"
        )
        done = box.run(box.argv(), volumes={folder: f"{config_dir}:ro"}, timeout=60)
        wanted = (
            f"{config_dir}/gateway.yaml:2: upstream.url: must be an http(s) URL",
            f"{config_dir}/gateway.yaml:3: bogus: unknown key",
            "not started",
        )
        missing = [w for w in wanted if w not in done.stderr]
        report.check(
            "a bad mounted config: exit 2, every problem on stderr",
            done.status == 2 and not missing,
            f"exit {done.status}, missing from stderr: {missing}"
            if missing
            else f"exit {done.status}",
        )
    finally:
        (folder / "gateway.yaml").unlink()
        folder.rmdir()
