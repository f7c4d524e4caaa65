"""The alert rules: watch audit events, count them in the shared store so that every worker
counts together, and raise one alert per rule and subject within the dedup window. Listening
must never slow or break the request that recorded the event: the work runs in bounded tasks.

Counting uses fixed windows: `count` events within `within` means `count` events inside one
window of `within` seconds aligned to the epoch (10m: 08:00-08:10, 08:10-08:20, …). The worker
whose increment reaches exactly `count` raises the alert; a burst that straddles a boundary
is counted in two windows: at worst 2·(count-1) events in quick succession pass unnoticed.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import secrets
from collections.abc import Awaitable, Callable

from gateway.alerts.alert import Alert
from gateway.alerts.dispatch import Dispatcher
from gateway.alerts.windows import Windows, window_key
from gateway.audit import AuditTrail
from gateway.clock import Clock
from gateway.config.alerts import Alerts, NewNetwork, Threshold
from gateway.errors import StoreUnavailable
from gateway.model import AuditEvent, format_interval
from gateway.stores.protocols import DurableStore, SharedStore
from gateway.tasks import Background

log = logging.getLogger("gateway.alerts")

MAX_IN_FLIGHT = 256  # events being counted at once; more are dropped (and logged)
CLOSE_GRACE = 5.0  # seconds close() waits for deliveries under way
LOG_EVERY = 60.0  # seconds between two log lines about dropped work

Handler = Callable[[AuditEvent], Awaitable[None]]


def network_of(ip: str, rule: NewNetwork) -> str | None:
    """The network an address belongs to at the configured size ("192.0.2.0/24"), IPv4-mapped
    IPv6 addresses in their IPv4 form; None for anything that is not an address."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Network((int(address), rule.ipv4_prefix), strict=False))
    # int() drops a zone ("%eth0"): it names the gateway's interface, not the client's network.
    return str(ipaddress.IPv6Network((int(address), rule.ipv6_prefix), strict=False))


def _same_size(network: str, rule: NewNetwork) -> bool:
    """Written at the sizes configured now: after a prefix change the next sign-in of each
    user starts a new baseline instead of raising an alert."""
    try:
        found = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False
    return found.prefixlen == (rule.ipv4_prefix if found.version == 4 else rule.ipv6_prefix)


def _scope(user: str) -> str:
    # Hashed: a key stays short and plain whatever a user name holds.
    return "user:" + hashlib.sha256(user.encode()).hexdigest()[:32]


def _is_sms(event: AuditEvent) -> bool:
    return event.reason == "sms" or dict(event.details).get("channel") == "sms"


class AlertRules:
    def __init__(
        self,
        config: Alerts,
        shared: SharedStore,
        durable: DurableStore,
        clock: Clock,
        trail: AuditTrail,
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        backoff: float = 0.5,
        networks: NewNetwork | None = None,
    ) -> None:
        """Register `observe` in `trail.listeners`; `close()` on shutdown. With no destination
        or every rule off, `observe` returns at once and nothing is counted. `networks`: find
        new networks even without the alert (users are told of them: the event
        `signin.new_network`), compared at these sizes unless the alert rule says others."""
        self._config = config
        self._trail = trail
        self._shared = shared
        self._durable = durable
        self._clock = clock
        self._max_in_flight = max_in_flight
        self._windows = Windows(shared)
        self._dispatcher = Dispatcher(config, shared, clock, trail, backoff=backoff)
        self._counting = Background("alert counting")
        self._closing = False
        self._dropped = 0
        self._logged_at: dict[str, float] = {}
        self._watch: dict[str, Handler] = {}
        if config.active:
            rules = config.rules
            if rules.failed_codes is not None:
                self._watch["challenge.failed"] = self._failed_codes
                self._watch["enrol.failed"] = self._failed_codes
            if rules.failed_passwords is not None:
                self._watch["signin.crm_failed"] = self._failed_passwords
                self._watch["signin.password_failed"] = self._failed_passwords
            if rules.ip_denied is not None:
                self._watch["ip.denied"] = self._ip_denied
            if rules.new_network is not None:
                self._watch["signin.crm_ok"] = self._new_network
                self._watch["signin.password_ok"] = self._new_network
            if rules.policy_held is not None:
                self._watch["policy.reload_held"] = self._policy_held
            if rules.sms_volume is not None:
                self._watch["code.sent"] = self._sms_volume
        alerting = config.rules.new_network if config.active else None
        self._networks = alerting or networks
        if self._networks is not None:
            self._watch["signin.crm_ok"] = self._new_network
            self._watch["signin.password_ok"] = self._new_network

    # -- listening ---------------------------------------------------------------------------

    def observe(self, event: AuditEvent) -> None:
        """The trail listener: a dict lookup for most events; never raises, never waits."""
        handle = self._watch.get(event.name)
        if handle is None or self._closing:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # recorded outside the server (a CLI command): nothing to count with
        if len(self._counting) >= self._max_in_flight:
            self._drop(f"{len(self._counting)} events being counted")
            return
        self._counting.spawn(self._guarded(handle, event), name=f"alert rules: {event.name}")

    def _drop(self, why: str) -> None:
        self._dropped += 1
        if self._now_and_then("busy"):
            log.warning("alert rules busy (%s): %d dropped so far", why, self._dropped)

    def _now_and_then(self, kind: str) -> bool:
        """True at most once a minute for each kind: a flood or an outage is one line a
        minute in the log, not one per request."""
        now = self._clock.monotonic()
        if now - self._logged_at.get(kind, -math.inf) < LOG_EVERY:
            return False
        self._logged_at[kind] = now
        return True

    async def _guarded(self, handle: Handler, event: AuditEvent) -> None:
        try:
            await handle(event)
        except StoreUnavailable as exc:
            if self._now_and_then("store"):
                log.warning("%s not counted for alerts: %s", event.name, exc.detail)
        except Exception:
            if self._now_and_then("error"):
                log.exception("alert rules failed on %s", event.name)

    async def settle(self) -> None:
        """Return once every event observed so far is counted and its alert delivered."""
        while self._counting or self._dispatcher.sending:
            await asyncio.wait(self._counting.running | self._dispatcher.sending.running)

    async def close(self) -> None:
        """Stop listening; wait up to CLOSE_GRACE for work under way, then cancel the rest."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_GRACE
        # Counting first: it may still start deliveries, which are then waited for too.
        for tasks in (self._counting, self._dispatcher.sending):
            await tasks.close(grace=max(0.0, deadline - loop.time()))
        await self._dispatcher.close()

    # -- the rules -------------------------------------------------------------------------

    async def _failed_codes(self, event: AuditEvent) -> None:
        rule = self._config.rules.failed_codes
        if rule is None or not event.user:
            return
        user = event.user
        await self._threshold(
            "failed_codes",
            _scope(user),
            rule,
            event,
            subject=user,
            user=user,
            summary=f"{rule.count} failed codes for {user} within {format_interval(rule.within)}",
        )

    async def _failed_passwords(self, event: AuditEvent) -> None:
        """Wrong passwords for one account from every address together: guessing spread
        over many addresses shows here when no address's own count does."""
        rule = self._config.rules.failed_passwords
        if rule is None or not event.user:
            return
        user = event.user
        within = format_interval(rule.within)
        await self._threshold(
            "failed_passwords",
            _scope(user),
            rule,
            event,
            subject=user,
            user=user,
            summary=f"{rule.count} wrong passwords for {user} within {within}",
        )

    async def _policy_held(self, event: AuditEvent) -> None:
        """A policy change the file watcher held back: someone should look at once (a file
        half written, or a change that opens much more than meant)."""
        rule = self._config.rules.policy_held
        if rule is None:
            return
        await self._threshold(
            "policy_held",
            "all",
            rule,
            event,
            subject="policy",
            summary=f"a policy change was held back: {event.reason}",
        )

    async def _sms_volume(self, event: AuditEvent) -> None:
        rule = self._config.rules.sms_volume
        if rule is None or not _is_sms(event):
            return
        within = format_interval(rule.within)
        await self._threshold(
            "sms_volume",
            "all",
            Threshold(rule.count, rule.within),
            event,
            subject="all users",
            summary=f"{rule.count} SMS codes sent within {within}",
        )
        if rule.per_user and event.user:
            await self._threshold(
                "sms_volume",
                _scope(event.user),
                Threshold(rule.per_user, rule.within),
                event,
                subject=event.user,
                user=event.user,
                summary=f"{rule.per_user} SMS codes sent to {event.user} within {within}",
            )

    async def _ip_denied(self, event: AuditEvent) -> None:
        rule = self._config.rules.ip_denied
        if rule is None:
            return
        key = window_key("ip_denied", "all", rule, event)
        if await self._windows.count(key) >= rule.count:
            await self._windows.tally(key, rule, event)
            return  # raised already in this window: no more bookkeeping until the next
        # The address is noted before the event is counted: the worker whose count raises the
        # alert then lists every address counted so far, another worker's in-flight one too.
        if event.ip:
            await self._windows.note_address(key, event.ip, rule.within)
        count = await self._windows.tally(key, rule, event)
        if count != rule.count:
            return
        addresses, total = await self._windows.addresses(key)
        within = format_interval(rule.within)
        await self._dispatcher.dispatch(
            Alert(
                id=secrets.token_hex(8),
                rule="ip_denied",
                subject="all addresses",
                summary=f"{count} requests refused by the IP rules within {within}, "
                f"from {total} address{'' if total == 1 else 'es'}",
                count=count,
                window=rule.within,
                raised=self._clock.now(),
                events=await self._windows.samples(key, count, event),
                addresses=addresses,
                address_total=total,
            ),
            dedup="ip_denied:all",
        )

    async def _new_network(self, event: AuditEvent) -> None:
        rule = self._networks
        if rule is None or not event.user:
            return
        network = network_of(event.ip, rule)
        if network is None:
            return
        if not await self._durable.note_network(event.user, network, event.time):
            return  # known: note_network is true for exactly one sign-in per network
        known = [
            found
            for found, _, _ in await self._durable.networks(event.user)
            if found != network and _same_size(found, rule)
        ]
        if not known:
            return  # the user's first network is the baseline, not an alert
        self._trail.record(
            "signin.new_network",
            "ok",
            user=event.user,
            ip=event.ip,
            user_agent=event.user_agent,
            request_id=event.request_id,
            network=network,
            lang=str(dict(event.details).get("lang", "")),
        )
        if not (self._config.active and self._config.rules.new_network is not None):
            return  # found for the user's notice only: no alert configured
        await self._dispatcher.dispatch(
            Alert(
                id=secrets.token_hex(8),
                rule="new_network",
                subject=event.user,
                summary=f"{event.user} signed in from a new network {network}",
                count=1,
                window=0.0,
                raised=self._clock.now(),
                events=(event,),
                user=event.user,
                network=network,
                known_networks=tuple(known[-10:]),
            ),
            # Per network, not per user: a second new network soon after the first is the
            # one most worth seeing.
            dedup=f"new_network:{_scope(event.user)}:{network}",
        )

    async def _threshold(
        self,
        rule: str,
        scope: str,
        threshold: Threshold,
        event: AuditEvent,
        *,
        subject: str,
        summary: str,
        user: str = "",
    ) -> None:
        key = window_key(rule, scope, threshold, event)
        count = await self._windows.tally(key, threshold, event)
        if count != threshold.count:
            return  # one increment in each window reaches the count exactly: one alert
        await self._dispatcher.dispatch(
            Alert(
                id=secrets.token_hex(8),
                rule=rule,
                subject=subject,
                summary=summary,
                count=count,
                window=threshold.within,
                raised=self._clock.now(),
                events=await self._windows.samples(key, count, event),
                user=user,
            ),
            dedup=f"{rule}:{scope}",
        )
