"""The `shutdown` part of gateway.yaml: how a graceful stop (SIGTERM) drains the gateway.
Parsed with every problem collected, like the other sections (gateway.config.load calls
`read_shutdown`).

The defaults fit a 30 s stop budget (Kubernetes' terminationGracePeriodSeconds, systemd's
TimeoutStopSec is 90 s): 5 s of readyz at 503 while still serving, then 20 s for the
requests in flight.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.yaml_reader import Value

_LONGEST = 3600.0  # a stop that takes longer than an hour is a typo, not a plan


@dataclass(frozen=True)
class Shutdown:
    # After SIGTERM: readyz answers 503 and new connections are still served, for this long,
    # so a load balancer that polls readyz moves traffic away before the listener closes.
    drain_delay: float = 5.0
    # Then: the listener is closed and requests in flight (uploads and downloads included)
    # get this long to finish before their connections are cut.
    grace: float = 20.0


def read_shutdown(keys: dict[str, Value]) -> Shutdown:
    if "shutdown" not in keys:
        return Shutdown()
    found = keys["shutdown"].mapping({"drain_delay", "grace"})
    if found is None:
        return Shutdown()
    default = Shutdown()
    return Shutdown(
        drain_delay=_seconds(found, "drain_delay", default.drain_delay),
        grace=_seconds(found, "grace", default.grace),
    )


def _seconds(keys: dict[str, Value], name: str, default: float) -> float:
    if name not in keys:
        return default
    seconds = keys[name].duration(minimum=0.0)
    if seconds is None:
        return default
    if seconds > _LONGEST:
        keys[name].fail("must be at most 1h")
        return default
    return seconds
