"""What IT sees of a running gateway: the audit trail (file and store) of a real sign-in, the
access log's line per request, and the Prometheus metrics on the admin listener, with one
worker and with two (their counters added up). The demo CRM, real TOTP codes, real SQLite,
a real Redis for the two workers, the real `python -m gateway` for the listener."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio
from aiohttp import web
from prometheus_client import REGISTRY

from gateway.audit import event_json
from gateway.clock import FakeClock
from gateway.config.model import Logging
from gateway.crypto import new_key_line
from gateway.stores.protocols import AuditQuery
from gateway.web.app import build_app
from gateway.web.keys import ACCESS_LOG, AUDIT, DURABLE
from tests.conftest import AppStarter, GatewayFactory, Served, gateway_config, serve
from tests.process import GatewayProcess, free_port, run_command_async, start_gateway_process
from tests.signin_kit import (
    DEMO_LOGIN,
    DEMO_POLICY,
    Browsers,
    SignInGateway,
    Start,
    enrolled,
    write_keys,
    wrong_code,
)

# mallory may sign in only from 10.0.0.0/8: from here, her login is refused before the CRM.
POLICY = (
    DEMO_POLICY.replace("users:\n", "users:\n  mallory: {roles: [remote]}\n")
    + "networks:\n  far: [10.0.0.0/8]\nroles:\n  remote: {networks: [far]}\n"
)


@pytest.fixture
async def gw(crm: Served, tmp_path: Path) -> AsyncIterator[SignInGateway]:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "policy.yaml").write_text(POLICY)
    extra = (
        f"{DEMO_LOGIN}{write_keys(tmp_path)}policies: {folder}\n"
        f"audit: {{file: {tmp_path}/audit.jsonl}}\n"
    )
    config = gateway_config(crm.url, tmp_path, extra)
    config = replace(config, logging=Logging(access_log=True))
    clock = FakeClock(1_800_000_000.0)
    served = await serve(build_app(config, clock=clock), handler_cancellation=True)
    yield SignInGateway(served, clock)
    await served.runner.cleanup()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_sign_in_leaves_a_complete_audit_trail_in_the_file_and_the_store(
    gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    first, second = browsers(gw), browsers(gw)
    intruder = browsers(gw, headers={"Accept": "text/html", "User-Agent": "curl/8.0"})
    secret, codes = await enrolled(first)
    assert await second.crm_login("alice", "alice-demo") == "/_gateway/challenge"
    wrong = wrong_code(second, secret)
    status, body, failed = await second.answer(wrong)
    assert status == 400, body  # the page again, saying the code was wrong
    gw.clock.advance(30)
    status, _, _ = await second.answer(second.code(secret))
    assert status == 303
    status, _, denied = await intruder.post(
        "/login", {"username": "mallory", "password": "mallory-password"}
    )
    assert status == 403
    await gw.served.app[AUDIT].flush()
    stored = await gw.served.app[DURABLE].audit_events(AuditQuery())
    names = [e.name for _, e in stored]
    assert names == [
        "signin.crm_ok",
        "enrol.completed",
        "notice.not_sent",  # alice has no address or phone to be told of the new app
        "recovery.generated",
        "recovery.confirmed",
        "signin.completed",
        "signin.crm_ok",
        "challenge.failed",
        "challenge.passed",
        "signin.completed",
        "ip.denied",
    ]
    by_name = {e.name: e for _, e in stored}
    failure = by_name["challenge.failed"]
    assert (failure.user, failure.ip, failure.outcome, failure.reason) == (
        "alice",
        "127.0.0.1",
        "failed",
        "wrong_code",
    )
    assert failure.path == "/_gateway/challenge"
    assert failure.method == "POST"
    assert dict(failure.details) == {"factor": "totp"}
    assert failure.request_id == failed.headers["X-Request-Id"]
    refusal = by_name["ip.denied"]
    assert (refusal.user, refusal.reason, refusal.user_agent) == (
        "mallory",
        "ip_not_allowed",
        "curl/8.0",
    )
    assert refusal.request_id == denied.headers["X-Request-Id"]
    assert all(e.time == gw.clock.now() or e.time < gw.clock.now() for _, e in stored)
    # The file has the same events, line for line, as they happened.
    text = (tmp_path / "audit.jsonl").read_text()
    assert [json.loads(line) for line in text.splitlines()] == [event_json(e) for _, e in stored]
    # Never a code, secret, password or cookie.
    cookies = [c.value for b in (first, second) for c in b.jar]
    for forbidden in [secret, *codes, wrong, "alice-demo", "mallory-password", *cookies]:
        assert forbidden not in text, forbidden


async def test_the_access_log_has_one_line_per_request_with_its_decision(
    gw: SignInGateway,
    browsers: Browsers,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")  # logging.level: info
    capsys.readouterr()
    b = browsers(gw)
    await enrolled(b)
    status, _, page = await b.get("/contacts")
    assert status == 200
    status, _, denied = await b.post("/login", {"username": "mallory", "password": "x"})
    assert status == 403
    gw.served.app[ACCESS_LOG].flush()  # what a graceful stop (or 0.2 s) writes
    written = capsys.readouterr().err.splitlines()
    assert all(re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ", w) for w in written)
    lines = [w.split(" INFO gateway.access: ", 1)[1] for w in written]
    pattern = re.compile(
        r"^(?P<rid>[0-9a-f]{16}) 127\.0\.0\.1 (?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d{3}) "
        r"(?P<ms>\d+\.\d)ms user=(?P<user>\S+) decision=(?P<decision>[a-z]+)$"
    )
    parsed = [pattern.match(line) for line in lines]
    assert all(parsed), lines
    seen = [(m["method"], m["path"], m["status"], m["user"], m["decision"]) for m in parsed if m]
    assert seen == [
        ("GET", "/login", "200", "-", "forward"),
        ("POST", "/login", "303", "alice", "signin"),
        ("GET", "/_gateway/enrol", "200", "alice", "page"),
        ("POST", "/_gateway/enrol", "303", "alice", "page"),
        ("GET", "/_gateway/recovery-codes", "200", "alice", "page"),
        ("POST", "/_gateway/recovery-codes", "303", "alice", "page"),
        ("GET", "/contacts", "200", "alice", "forward"),
        ("POST", "/login", "403", "mallory", "deny"),
    ]
    rids = {m["path"] + m["status"]: m["rid"] for m in parsed if m}
    assert rids["/contacts200"] == page.headers["X-Request-Id"]
    assert rids["/login403"] == denied.headers["X-Request-Id"]


def _counts() -> dict[str, float]:
    return {
        "passed": _sample("crm_gateway_challenges_total", factor="totp", result="passed"),
        "wrong": _sample("crm_gateway_challenges_total", factor="totp", result="wrong_code"),
        "denied": _sample("crm_gateway_denials_total", reason="ip_not_allowed"),
        "deny": _sample("crm_gateway_requests_total", decision="deny"),
        "deny_seconds": _sample("crm_gateway_request_duration_seconds_count", decision="deny"),
        "store": _sample(
            "crm_gateway_store_duration_seconds_count", store="durable", operation="add_audit"
        ),
    }


async def test_metrics_count_decisions_challenges_and_denials(
    gw: SignInGateway, browsers: Browsers
) -> None:
    before = _counts()
    first, second = browsers(gw), browsers(gw)
    secret, _ = await enrolled(first)
    await second.crm_login("alice", "alice-demo")
    await second.answer(wrong_code(second, secret))
    gw.clock.advance(30)
    await second.answer(second.code(secret))
    await second.post("/login", {"username": "mallory", "password": "x"})
    await gw.served.app[AUDIT].flush()
    after = _counts()
    assert {k: after[k] - before[k] for k in before} == {
        "passed": 1,
        "wrong": 1,
        "denied": 1,
        "deny": 1,
        "deny_seconds": 1,
        "store": 1,
    }


# -- the admin listener, in the real program ---------------------------------------------------

_METRICS = re.compile(rb"metrics on http://(?P<host>[^ ]+):(?P<port>\d+)/metrics")


def _metrics_url(process: GatewayProcess) -> str:
    found = _METRICS.search(bytes(process.log))
    assert found, process.log.decode(errors="replace")
    return f"http://{found['host'].decode()}:{int(found['port'])}/metrics"


def _value(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        if metric == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


def _config(tmp_path: Path, upstream: str, extra: str = "") -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "policy.yaml").write_text(
        "roles:\n  admin: {interval: always}\n"
        "paths:\n  - {path: /secret/**, allow: [role:admin]}\n  - {path: /**, allow: [anyone]}\n"
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\n"
        f"upstream:\n  url: {upstream}\n"
        f"state:\n  durable: {{type: sqlite, path: {tmp_path}/gateway.db}}\n"
        f"policies: {tmp_path / 'policies'}\n"
        "admin: {listen: 127.0.0.1:0}\n"
        "logging: {access_log: false}\n"
        f"{extra}"
    )
    return config


async def _get_all(url: str, paths: list[str]) -> list[int]:
    # A new connection each time: with two workers the kernel spreads them.
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        statuses = []
        for path in paths:
            async with http.get(url + path) as r:
                await r.read()
                statuses.append(r.status)
        return statuses


async def _scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


async def _scrape_once_audited(url: str) -> str:
    """The metrics once the worker's audit batch has reached the store (it writes in the
    background: scraped again until then, for at most 10 s)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        text = await _scrape(url)
        labels = {"store": "durable", "operation": "add_audit"}
        written = _value(text, "crm_gateway_store_duration_seconds_count", **labels)
        if written or asyncio.get_running_loop().time() > deadline:
            return text
        await asyncio.sleep(0.1)


async def test_one_worker_serves_its_metrics_on_the_admin_listener(
    crm: Served, tmp_path: Path
) -> None:
    process = await start_gateway_process(_config(tmp_path, crm.url))
    try:
        url = _metrics_url(process)
        assert (
            await _get_all(process.url, ["/login"] * 5 + ["/secret/x"] * 2) == [200] * 5 + [403] * 2
        )
        text = await _scrape_once_audited(url)
        # Not on the public listener: the CRM's users never see the metrics.
        async with aiohttp.ClientSession() as http, http.get(process.url + "/metrics") as r:
            assert "crm_gateway_requests_total" not in await r.text()
    finally:
        assert await process.stop() == 0
    assert _value(text, "crm_gateway_requests_total", decision="forward") == 5
    assert _value(text, "crm_gateway_requests_total", decision="deny") == 2
    assert _value(text, "crm_gateway_denials_total", reason="path_not_allowed") == 2
    assert _value(text, "crm_gateway_request_duration_seconds_count", decision="forward") == 5
    assert (
        _value(
            text, "crm_gateway_store_duration_seconds_count", store="durable", operation="add_audit"
        )
        >= 1
    )
    assert "# TYPE crm_gateway_request_duration_seconds histogram" in text


async def test_upstream_errors_are_counted_by_kind(tmp_path: Path) -> None:
    process = await start_gateway_process(_config(tmp_path, f"http://127.0.0.1:{free_port()}"))
    try:
        assert await _get_all(process.url, ["/", "/x"]) == [502, 502]
        text = await _scrape(_metrics_url(process))
    finally:
        await process.stop()
    assert _value(text, "crm_gateway_upstream_errors_total", kind="connect") == 2
    assert _value(text, "crm_gateway_requests_total", decision="error") == 2


async def test_two_workers_metrics_are_added_up_by_the_supervisor(
    crm: Served, tmp_path: Path, redis_url: str
) -> None:
    prefix = f"crm-gateway-test:{secrets.token_hex(6)}:"
    for name in ("session", "seal"):
        (tmp_path / f"{name}.keys").write_text(new_key_line("k1") + "\n")
    extra = (
        "workers: 2\n"
        f"{DEMO_LOGIN}"
        f"secrets:\n  session_keys: {{file: {tmp_path}/session.keys}}\n"
        f"  seal_keys: {{file: {tmp_path}/seal.keys}}\n"
    )
    config = _config(tmp_path, crm.url, extra)
    text = config.read_text().replace(
        "state:\n", f"state:\n  shared: {{type: redis, url: '{redis_url}', prefix: '{prefix}'}}\n"
    )
    config.write_text(text)
    process = await start_gateway_process(config)
    try:
        assert len(process.children()) == 2
        requests = 40
        assert await _get_all(process.url, ["/login"] * requests) == [200] * requests
        scraped = await _scrape(_metrics_url(process))
    finally:
        assert await process.stop() == 0
        client = redis.asyncio.Redis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    # Each worker counted its own; the supervisor's listener shows the sum.
    assert _value(scraped, "crm_gateway_requests_total", decision="forward") == requests
    assert b"metrics on http://127.0.0.1:" in process.log


async def test_a_busy_admin_port_stops_the_start_with_a_clear_error(
    crm: Served, start_app: AppStarter, tmp_path: Path
) -> None:
    busy = await start_app(web.Application())
    config = _config(tmp_path, crm.url)
    config.write_text(config.read_text().replace("127.0.0.1:0}", f"127.0.0.1:{busy.port}}}"))
    code, _, err = await run_command_async("run", "-c", str(config), timeout=30)
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{busy.port} (admin)" in err


async def test_wrong_codes_at_the_gateway_reach_a_webhook_as_one_alert(
    crm: Served, start_app: AppStarter, start: Start, browsers: Browsers
) -> None:
    """The alert rules wired into the running gateway: a real webhook receiver on loopback."""
    received: list[dict[str, object]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        arrived.set()
        return web.Response(status=204)

    receiver_app = web.Application()
    receiver_app.router.add_post("/hook", hook)
    receiver = await start_app(receiver_app)
    extra = (
        "audit: {file: off}\n"
        "alerts:\n"
        f"  webhook: {{url: '{receiver.url}/hook'}}\n"
        "  rules:\n    failed_codes: {count: 3, within: 10m}\n"
        "    ip_denied: off\n    new_network: off\n    sms_volume: off\n"
    )
    gw = await start(crm.url, extra=extra)
    first, second = browsers(gw), browsers(gw)
    secret, _ = await enrolled(first)
    await second.crm_login("alice", "alice-demo")
    wrong = wrong_code(second, secret)
    for _ in range(4):  # the 3rd raises the alert; the 4th is in the same window
        status, _, _ = await second.answer(wrong)
        assert status == 400
    await asyncio.wait_for(arrived.wait(), 10)
    await asyncio.sleep(0.3)  # a second alert would have arrived by now
    await gw.served.app[AUDIT].flush()
    sent = await gw.served.app[DURABLE].audit_events(AuditQuery(names=("alert.*",)))
    [alert] = received
    assert (alert["rule"], alert["user"], alert["count"]) == ("failed_codes", "alice", 3)
    assert wrong not in json.dumps(alert)
    assert [(e.name, e.user, e.reason) for _, e in sent] == [
        ("alert.sent", "alice", "failed_codes")
    ]


# -- an audit file that cannot be written, in a running gateway --------------------------------


async def test_a_full_audit_file_loses_lines_counted_and_told_while_the_store_keeps_all(
    upstream: Served,
    start_gateway: GatewayFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The audit file becomes a link to /dev/full (ENOSPC, a full disk) under the running
    gateway, then a file again: the gateway notices each change within a second."""
    caplog.set_level(logging.INFO, logger="gateway.audit")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "policy.yaml").write_text(
        "roles:\n  admin: {interval: always}\n"
        "paths:\n  - {path: /secret/**, allow: [role:admin]}\n  - {path: /**, allow: [anyone]}\n"
    )
    out = tmp_path / "audit.jsonl"
    gw = await start_gateway(
        upstream.url, f"policies: {tmp_path / 'policies'}\naudit: {{file: {out}}}\n"
    )
    lost = "crm_gateway_audit_lines_lost_total"
    before = _sample(lost, output="file")
    sent = 0

    async def refused_until(done: Callable[[], bool]) -> None:
        nonlocal sent
        for _ in range(100):
            assert await _get_all(gw.url, ["/secret/x"]) == [403]
            sent += 1
            if done():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the audit file's change was never noticed")

    await refused_until(lambda: out.exists())
    full = tmp_path / "full"
    full.symlink_to("/dev/full")
    full.replace(out)
    await refused_until(lambda: _sample(lost, output="file") - before >= 3)
    out.unlink()
    await refused_until(lambda: out.exists())
    counted = _sample(lost, output="file") - before
    told = [r.getMessage() for r in caplog.records if r.name == "gateway.audit"]
    assert len(told) == 2, told
    assert "cannot be written (" in told[0] and "No space left on device" in told[0]
    assert told[1].startswith(f"audit file {out} written again: {int(counted)} lines lost")
    await gw.app[AUDIT].flush()
    stored = await gw.app[DURABLE].audit_events(AuditQuery(names=("path.denied",)))
    assert len(stored) == sent
