"""The `sms`, `email` and `codes` parts of gateway.yaml: which provider sends codes, what a
message costs, its texts, and the limits on codes. Parsed with every problem collected, like
the other sections (gateway.config.load calls `read_messaging`); secrets as `{env: NAME}`
or `{file: PATH}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from gateway.config.yaml_reader import Value

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_HEADER = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
LANGUAGE_KEYS = ("en", "nl", "nb", "de", "fr", "ru")


@dataclass(frozen=True)
class HttpProvider:
    """Any SMS gateway with an HTTP API: `{to}` and `{text}` are filled into the body."""

    url: str
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold API keys
    body: str = '{"to": "{to}", "text": "{text}"}'
    format: str = "json"  # "json" (values JSON-escaped) or "form" (values URL-encoded)
    success_status: tuple[int, ...] = (200, 201, 202)
    timeout: float = 10.0
    retries: int = 2


@dataclass(frozen=True)
class TwilioProvider:
    account_sid: str
    auth_token: str = field(repr=False)
    sender: str  # the `From` number or messaging service
    base_url: str = "https://api.twilio.com"
    timeout: float = 10.0
    retries: int = 2


@dataclass(frozen=True)
class SmtpProvider:
    host: str
    port: int = 587
    security: str = "starttls"  # "starttls", "tls" or "none"
    username: str = ""
    password: str = field(default="", repr=False)
    sender: str = ""  # the From address
    timeout: float = 10.0
    retries: int = 2


@dataclass(frozen=True)
class OutboxProvider:
    """Messages appended as JSON lines to a file: the demo, development and tests."""

    path: str


Provider = HttpProvider | TwilioProvider | SmtpProvider | OutboxProvider


@dataclass(frozen=True)
class Channel:
    provider: Provider
    cost: Decimal = Decimal(0)  # per message (SMS)
    currency: str = "EUR"
    texts: dict[str, str] = field(default_factory=dict)  # language → template with {code}
    subjects: dict[str, str] = field(default_factory=dict)  # e-mail only


@dataclass(frozen=True)
class Codes:
    length: int = 6
    ttl: float = 300.0
    attempts: int = 5  # wrong entries of one code before it is void
    resend_cooldown: float = 60.0
    hourly_cap: int = 5  # messages per user per hour
    ip_hourly_cap: int = 20  # messages per client address per hour


# What a user is told about their own account, by e-mail (else SMS) in their language, with
# when, from where and in which browser: each kind can be turned off under `notices:`.
NOTICES = frozenset(
    {
        "factor_added",  # an authenticator app or a passkey added
        "factor_removed",
        "recovery_used",  # a recovery code let someone in
        "codes_regenerated",  # new recovery codes (the old ones stop working)
        "new_network",  # a password accepted from a network the user never signed in from
        "reset_by_admin",  # IT reset two-step verification (`users reset-2fa`)
    }
)


@dataclass(frozen=True)
class Messaging:
    sms: Channel | None = None
    email: Channel | None = None
    codes: Codes = field(default_factory=Codes)
    notices: frozenset[str] = NOTICES  # the kinds of account notice users are sent


def _seconds(keys: dict[str, Value], name: str, default: float) -> float:
    found = keys[name].duration(minimum=0.1) if name in keys else None
    return default if found is None else found


def _number(keys: dict[str, Value], name: str, default: int, low: int, high: int) -> int:
    found = keys[name].integer(minimum=low, maximum=high) if name in keys else None
    return default if found is None else found


def _text(keys: dict[str, Value], name: str, default: str = "") -> str:
    found = keys[name].text() if name in keys else None
    return default if found is None else found


def _secret(keys: dict[str, Value], name: str) -> str:
    found = keys[name].secret() if name in keys else None
    return found or ""


def _required(value: Value, keys: dict[str, Value], *names: str) -> bool:
    missing = [n for n in names if n not in keys]
    for name in missing:
        value.fail(f"{name}: is required")
    return not missing


def read_provider(value: Value, kinds: tuple[str, ...]) -> Provider | None:
    keys = value.mapping()
    if keys is None:
        return None
    kind = value.kind(keys, kinds)
    allowed = {
        "outbox": {"type", "path"},
        "http": {"type", "url", "method", "headers", "body", "format", "success_status"},
        "twilio": {"type", "account_sid", "auth_token", "from", "base_url"},
        "smtp": {"type", "host", "port", "security", "username", "password", "from"},
    }
    if kind is None:
        return None
    keys = value.mapping(allowed[kind] | {"timeout", "retries"})
    if keys is None:
        return None
    timeout = _seconds(keys, "timeout", 10.0)
    retries = _number(keys, "retries", 2, 0, 5)
    if kind == "outbox":
        if not _required(value, keys, "path"):
            return None
        path = keys["path"].file_path()  # relative to the config file, as every path
        return None if path is None else OutboxProvider(path)
    if kind == "http":
        if not _required(value, keys, "url"):
            return None
        url = _text(keys, "url")
        if not url.startswith(("http://", "https://")):
            keys["url"].fail(f"must be an http(s) URL but it's {url!r}")
        headers: list[tuple[str, str]] = []
        for name, header in keys["headers"].items() if "headers" in keys else []:
            if not _HEADER.match(name):
                header.fail(f"must be a header name but it's {name!r}")
                continue
            secret = header.secret(inline_ok=True)
            headers.append((name, secret or ""))
        statuses = (
            tuple(
                s
                for s in (
                    i.integer(minimum=200, maximum=299)
                    for i in keys["success_status"].sequence() or []
                )
                if s is not None
            )
            if "success_status" in keys
            else (200, 201, 202)
        )
        body = _text(keys, "body", HttpProvider.body)
        return HttpProvider(
            url=url,
            method=(keys["method"].choice(("POST", "PUT", "GET")) or "POST")
            if "method" in keys
            else "POST",
            headers=tuple(headers),
            body=body,
            format=(keys["format"].choice(("json", "form")) or "json")
            if "format" in keys
            else "json",
            success_status=statuses or (200, 201, 202),
            timeout=timeout,
            retries=retries,
        )
    if kind == "twilio":
        if not _required(value, keys, "account_sid", "auth_token", "from"):
            return None
        return TwilioProvider(
            account_sid=_text(keys, "account_sid"),
            auth_token=_secret(keys, "auth_token"),
            sender=_text(keys, "from"),
            base_url=_text(keys, "base_url", TwilioProvider.base_url).rstrip("/"),
            timeout=timeout,
            retries=retries,
        )
    if not _required(value, keys, "host", "from"):
        return None
    security = (
        (keys["security"].choice(("starttls", "tls", "none")) or "starttls")
        if "security" in keys
        else "starttls"
    )
    return SmtpProvider(
        host=_text(keys, "host"),
        port=_number(keys, "port", 465 if security == "tls" else 587, 1, 65535),
        security=security,
        username=_text(keys, "username"),
        password=_secret(keys, "password"),
        sender=_text(keys, "from"),
        timeout=timeout,
        retries=retries,
    )


def _templates(value: Value, placeholder: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for lang, text in value.items():
        if lang not in LANGUAGE_KEYS:
            text.fail(f"must be one of the page languages {', '.join(LANGUAGE_KEYS)}")
            continue
        template = text.text()
        if template is None:
            continue
        if placeholder and placeholder not in template:
            text.fail(f"must contain {placeholder}")
            continue
        found[lang] = template
    return found


def _channel(value: Value, kinds: tuple[str, ...], *, email: bool) -> Channel | None:
    allowed = {"provider", "text"} | ({"subject"} if email else {"cost"})
    keys = value.mapping(allowed)
    if keys is None:
        return None
    if "provider" not in keys:
        value.fail("provider: is required")
        return None
    provider = read_provider(keys["provider"], kinds)
    if provider is None:
        return None
    cost, currency = Decimal(0), "EUR"
    if "cost" in keys:
        spec = keys["cost"].mapping({"per_message", "currency"}) or {}
        raw = spec["per_message"].text() if "per_message" in spec else "0"
        try:
            cost = Decimal(str(raw))
            if not cost.is_finite() or cost < 0 or cost > 1000:
                raise InvalidOperation
        except InvalidOperation:
            spec["per_message"].fail(f"must be an amount such as 0.10 but it's {raw!r}")
        currency = _text(spec, "currency", "EUR")
        if not _CURRENCY.match(currency):
            spec["currency"].fail(f"must be a currency code such as EUR but it's {currency!r}")
    texts = _templates(keys["text"], "{code}") if "text" in keys else {}
    subjects = _templates(keys["subject"], "") if "subject" in keys else {}
    return Channel(provider, cost, currency, texts, subjects)


def _codes(value: Value) -> Codes:
    keys = value.mapping(
        {"length", "ttl", "attempts", "resend_cooldown", "hourly_cap", "ip_hourly_cap"}
    )
    if keys is None:
        return Codes()
    default = Codes()
    return Codes(
        length=_number(keys, "length", default.length, 6, 10),
        ttl=_seconds(keys, "ttl", default.ttl),
        attempts=_number(keys, "attempts", default.attempts, 1, 20),
        resend_cooldown=_seconds(keys, "resend_cooldown", default.resend_cooldown),
        hourly_cap=_number(keys, "hourly_cap", default.hourly_cap, 1, 1000),
        ip_hourly_cap=_number(keys, "ip_hourly_cap", default.ip_hourly_cap, 1, 100000),
    )


def read_messaging(keys: dict[str, Value]) -> Messaging:
    sms = (
        _channel(keys["sms"], ("outbox", "http", "twilio"), email=False) if "sms" in keys else None
    )
    email = _channel(keys["email"], ("outbox", "smtp"), email=True) if "email" in keys else None
    codes = _codes(keys["codes"]) if "codes" in keys else Codes()
    notices = _notices(keys["notices"]) if "notices" in keys else NOTICES
    return Messaging(sms=sms, email=email, codes=codes, notices=notices)


def _notices(value: Value) -> frozenset[str]:
    """`notices: {recovery_used: off, …}`: each kind on (the default) or off."""
    keys = value.mapping(NOTICES)
    if keys is None:
        return NOTICES
    off = {name for name, said in keys.items() if said.boolean() is False}
    return NOTICES - off
