"""The request metrics record what prometheus-client's own `inc` and `observe` would."""

from __future__ import annotations

import math

import pytest
from prometheus_client import REGISTRY, Counter, Histogram

from gateway import metrics
from gateway.metrics import REQUEST_SECONDS, REQUESTS, record_request, values_of

# On and around the bounds, below the first, past the last.
DURATIONS = [0.0, 0.0001, 0.0005, 0.00050001, 0.001, 0.003, 0.025, 9.99, 30.0, 31.0, 1e9]


class Public:
    """A prometheus-client child seen through its public calls only (as a release that
    keeps its values under other names would be)."""

    def __init__(self, child: object) -> None:
        self._child = child

    def inc(self, amount: float = 1) -> None:
        self._child.inc(amount)  # type: ignore[attr-defined]

    def observe(self, amount: float) -> None:
        self._child.observe(amount)  # type: ignore[attr-defined]


def _samples(decision: str) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name.startswith("crm_gateway_request")
        and sample.labels.get("decision") == decision
    }


@pytest.mark.parametrize("direct", [True, False])
def test_record_request_gives_the_samples_inc_and_observe_give(
    direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Added to the values directly (or, where prometheus-client keeps them otherwise,
    through inc and observe): the same count, sum and buckets as a twin Counter and
    Histogram fed with the public calls."""
    decision = f"test-{direct}"
    if not direct:
        public = values_of(
            Public(REQUESTS.labels(decision)), Public(REQUEST_SECONDS.labels(decision))
        )
        assert public.bounds == ()
        monkeypatch.setitem(metrics._REQUEST_VALUES, decision, public)
    twin_count = Counter("twin_requests", "", registry=None)
    twin = Histogram("twin_seconds", "", buckets=metrics._LATENCY_BUCKETS, registry=None)
    for seconds in DURATIONS:
        record_request(decision, seconds)
        twin_count.inc()
        twin.observe(seconds)

    got = _samples(decision)
    assert got[("crm_gateway_requests_total", "")] == len(DURATIONS) == twin_count._value.get()
    assert math.isclose(got[("crm_gateway_request_duration_seconds_sum", "")], sum(DURATIONS))
    twins = {
        sample.labels["le"]: sample.value
        for metric in twin.collect()
        for sample in metric.samples
        if sample.name.endswith("_bucket")
    }
    buckets = {
        le: value
        for (name, le), value in got.items()
        if name == "crm_gateway_request_duration_seconds_bucket"
    }
    assert buckets == twins
    assert buckets["0.0005"] == 3  # 0, 0.0001 and 0.0005 itself: a bound is "at most"
    assert buckets["+Inf"] == len(DURATIONS)
