"""Activity alerts (gateway/alerts/) end to end: audit events recorded on a real trail, counted
in the real shared stores (in-process and a real Redis), networks kept in real SQLite, alerts
posted to a real aiohttp receiver on loopback (signature checked) and mailed through aiosmtpd.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from gateway.alerts import AlertRules, network_of
from gateway.alerts.alert import signature
from gateway.audit import AuditTrail
from gateway.clock import FakeClock
from gateway.config.alerts import (
    AlertMail,
    Alerts,
    NewNetwork,
    Rules,
    SmsVolume,
    Threshold,
    Webhook,
)
from gateway.config.messaging import SmtpProvider
from gateway.model import AuditEvent, format_interval
from gateway.stores.memory import MemorySharedStore
from gateway.stores.protocols import SharedStore
from gateway.stores.redis import RedisSharedStore
from gateway.stores.sqlite import SqliteDurableStore
from tests.conftest import serve
from tests.senders.test_senders import Inbox, LoopbackController, read_mail

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z: a window boundary for 10m, 5m and 1h
SECRET = "alert-webhook-secret-value"
IT = ("it@example.org", "security@example.org")
FAST = 0.01  # retry backoff in tests: the schedule itself is tested in test_senders

# Small thresholds: a test records a handful of events, not hundreds.
RULES = Rules(
    failed_codes=Threshold(5, 600.0),
    ip_denied=Threshold(5, 300.0),
    new_network=NewNetwork(),
    sms_volume=SmsVolume(count=6, within=3600.0, per_user=3),
)


# ---------------------------------------------------------------- shared stores


@dataclass
class Backend:
    """A shared store, and how time passes for it: the fake clock moves, and a Redis key's
    time to live is shortened by as much (what has run out goes)."""

    kind: str
    store: SharedStore
    clock: FakeClock
    another: Callable[[], SharedStore]  # a second client of the same store (another worker)
    shorten: Callable[[float], Awaitable[None]]

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.shorten(seconds)


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    clock = FakeClock(T0)
    if request.param == "memory":
        memory = MemorySharedStore(clock)

        async def nothing(_seconds: float) -> None:
            return None  # the store reads the fake clock itself

        yield Backend("memory", memory, clock, lambda: memory, nothing)
        await memory.close()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"crm-gateway-test:{secrets.token_hex(6)}:"
    clients = [RedisSharedStore(url, prefix=prefix)]
    raw = clients[0]._client  # reached past the store only to move time and clean up

    async def shorten(seconds: float) -> None:
        async for key in raw.scan_iter(match=prefix + "*"):
            left = await raw.pttl(key)
            if 0 < left <= seconds * 1000:
                await raw.delete(key)
            elif left > 0:
                await raw.pexpire(key, left - int(seconds * 1000))

    def another() -> SharedStore:
        clients.append(RedisSharedStore(url, prefix=prefix))
        return clients[-1]

    yield Backend("redis", clients[0], clock, another, shorten)
    keys = [k async for k in raw.scan_iter(match=prefix + "*")]
    if keys:
        await raw.delete(*keys)
    for client in clients:
        await client.close()


# ---------------------------------------------------------------- the webhook receiver


@dataclass
class Hook:
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    attempts: int = 0
    answers: list[int] = field(default_factory=list)  # statuses in turn; the last repeats
    hold: asyncio.Event | None = None  # while set to an unset Event, requests wait
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


HOOK = web.AppKey("hook", Hook)


def _signed_by_us(body: bytes, header: str) -> bool:
    """The receiver's check, written as a receiver would, not with the gateway's code."""
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


async def receive(request: web.Request) -> web.Response:
    hook = request.app[HOOK]
    body = await request.read()
    hook.attempts += 1
    hook.arrived.set()
    if hook.hold is not None:
        await hook.hold.wait()
    status = hook.answers.pop(0) if len(hook.answers) > 1 else (hook.answers or [200])[0]
    if status != 200:
        return web.Response(status=status, text="not now")
    if not _signed_by_us(body, request.headers.get("X-Gateway-Signature", "")):
        return web.Response(status=401, text="bad signature")
    hook.bodies.append(body)
    hook.headers.append(dict(request.headers))
    hook.received.append(json.loads(body))
    return web.json_response({"ok": True})


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    app = web.Application()
    app[HOOK] = Hook()
    app.router.add_post("/hook", receive)
    served = await serve(app, handler_cancellation=True)
    app[HOOK].url = f"{served.url}/hook"
    yield app[HOOK]
    await served.runner.cleanup()


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """aiosmtpd on loopback (the controller from test_senders) and its port."""
    mails = Inbox()
    controller = LoopbackController(mails)
    controller.start()
    yield mails, controller.port
    controller.stop()


# ---------------------------------------------------------------- the kit


@dataclass
class Kit:
    backend: Backend
    durable: SqliteDurableStore
    hook: Hook
    mails: Inbox
    config: Alerts
    trail: AuditTrail
    recorded: list[AuditEvent]
    made: list[AlertRules] = field(default_factory=list)

    @property
    def clock(self) -> FakeClock:
        return self.backend.clock

    def start(self, config: Alerts | None = None, **options: Any) -> AlertRules:
        """Alert rules listening to the kit's trail, as the app wires them."""
        return self.worker(self.trail, self.backend.store, config, **options)

    def worker(
        self,
        trail: AuditTrail,
        shared: SharedStore,
        config: Alerts | None = None,
        **options: Any,
    ) -> AlertRules:
        options.setdefault("backoff", FAST)
        rules = AlertRules(
            config or self.config, shared, self.durable, self.clock, trail, **options
        )
        trail.listeners.append(rules.observe)
        self.made.append(rules)
        return rules

    def record(self, name: str, outcome: str = "failed", **fields: Any) -> AuditEvent:
        fields.setdefault("path", "/_gateway/challenge")
        return self.trail.record(name, outcome, **fields)

    async def settle(self) -> None:
        for rules in self.made:
            await rules.settle()

    def outcomes(self, name: str) -> list[AuditEvent]:
        return [event for event in self.recorded if event.name == name]


def alerts_for(hook_url: str, smtp_port: int, **changes: Any) -> Alerts:
    config = Alerts(
        dedup=1800.0,
        webhook=Webhook(url=hook_url, secret=SECRET, timeout=2.0, retries=2),
        email=AlertMail(
            to=IT,
            provider=SmtpProvider(
                host="127.0.0.1", port=smtp_port, security="none", sender="gateway@example.org"
            ),
        ),
        rules=RULES,
    )
    return replace(config, **changes)


@pytest.fixture
async def kit(
    backend: Backend, hook: Hook, inbox: tuple[Inbox, int], tmp_path: Path
) -> AsyncIterator[Kit]:
    durable = SqliteDurableStore(str(tmp_path / "gateway.db"))
    await durable.open()
    trail = AuditTrail(None, backend.clock, output="")
    recorded: list[AuditEvent] = []
    trail.listeners.append(recorded.append)
    mails, port = inbox
    made = Kit(backend, durable, hook, mails, alerts_for(hook.url, port), trail, recorded)
    yield made
    for rules in made.made:
        await rules.close()
    await durable.close()


def metric(rule: str, outcome: str) -> float:
    labels = {"rule": rule, "outcome": outcome}
    return REGISTRY.get_sample_value("crm_gateway_alerts_total", labels) or 0.0


def fail_codes(kit: Kit, user: str, times: int, ip: str = "192.0.2.7") -> None:
    for _ in range(times):
        kit.record("challenge.failed", user=user, ip=ip, reason="wrong_code", factor="totp")


def mailed_subjects(kit: Kit) -> list[str]:
    # .strip(): a long subject is folded onto a continuation line, which starts with a space
    return [str(read_mail(received)["Subject"]).strip() for received in kit.mails.received]


# ---------------------------------------------------------------- failed codes


async def test_failed_codes_at_the_threshold_raise_exactly_one_alert(kit: Kit) -> None:
    sent_before = metric("failed_codes", "sent")
    kit.start()
    fail_codes(kit, "alice", 4)
    await kit.settle()  # in order: tasks on several Redis connections may overtake
    kit.record("enrol.failed", user="alice", ip="192.0.2.8", reason="wrong_code")
    await kit.settle()
    fail_codes(kit, "alice", 3)  # past the count in the same window: no second alert
    await kit.settle()

    [alert] = kit.hook.received
    assert alert["rule"] == "failed_codes"
    assert (alert["subject"], alert["user"], alert["count"], alert["window"]) == (
        "alice",
        "alice",
        5,
        600.0,
    )
    assert alert["summary"] == "5 failed codes for alice within 10m"
    assert alert["first_event"] == alert["last_event"] == "2027-01-15T08:00:00.000Z"
    assert [e["event"] for e in alert["events"]] == ["challenge.failed"] * 4 + ["enrol.failed"]
    assert alert["events"][0]["details"] == {"factor": "totp"}
    assert kit.hook.headers[0]["X-Gateway-Alert"] == alert["alert"]
    assert kit.hook.headers[0]["Content-Type"] == "application/json"

    assert sorted(r.envelope.rcpt_tos[0] for r in kit.mails.received) == sorted(IT)
    assert mailed_subjects(kit) == ["[crm-gateway] 5 failed codes for alice within 10m"] * 2
    text = read_mail(kit.mails.received[0]).get_content()
    assert "Rule:      failed_codes" in text
    assert "challenge.failed  failed  user=alice  ip=192.0.2.7  reason=wrong_code" in text

    sent = kit.outcomes("alert.sent")
    assert sorted(dict(e.details)["destination"] for e in sent) == ["email", "webhook"]
    assert {(e.user, e.reason, dict(e.details)["alert"]) for e in sent} == {
        ("alice", "failed_codes", alert["alert"])
    }
    assert kit.outcomes("alert.failed") == []
    assert metric("failed_codes", "sent") == sent_before + 2  # one per destination


async def test_wrong_passwords_for_one_account_from_many_addresses_raise_one_alert(
    kit: Kit,
) -> None:
    """Guessing spread over addresses: no address's own count shows it, the account's does
    (issue #12, item 4)."""
    kit.start()
    for n in range(9):
        kit.record("signin.crm_failed", user="alice", ip=f"203.0.113.{n}")
    await kit.settle()
    assert kit.hook.received == []
    kit.record("signin.password_failed", user="alice", ip="203.0.113.9")  # gateway login
    for n in range(5):  # more in the same window: still one alert
        kit.record("signin.crm_failed", user="alice", ip=f"198.51.100.{n}")
    await kit.settle()

    [alert] = kit.hook.received
    assert (alert["rule"], alert["subject"], alert["count"]) == ("failed_passwords", "alice", 10)
    assert alert["summary"] == "10 wrong passwords for alice within 1h"


async def test_a_policy_change_held_back_raises_an_alert_at_once(kit: Kit) -> None:
    kit.start()
    kit.record("policy.reload_held", reason="it removes every deny list (3 entries)")
    await kit.settle()

    [alert] = kit.hook.received
    assert (alert["rule"], alert["subject"]) == ("policy_held", "policy")
    assert (
        alert["summary"] == "a policy change was held back: it removes every deny list (3 entries)"
    )


async def test_failed_codes_below_the_threshold_raise_nothing(kit: Kit) -> None:
    kit.start()
    fail_codes(kit, "alice", 4)
    fail_codes(kit, "bob", 4)  # per user: alice's and bob's never add up
    kit.record("challenge.failed", user="", ip="192.0.2.9", reason="wrong_code")  # nobody
    await kit.settle()
    assert kit.hook.attempts == 0
    assert kit.mails.received == []


async def test_failures_split_by_a_window_boundary_are_counted_apart(kit: Kit) -> None:
    kit.start()
    kit.clock.advance(590)
    fail_codes(kit, "alice", 4)
    await kit.settle()
    await kit.backend.advance(20)  # 08:10:10: the next window
    fail_codes(kit, "alice", 4)
    await kit.settle()
    assert kit.hook.attempts == 0  # fixed windows: the documented blind spot
    fail_codes(kit, "alice", 1)
    await kit.settle()
    assert len(kit.hook.received) == 1


async def test_a_second_burst_within_dedup_is_suppressed_and_sent_again_after(kit: Kit) -> None:
    kit.start()
    fail_codes(kit, "alice", 5)
    await kit.settle()
    assert len(kit.hook.received) == 1
    suppressed = metric("failed_codes", "suppressed")

    await kit.backend.advance(600)  # a new counting window, still within the 30m dedup
    fail_codes(kit, "alice", 5)
    await kit.settle()
    assert len(kit.hook.received) == 1
    assert metric("failed_codes", "suppressed") == suppressed + 1

    fail_codes(kit, "bob", 5)  # another subject is not suppressed by alice's alert
    await kit.settle()
    assert [a["subject"] for a in kit.hook.received] == ["alice", "bob"]

    await kit.backend.advance(1800)  # the dedup window is over
    fail_codes(kit, "alice", 5)
    await kit.settle()
    assert [a["subject"] for a in kit.hook.received] == ["alice", "bob", "alice"]
    assert len(kit.mails.received) == 3 * len(IT)


async def test_two_workers_sharing_the_store_raise_one_alert(kit: Kit) -> None:
    # Two workers: each its own trail and alert rules, one shared store (for Redis, two
    # clients with their own connections), events split between them as requests are.
    trails = [kit.trail, AuditTrail(None, kit.clock, output="")]
    kit.worker(trails[0], kit.backend.store)
    kit.worker(trails[1], kit.backend.another())
    for n in range(12):
        trails[n % 2].record("challenge.failed", "failed", user="alice", reason="wrong_code")
    for n in range(12):
        trails[n % 2].record("code.sent", "ok", user=f"user{n}", reason="sms")
    await kit.settle()
    assert sorted(a["rule"] for a in kit.hook.received) == ["failed_codes", "sms_volume"]
    assert len(kit.mails.received) == 2 * len(IT)


async def test_two_workers_reaching_the_count_at_once_raise_one_alert(kit: Kit) -> None:
    workers = [
        kit.worker(AuditTrail(None, kit.clock, output=""), kit.backend.another()) for _ in range(4)
    ]
    events = [
        AuditEvent(T0, "challenge.failed", "failed", user="carol", reason="wrong_code")
        for _ in range(20)
    ]
    for n, event in enumerate(events):  # 20 increments racing across four workers
        workers[n % 4].observe(event)
    await kit.settle()
    assert [a["subject"] for a in kit.hook.received] == ["carol"]


# ---------------------------------------------------------------- delivery failures


async def test_a_webhook_answering_500_is_retried_then_alert_failed_is_recorded(
    kit: Kit,
) -> None:
    failed_before = metric("failed_codes", "failed")
    kit.hook.answers = [500]
    kit.start()
    fail_codes(kit, "alice", 5)
    await kit.settle()
    assert kit.hook.attempts == 3  # retries: 2
    [failed] = kit.outcomes("alert.failed")
    details = dict(failed.details)
    assert (failed.outcome, failed.user, failed.reason) == ("failed", "alice", "failed_codes")
    assert (details["destination"], details["attempts"], details["detail"]) == (
        "webhook",
        3,
        "status 500",
    )
    assert metric("failed_codes", "failed") == failed_before + 1
    # The mail went out all the same; and the gateway goes on counting.
    assert [dict(e.details)["destination"] for e in kit.outcomes("alert.sent")] == ["email"]
    kit.hook.answers = [200]
    fail_codes(kit, "bob", 5)
    await kit.settle()
    assert [a["subject"] for a in kit.hook.received] == ["bob"]


async def test_a_webhook_that_is_busy_once_gets_the_alert_on_the_retry(kit: Kit) -> None:
    kit.hook.answers = [503, 200]
    kit.start()
    fail_codes(kit, "alice", 5)
    await kit.settle()
    assert (kit.hook.attempts, len(kit.hook.received)) == (2, 1)
    webhook = [e for e in kit.outcomes("alert.sent") if dict(e.details)["destination"] == "webhook"]
    assert dict(webhook[0].details)["attempts"] == 2


async def test_an_unreachable_webhook_and_mail_server_leave_the_alert_to_the_next_burst(
    kit: Kit,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        down = alerts_for(f"http://127.0.0.1:{port}/hook", port)
        kit.start(down)
        fail_codes(kit, "alice", 5)
        await kit.settle()
        failed = kit.outcomes("alert.failed")
        assert sorted(dict(e.details)["destination"] for e in failed) == ["email", "webhook"]
        webhook = next(e for e in failed if dict(e.details)["destination"] == "webhook")
        assert dict(webhook.details)["detail"] == "connection failed (ClientConnectorError)"
        assert dict(webhook.details)["attempts"] == 3
        assert SECRET not in repr(failed)
        # Nobody heard it, so the dedup mark is gone: the next window's burst tries again.
        await kit.backend.advance(600)
        fail_codes(kit, "alice", 5)
        await kit.settle()
        assert len(kit.outcomes("alert.failed")) == 4


async def test_recording_never_waits_for_a_slow_webhook(kit: Kit) -> None:
    kit.hook.hold = asyncio.Event()
    rules = kit.start()
    fail_codes(kit, "alice", 5)  # returns at once: the listener only schedules
    await asyncio.wait_for(kit.hook.arrived.wait(), 5)
    fail_codes(kit, "bob", 2)  # the trail goes on while the webhook is still answering
    assert kit.hook.received == []
    kit.hook.hold.set()
    await rules.settle()
    assert [a["subject"] for a in kit.hook.received] == ["alice"]


async def test_events_beyond_the_in_flight_cap_are_dropped_with_a_log_line(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    kit.start(max_in_flight=2)
    with caplog.at_level(logging.WARNING, logger="gateway.alerts"):
        fail_codes(kit, "alice", 5)  # no await between: 2 are taken, 3 dropped
        await kit.settle()
    assert kit.hook.attempts == 0
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.alerts"] == [
        "alert rules busy (2 events being counted): 1 dropped so far"
    ]


async def test_close_waits_for_a_delivery_under_way(kit: Kit) -> None:
    kit.hook.hold = asyncio.Event()
    rules = kit.start()
    fail_codes(kit, "alice", 5)
    await asyncio.wait_for(kit.hook.arrived.wait(), 5)
    asyncio.get_running_loop().call_soon(kit.hook.hold.set)
    await rules.close()
    assert [a["subject"] for a in kit.hook.received] == ["alice"]
    fail_codes(kit, "bob", 5)  # closed: no longer listening
    await asyncio.sleep(0)
    assert len(kit.hook.received) == 1


async def test_a_shared_store_that_is_down_costs_one_log_line_not_a_request(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: Redis is "down"
        down = RedisSharedStore(f"redis://127.0.0.1:{sock.getsockname()[1]}/0")
        try:
            kit.worker(kit.trail, down)
            with caplog.at_level(logging.WARNING, logger="gateway.alerts"):
                fail_codes(kit, "alice", 6)  # recording goes on: nothing raises here
                await kit.settle()
        finally:
            await down.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.alerts"]
    assert len(lines) == 1  # once a minute, not once per event
    assert lines[0].startswith("challenge.failed not counted for alerts: redis: ")
    assert kit.hook.attempts == 0
    assert len(kit.recorded) == 6


async def test_without_a_destination_nothing_is_counted(kit: Kit) -> None:
    kit.start(Alerts())
    fail_codes(kit, "alice", 10)
    await kit.settle()
    assert kit.hook.attempts == 0
    if kit.backend.kind == "memory":
        assert isinstance(kit.backend.store, MemorySharedStore)
        assert len(kit.backend.store) == 0


async def test_a_switched_off_rule_raises_nothing(kit: Kit) -> None:
    kit.start(replace(kit.config, rules=replace(RULES, failed_codes=None)))
    fail_codes(kit, "alice", 5)
    await kit.settle()
    assert kit.hook.attempts == 0


# ---------------------------------------------------------------- IP denials


async def test_ip_denials_from_several_addresses_raise_one_alert_naming_them(kit: Kit) -> None:
    kit.start()
    for ip in ("198.51.100.4", "203.0.113.9", "198.51.100.4", "2001:db8::1"):
        kit.record("ip.denied", "denied", ip=ip, reason="ip_not_allowed", path="/crm/")
    await kit.settle()
    assert kit.hook.received == []  # 4 of 5
    kit.record("ip.denied", "denied", ip="198.51.100.4", user="dave", reason="ip_denied")
    await kit.settle()
    kit.record("ip.denied", "denied", ip="192.0.2.200", reason="ip_not_allowed")  # past it
    await kit.settle()

    [alert] = kit.hook.received
    assert (alert["rule"], alert["subject"], alert["user"], alert["count"]) == (
        "ip_denied",
        "all addresses",
        "",
        5,
    )
    assert alert["summary"] == "5 requests refused by the IP rules within 5m, from 3 addresses"
    assert alert["addresses"] == [
        {"ip": "198.51.100.4", "count": 3},
        {"ip": "2001:db8::1", "count": 1},
        {"ip": "203.0.113.9", "count": 1},
    ]
    assert alert["address_total"] == 3
    assert [e["ip"] for e in alert["events"]][-1] == "198.51.100.4"
    text = read_mail(kit.mails.received[0]).get_content()
    assert "  198.51.100.4  3" in text


async def test_ip_denials_counted_by_two_workers_raise_one_alert(kit: Kit) -> None:
    trails = [kit.trail, AuditTrail(None, kit.clock, output="")]
    kit.worker(trails[0], kit.backend.store)
    kit.worker(trails[1], kit.backend.another())
    for n in range(9):
        trails[n % 2].record("ip.denied", "denied", ip=f"203.0.113.{n % 3}", reason="ip_denied")
    await kit.settle()
    [alert] = kit.hook.received
    assert alert["address_total"] == 3
    # Each address is noted before its event is counted: one counted after the alert's may
    # show in its address's count, none counted before it is missing.
    assert sum(a["count"] for a in alert["addresses"]) >= 5


# ---------------------------------------------------------------- new networks


async def test_new_network_first_sign_in_is_the_baseline_and_only_another_network_alerts(
    kit: Kit,
) -> None:
    kit.start()
    kit.record("signin.crm_ok", "ok", user="alice", ip="192.0.2.10", path="/login")
    await kit.settle()
    await kit.backend.advance(3600)
    kit.record("signin.crm_ok", "ok", user="alice", ip="192.0.2.77", path="/login")  # same /24
    kit.record("signin.password_ok", "ok", user="bob", ip="198.51.100.5")  # bob's first
    await kit.settle()
    assert kit.hook.received == []

    await kit.backend.advance(3600)
    kit.record("signin.password_ok", "ok", user="alice", ip="198.51.100.5", path="/login")
    await kit.settle()
    [alert] = kit.hook.received
    assert (alert["rule"], alert["subject"], alert["user"], alert["count"]) == (
        "new_network",
        "alice",
        "alice",
        1,
    )
    assert alert["summary"] == "alice signed in from a new network 198.51.100.0/24"
    assert (alert["network"], alert["known_networks"]) == ("198.51.100.0/24", ["192.0.2.0/24"])
    assert [e["ip"] for e in alert["events"]] == ["198.51.100.5"]

    kit.record("signin.crm_ok", "ok", user="alice", ip="198.51.100.200")  # known now
    await kit.settle()
    assert len(kit.hook.received) == 1
    networks = [n for n, _, _ in await kit.durable.networks("alice")]
    assert networks == ["192.0.2.0/24", "198.51.100.0/24"]


async def test_a_second_new_network_soon_after_the_first_alerts_too(kit: Kit) -> None:
    kit.start()
    for ip in ("192.0.2.10", "198.51.100.5", "203.0.113.5"):
        kit.record("signin.crm_ok", "ok", user="alice", ip=ip)
        await kit.settle()
    assert [a["network"] for a in kit.hook.received] == ["198.51.100.0/24", "203.0.113.0/24"]


async def test_new_network_compares_ipv6_by_64_and_mapped_ipv4_as_ipv4(kit: Kit) -> None:
    kit.start()
    for ip in ("2001:db8:1:2::1", "2001:db8:1:2:aaaa::ffff", "::ffff:192.0.2.9", "192.0.2.10"):
        kit.record("signin.crm_ok", "ok", user="erin", ip=ip)
        await kit.settle()
    # The IPv6 /64 first (baseline), then one new network: 192.0.2.0/24, written once.
    assert [a["network"] for a in kit.hook.received] == ["192.0.2.0/24"]


async def test_new_network_after_a_prefix_change_starts_a_new_baseline(kit: Kit) -> None:
    kit.start()
    kit.record("signin.crm_ok", "ok", user="alice", ip="192.0.2.10")
    await kit.settle()
    wider = replace(RULES, new_network=NewNetwork(ipv4_prefix=16))
    kit.start(replace(kit.config, rules=wider))
    kit.record("signin.crm_ok", "ok", user="alice", ip="192.0.2.10")
    await kit.settle()
    # Two listeners now (the old rules also see it, but the /24 is known to them).
    assert kit.hook.received == []


# ---------------------------------------------------------------- SMS volume


async def test_sms_volume_across_users_raises_one_alert(kit: Kit) -> None:
    kit.start()
    for n in range(5):
        kit.record("code.sent", "ok", user=f"user{n}", reason="sms")
    kit.record("code.sent", "ok", user="zoe", reason="email")  # e-mail codes cost nothing
    kit.record("code.send_failed", "failed", user="zoe", reason="sms")  # not sent
    await kit.settle()
    assert kit.hook.received == []
    kit.record("code.sent", "unknown", user="user9", reason="sms")  # perhaps sent: charged
    kit.record("code.sent", "ok", user="user10", reason="sms")
    await kit.settle()
    [alert] = kit.hook.received
    assert (alert["rule"], alert["subject"], alert["user"], alert["count"]) == (
        "sms_volume",
        "all users",
        "",
        6,
    )
    assert alert["summary"] == "6 SMS codes sent within 1h"
    assert len(alert["events"]) == 6


async def test_sms_to_one_user_beyond_per_user_raises_an_alert_about_them(kit: Kit) -> None:
    kit.start()
    for _ in range(3):
        kit.record("code.sent", "ok", user="mallory", reason="sms")
    kit.record("code.sent", "ok", user="alice", reason="sms")
    await kit.settle()
    [alert] = kit.hook.received
    assert (alert["subject"], alert["user"], alert["count"]) == ("mallory", "mallory", 3)
    assert alert["summary"] == "3 SMS codes sent to mallory within 1h"


# ---------------------------------------------------------------- what an alert carries


async def test_an_alert_carries_no_secret_and_mails_are_one_line_subjects(kit: Kit) -> None:
    kit.start()
    fail_codes(kit, "eve\r\nBcc: everyone@example.org", 5)  # a name with a line break
    await kit.settle()
    [body] = kit.hook.bodies
    assert SECRET.encode() not in body
    assert b"sha256=" not in body
    subjects = mailed_subjects(kit)
    assert (
        subjects
        == ["[crm-gateway] 5 failed codes for eve Bcc: everyone@example.org within 10m"] * 2
    )
    assert sorted(r.envelope.rcpt_tos[0] for r in kit.mails.received) == sorted(IT)


def test_network_of_masks_to_the_configured_sizes() -> None:
    rule = NewNetwork(ipv4_prefix=24, ipv6_prefix=48)
    assert network_of("192.0.2.77", rule) == "192.0.2.0/24"
    assert network_of("::ffff:192.0.2.77", rule) == "192.0.2.0/24"
    assert network_of("2001:db8:1:2::1", rule) == "2001:db8:1::/48"
    assert network_of("fe80::1%eth0", rule) == "fe80::/48"
    assert network_of("", rule) is None
    assert network_of("not-an-address", rule) is None


def test_durations_are_written_as_in_gateway_yaml() -> None:
    # Alert summaries and mails write windows with the policy's interval format.
    assert [format_interval(s) for s in (600, 3600, 86400, 90, 5400, 0.5)] == [
        "10m",
        "1h",
        "1d",
        "90s",
        "90m",
        "0.5s",
    ]


def test_signature_is_hmac_sha256_of_the_body() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    assert signature("Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
