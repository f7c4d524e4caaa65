"""What the operations tooling exposes (Prometheus): defined once, here, and updated by the
code that knows what happened. Exposition is the admin listener's job
(gateway.web.server.AdminListener).

Label values are small closed sets (decisions, reasons, factors, operations): never a user,
an address or a path, which would grow without bound.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple

from prometheus_client import Counter, Histogram

# Seconds: from well under a millisecond (a refusal) to a slow CRM page.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)

REQUESTS = Counter(
    "crm_gateway_requests",
    "Requests answered, by the gateway's decision (forward, deny, signin, page, refused, error, "
    "upstream_cut, gone, …)",
    ["decision"],
)
REQUEST_SECONDS = Histogram(
    "crm_gateway_request_duration_seconds",
    "Time from the request's arrival to its response headers, by decision",
    ["decision"],
    buckets=_LATENCY_BUCKETS,
)
CHALLENGES = Counter(
    "crm_gateway_challenges",
    "Second-factor checks, by factor (totp, recovery, sms, email, webauthn) and result",
    ["factor", "result"],
)
PASSKEYS = Counter(
    "crm_gateway_passkeys",
    "Passkeys and security keys added and removed, by operation (register, remove) and result "
    '(ok, or the refusal); their use at sign-in is crm_gateway_challenges{factor="webauthn"}',
    ["operation", "result"],
)
DENIALS = Counter(
    "crm_gateway_denials",
    "Requests refused by the access rules, by reason (ip_not_allowed, token_unknown, …)",
    ["reason"],
)
UPSTREAM_ERRORS = Counter(
    "crm_gateway_upstream_errors",
    "Requests the CRM did not answer, by kind (connect, timeout, reset)",
    ["kind"],
)
STORE_SECONDS = Histogram(
    "crm_gateway_store_duration_seconds",
    "Time of store operations, by store (durable, shared) and operation",
    ["store", "operation"],
    buckets=_STORE_BUCKETS,
)
AUDIT_DROPPED = Counter(
    "crm_gateway_audit_events_dropped",
    "Audit events the store never received (it was down for too long); the file has them",
    ["store"],  # labelled, as every metric here: values then exist only once a worker runs
)
AUDIT_LINES_LOST = Counter(
    "crm_gateway_audit_lines_lost",
    "Audit lines the file (or stdout) could not take, by output; the store still has the events",
    ["output"],
)
ALERTS = Counter(
    "crm_gateway_alerts",
    "Activity alerts, by rule and delivery outcome (sent, failed, suppressed)",
    ["rule", "outcome"],
)
MESSAGES = Counter(
    "crm_gateway_codes_sent",
    "SMS and e-mail codes handed to a provider, by channel, provider and outcome",
    ["channel", "provider", "status"],
)
MESSAGE_COST = Counter(
    "crm_gateway_message_cost",
    "What the codes sent cost, in the configured currency",
    ["channel", "currency"],
)


class _RequestValues(NamedTuple):
    """One decision's values: the request counter's, the duration histogram's sum and its
    buckets' (the last one +Inf), as prometheus-client keeps them."""

    requests: Callable[[float], None]
    total: Callable[[float], None]
    buckets: tuple[Callable[[float], None], ...]
    bounds: tuple[float, ...]


_REQUEST_VALUES: dict[str, _RequestValues] = {}


def _not_counted(amount: float) -> None:
    """The bucket of a prometheus-client whose histogram observes as a whole."""


def values_of(counter: Any, histogram: Any) -> _RequestValues:
    """A decision's values to add to directly (Counter.inc and Histogram.observe check
    the metric and take a lock per call, walk the buckets: half a request's cost of
    recording); with a prometheus-client that keeps them otherwise, its public `inc` and
    `observe` (which counts the bucket itself)."""
    try:
        return _RequestValues(
            counter._value.inc,
            histogram._sum.inc,
            tuple(bucket.inc for bucket in histogram._buckets),
            tuple(histogram._upper_bounds),
        )
    except AttributeError:
        return _RequestValues(counter.inc, histogram.observe, (_not_counted,), ())


def record_request(decision: str, seconds: float) -> None:
    """One answered request, in the same samples as `inc()` and `observe(seconds)`: the
    count, the sum and the first bucket whose bound is at least `seconds`."""
    values = _REQUEST_VALUES.get(decision)
    if values is None:
        children = REQUESTS.labels(decision), REQUEST_SECONDS.labels(decision)
        values = _REQUEST_VALUES[decision] = values_of(*children)
    values.requests(1)
    values.total(seconds)
    values.buckets[bisect_left(values.bounds, seconds)](1)


def record_message(channel: str, provider: str, ok: bool, cost: Decimal, currency: str) -> None:
    MESSAGES.labels(channel, provider, "sent" if ok else "failed").inc()
    if cost:
        MESSAGE_COST.labels(channel, currency).inc(float(cost))
