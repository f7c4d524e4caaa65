"""The `alerts` part of gateway.yaml: which activity raises an alert, and where alerts go.
Parsed into frozen values with every problem collected (file, line, key), like the other
sections (gateway.config.load calls `read_alerts`). Knows nothing about counting or sending
(gateway.alerts does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# The e-mail provider is read exactly as `email.provider` is for codes: one set of rules.
from gateway.config.messaging import Messaging, OutboxProvider, SmtpProvider, read_provider
from gateway.config.yaml_reader import Value

_ADDRESS = re.compile(r"^[^\s@<>,;\"]+@[^\s@<>,;\"]+$")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
RULE_NAMES = (
    "failed_codes",
    "failed_passwords",
    "ip_denied",
    "new_network",
    "policy_held",
    "sms_volume",
)


@dataclass(frozen=True)
class Threshold:
    """`count` events within `within` seconds (fixed windows: see gateway.alerts)."""

    count: int
    within: float


@dataclass(frozen=True)
class NewNetwork:
    """Addresses are compared as networks of these sizes, so a new DHCP lease or IPv6
    privacy address in the same office or home network is not "new"."""

    ipv4_prefix: int = 24
    ipv6_prefix: int = 64


@dataclass(frozen=True)
class SmsVolume:
    count: int = 100  # SMS codes to all users together
    within: float = 3600.0
    per_user: int = 0  # SMS codes to one user within `within`; 0 = not watched


FAILED_CODES = Threshold(5, 600.0)
FAILED_PASSWORDS = Threshold(10, 3600.0)  # per user, from every address together
POLICY_HELD = Threshold(1, 3600.0)  # a policy change the file watcher held back
IP_DENIED = Threshold(50, 300.0)


@dataclass(frozen=True)
class Rules:
    """Each rule, or None when it is switched off. Every rule is on by default."""

    failed_codes: Threshold | None = FAILED_CODES  # per user
    failed_passwords: Threshold | None = FAILED_PASSWORDS  # per user, any address
    ip_denied: Threshold | None = IP_DENIED  # all addresses together
    new_network: NewNetwork | None = NewNetwork()
    policy_held: Threshold | None = POLICY_HELD
    sms_volume: SmsVolume | None = SmsVolume()

    @property
    def any_on(self) -> bool:
        return any(
            rule is not None
            for rule in (
                self.failed_codes,
                self.failed_passwords,
                self.ip_denied,
                self.new_network,
                self.policy_held,
                self.sms_volume,
            )
        )


@dataclass(frozen=True)
class Webhook:
    url: str = field(repr=False)  # chat webhooks carry their key in the path
    secret: str = field(default="", repr=False)  # HMAC-SHA256 key for X-Gateway-Signature
    timeout: float = 5.0  # per attempt
    retries: int = 2


@dataclass(frozen=True)
class AlertMail:
    to: tuple[str, ...]
    provider: SmtpProvider | OutboxProvider


@dataclass(frozen=True)
class Alerts:
    """No destination (the default, with no `alerts` section) means no alerts at all."""

    dedup: float = 1800.0  # one alert per rule and subject within this many seconds
    webhook: Webhook | None = None
    email: AlertMail | None = None
    rules: Rules = field(default_factory=Rules)

    @property
    def active(self) -> bool:
        return (self.webhook is not None or self.email is not None) and self.rules.any_on


def _get_int(keys: dict[str, Value], name: str, default: int, low: int, high: int) -> int:
    found = keys[name].integer(minimum=low, maximum=high) if name in keys else None
    return default if found is None else found


def _get_seconds(keys: dict[str, Value], name: str, default: float, minimum: float) -> float:
    found = keys[name].duration(minimum=minimum) if name in keys else None
    return default if found is None else found


def _rule_keys(value: Value, allowed: set[str]) -> dict[str, Value] | None:
    """The keys of a rule; None when it is switched off (`rule: false` or `enabled: false`).
    `rule: true` keeps every default."""
    if value.node.tag.endswith(":bool"):
        return {} if value.boolean() else None
    keys = value.mapping(allowed | {"enabled"})
    if keys is None:
        return {}  # reported; the defaults stand in so later checks still run
    if "enabled" in keys and keys["enabled"].boolean() is False:
        return None
    return keys


def _threshold(value: Value, default: Threshold) -> Threshold | None:
    keys = _rule_keys(value, {"count", "within"})
    if keys is None:
        return None
    return Threshold(
        count=_get_int(keys, "count", default.count, 1, 1_000_000),
        within=_get_seconds(keys, "within", default.within, 1.0),
    )


def _new_network(value: Value) -> NewNetwork | None:
    keys = _rule_keys(value, {"ipv4_prefix", "ipv6_prefix"})
    if keys is None:
        return None
    default = NewNetwork()
    return NewNetwork(
        ipv4_prefix=_get_int(keys, "ipv4_prefix", default.ipv4_prefix, 8, 32),
        ipv6_prefix=_get_int(keys, "ipv6_prefix", default.ipv6_prefix, 16, 128),
    )


def _sms_volume(value: Value) -> SmsVolume | None:
    keys = _rule_keys(value, {"count", "within", "per_user"})
    if keys is None:
        return None
    default = SmsVolume()
    return SmsVolume(
        count=_get_int(keys, "count", default.count, 1, 1_000_000),
        within=_get_seconds(keys, "within", default.within, 1.0),
        per_user=_get_int(keys, "per_user", default.per_user, 0, 1_000_000),
    )


def _rules(value: Value) -> Rules:
    keys = value.mapping(set(RULE_NAMES))
    if keys is None:
        return Rules()
    default = Rules()
    return Rules(
        failed_codes=_threshold(keys["failed_codes"], FAILED_CODES)
        if "failed_codes" in keys
        else default.failed_codes,
        failed_passwords=_threshold(keys["failed_passwords"], FAILED_PASSWORDS)
        if "failed_passwords" in keys
        else default.failed_passwords,
        ip_denied=_threshold(keys["ip_denied"], IP_DENIED)
        if "ip_denied" in keys
        else default.ip_denied,
        new_network=_new_network(keys["new_network"])
        if "new_network" in keys
        else default.new_network,
        policy_held=_threshold(keys["policy_held"], POLICY_HELD)
        if "policy_held" in keys
        else default.policy_held,
        sms_volume=_sms_volume(keys["sms_volume"]) if "sms_volume" in keys else default.sms_volume,
    )


def _webhook(value: Value) -> Webhook | None:
    keys = value.mapping({"url", "secret", "timeout", "retries"})
    if keys is None:
        return None
    if "url" not in keys:
        value.fail("url: is required")
        return None
    url = keys["url"].secret(inline_ok=True)  # {env: NAME} when the path holds a key
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        keys["url"].fail("must be an http(s) URL")  # not quoted back: it may hold a key
        return None
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        keys["url"].warn("is plain http: alerts name users and addresses; prefer https")
    secret = keys["secret"].secret() if "secret" in keys else ""
    return Webhook(
        url=url,
        secret=secret or "",
        timeout=_get_seconds(keys, "timeout", 5.0, 0.1),
        retries=_get_int(keys, "retries", 2, 0, 5),
    )


def _recipients(value: Value) -> tuple[str, ...]:
    items = [value] if not value.node.tag.endswith(":seq") else value.sequence() or []
    found: list[str] = []
    for item in items:
        address = item.text()
        if address is None:
            continue
        if not _ADDRESS.match(address):
            item.fail(f"must be an e-mail address such as it@example.com but it's {address!r}")
            continue
        found.append(address)
    if not items:
        value.fail("must name at least one address")
    return tuple(found)


def _email(value: Value, messaging: Messaging) -> AlertMail | None:
    keys = value.mapping({"to", "provider"})
    if keys is None:
        return None
    if "to" not in keys:
        value.fail("to: is required")
    to = _recipients(keys["to"]) if "to" in keys else ()
    provider: SmtpProvider | OutboxProvider | None = None
    if "provider" in keys:
        found = read_provider(keys["provider"], ("smtp", "outbox"))
        if isinstance(found, SmtpProvider | OutboxProvider):
            provider = found
    elif messaging.email is not None and isinstance(
        messaging.email.provider, SmtpProvider | OutboxProvider
    ):
        provider = messaging.email.provider  # the codes' mail server serves alerts too
    else:
        value.fail("provider: is required (or configure email.provider for codes to share it)")
    if provider is None or not to:
        return None
    return AlertMail(to=to, provider=provider)


def read_alerts(keys: dict[str, Value], messaging: Messaging) -> Alerts:
    """The `alerts` section; `messaging` lends its e-mail provider when alerts name none."""
    if "alerts" not in keys:
        return Alerts()
    section = keys["alerts"]
    found = section.mapping({"dedup", "webhook", "email", "rules"})
    if found is None:
        return Alerts()
    dedup = _get_seconds(found, "dedup", 1800.0, 0.0)
    webhook = _webhook(found["webhook"]) if "webhook" in found else None
    email = _email(found["email"], messaging) if "email" in found else None
    rules = _rules(found["rules"]) if "rules" in found else Rules()
    if rules.any_on and "webhook" not in found and "email" not in found:
        section.fail("webhook or email: is required while a rule is on (or switch every rule off)")
    return Alerts(dedup=dedup, webhook=webhook, email=email, rules=rules)
