"""An alert as a value, and the two ways it is written: the webhook's JSON (with its HMAC
signature) and the e-mail's subject and plain text. No I/O; nothing here reads the time.

An alert carries names, addresses, counts and audit events, never a code, secret, password,
cookie or token: audit events cannot hold one (gateway.model.AuditEvent refuses such keys).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from gateway.audit import event_json, utc_text
from gateway.model import AuditEvent, format_interval

SUBJECT_LIMIT = 150  # characters of a summary in a mail subject


@dataclass(frozen=True)
class Alert:
    id: str  # random; receivers may use it to drop a delivery they have seen
    rule: str  # "failed_codes", "failed_passwords", "ip_denied", "new_network", "sms_volume"
    subject: str  # what it is about: a user name, "all addresses", "all users"
    summary: str  # one line for a person
    count: int  # events counted (1 for new_network)
    window: float  # seconds they were counted over (0 for new_network)
    raised: float
    events: tuple[AuditEvent, ...]  # a sample, oldest first; the last one raised the alert
    user: str = ""  # the user it is about, when it is about one
    addresses: tuple[tuple[str, int], ...] = ()  # ip_denied: (address, refusals), most first
    address_total: int = 0  # ip_denied: distinct addresses, listed or not
    network: str = ""  # new_network: the network signed in from
    known_networks: tuple[str, ...] = ()  # new_network: the user's earlier networks, newest last

    @property
    def first(self) -> float:
        return min((e.time for e in self.events), default=self.raised)

    @property
    def last(self) -> float:
        return max((e.time for e in self.events), default=self.raised)


def alert_json(alert: Alert, gateway: str) -> dict[str, Any]:
    """The webhook body; `gateway` names the host that sent it (several may share a Redis)."""
    body: dict[str, Any] = {
        "alert": alert.id,
        "rule": alert.rule,
        "subject": alert.subject,
        "summary": alert.summary,
        "user": alert.user,
        "count": alert.count,
        "window": alert.window,
        "first_event": utc_text(alert.first),
        "last_event": utc_text(alert.last),
        "raised": utc_text(alert.raised),
        "gateway": gateway,
    }
    if alert.rule == "ip_denied":
        body["addresses"] = [{"ip": ip, "count": count} for ip, count in alert.addresses]
        body["address_total"] = alert.address_total
    if alert.network:
        body["network"] = alert.network
        body["known_networks"] = list(alert.known_networks)
    body["events"] = [event_json(event) for event in alert.events]
    return body


def signature(secret: str, body: bytes) -> str:
    """The X-Gateway-Signature value: `sha256=` and the hex HMAC-SHA256 of the exact body.
    A receiver recomputes it over the bytes it read and compares with hmac.compare_digest."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _one_line(text: str, limit: int) -> str:
    # A user name typed into a login form may hold a line break: never in a mail header.
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _event_line(event: AuditEvent) -> str:
    parts = [utc_text(event.time), event.name, event.outcome]
    parts += [
        f"{name}={value}"
        for name, value in (
            ("user", event.user),
            ("ip", event.ip),
            ("reason", event.reason),
            ("path", event.path),
        )
        if value
    ]
    parts += [f"{key}={value}" for key, value in event.details]
    return "  ".join(_one_line(part, 200) for part in parts)


def mail_text(alert: Alert, gateway: str) -> tuple[str, str]:
    """(subject, plain-text body) of the alert e-mail."""
    subject = "[crm-gateway] " + _one_line(alert.summary, SUBJECT_LIMIT)
    window = f" within {format_interval(alert.window)}" if alert.window else ""
    lines = [
        f"{alert.summary}.",
        "",
        f"Rule:      {alert.rule}",
        f"Subject:   {_one_line(alert.subject, 200)}",
        f"Count:     {alert.count}{window}",
        f"First:     {utc_text(alert.first)}",
        f"Last:      {utc_text(alert.last)}",
        f"Gateway:   {gateway}",
        f"Alert id:  {alert.id}",
    ]
    if alert.network:
        lines.append(f"Network:   {alert.network}")
        known = ", ".join(alert.known_networks) or "none"
        lines.append(f"Known:     {known}")
    if alert.addresses:
        lines += ["", f"Addresses ({alert.address_total} in all, most refused first):"]
        lines += [f"  {ip}  {count}" for ip, count in alert.addresses]
    lines += ["", "Events (a sample, oldest first):"]
    lines += [f"  {_event_line(event)}" for event in alert.events]
    lines += ["", "Search the audit trail for more: crm-gateway audit search --help"]
    return subject, "\n".join(lines) + "\n"
