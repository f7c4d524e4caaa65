"""What the soak watches and what it concludes: each gateway process tree's RSS and open
descriptors from /proc, readyz asked as a load balancer would, and the figures and verdict
printed per configuration. It starts and stops nothing; soak.py owns the processes.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from proxy_measure import TICK, cpu_ticks, process_tree
from soak_load import TIMEOUT, Stats, timed_get


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the load began
    rss_kib: int
    fds: int
    processes: int


@dataclass(frozen=True)
class Limits:
    growth_mb_per_min: float  # RSS of the tree, in the last minute of the load
    fd_creep: int  # descriptors held in the last minute over the most held before it


@dataclass
class Outcome:
    name: str
    stats: Stats = field(default_factory=Stats)
    samples: list[Sample] = field(default_factory=list)  # under load, every few seconds
    after: Sample | None = None  # a few seconds after the load, its client's sockets closed
    seconds: float = 0.0  # of load, until the last request ended
    stop_status: int | None = None  # None: it had to be killed
    stop_seconds: float = 0.0
    log_errors: list[str] = field(default_factory=list)
    store_mb: float = 0.0
    redis_keys_left: int | None = None
    cpu_cores: dict[str, float] = field(default_factory=dict)  # CPU seconds per second of load


# -- /proc and readyz ------------------------------------------------------------------------


def sample(root: int, at: float) -> Sample:
    rss = fds = alive = 0
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:  # it ended between the listing and the read
            continue
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        rss += int(found.group(1)) if found else 0
        alive += 1
    return Sample(at, rss, fds, alive)


def cpu_seconds(root: int) -> float:
    """User and system CPU time of the process and its descendants so far."""
    return cpu_ticks(root) / TICK


async def watch(
    root: int, url: str, stats: Stats, seconds: float, every: float, samples: list[Sample]
) -> None:
    """Every `every` seconds until `seconds` pass: the tree's RSS and descriptors, and readyz
    (asked, a stop drains as it does behind a load balancer: readyz 503 first)."""
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        for _ in range(int(seconds / every) + 2):
            at = time.monotonic() - started
            samples.append(sample(root, at))
            if at >= seconds:
                return
            status = await timed_get(http, url + "/_gateway/readyz", {}, stats, "readyz")
            if status is not None:
                stats.note("readyz (load balancer)", status, frozenset({200}))
            await asyncio.sleep(max(0.0, every - (time.monotonic() - started - at)))


# -- figures ---------------------------------------------------------------------------------


def percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def growth(samples: list[Sample]) -> tuple[float, float | None]:
    """RSS growth in MB/min over the whole load, and over its last minute. The first minute
    fills caches and pools, so the last one means something only after it: None under 2 min."""
    first, last = samples[0], samples[-1]
    whole = (last.rss_kib - first.rss_kib) / 1024 / max(1e-9, (last.at - first.at) / 60)
    if last.at < 110:
        return whole, None
    base = next(s for s in samples if s.at >= last.at - 60)
    return whole, (last.rss_kib - base.rss_kib) / 1024 / ((last.at - base.at) / 60)


def fd_creep(samples: list[Sample]) -> int | None:
    """The most descriptors held in the last minute of the load over the most held before it:
    pools fill early and then stay; a leak keeps setting new highs. None under 2 min."""
    end = samples[-1].at
    before = [s.fds for s in samples if s.at < end - 60]
    if end < 110 or not before:
        return None
    return max(s.fds for s in samples if s.at >= end - 60) - max(before)


def judge(o: Outcome, limits: Limits) -> list[str]:
    """What makes this configuration fail, in words."""
    problems = []
    if o.stats.server_errors() or o.stats.failures:
        problems.append("requests failed")
    if o.stats.unexpected:
        problems.append("unexpected answers")
    if o.log_errors:
        problems.append("errors in the gateway log")
    if o.stop_status != 0:
        problems.append("the gateway did not stop cleanly on SIGTERM")
    _, last_minute = growth(o.samples)
    if last_minute is not None and last_minute > limits.growth_mb_per_min:
        problems.append(f"RSS grew {last_minute:.1f} MB/min in the last minute")
    creep = fd_creep(o.samples)
    if creep is not None and creep > limits.fd_creep:
        problems.append(f"{creep} more descriptors in the last minute than the most before it")
    return problems


# -- the report ------------------------------------------------------------------------------


def status_line(counts: dict[int, int]) -> str:
    return ", ".join(f"{status}: {n:,}" for status, n in sorted(counts.items()))


def print_requests(stats: Stats) -> None:
    total: dict[int, int] = {}
    print("  requests by kind and status:")
    for kind, counts in sorted(stats.statuses.items(), key=lambda kv: -sum(kv[1].values())):
        print(f"    {kind:<28} {sum(counts.values()):>9,}   {status_line(counts)}")
        for status, n in counts.items():
            total[status] = total.get(status, 0) + n
    print(f"    {'all':<28} {sum(total.values()):>9,}   {status_line(total)}")


def print_errors(stats: Stats) -> None:
    failures = ", ".join(f"{k}: {n}" for k, n in stats.failures.items()) or "none"
    unexpected = ", ".join(f"{k} ({n})" for k, n in stats.unexpected.items()) or "none"
    print(f"  errors: 5xx {stats.server_errors()}; connection failures and timeouts: {failures}")
    print(f"  unexpected answers: {unexpected}")


def print_process(o: Outcome) -> None:
    samples, (first, end) = o.samples, (o.samples[0], o.samples[-1])
    whole, last_minute = growth(samples)
    last = "n/a (load under 2 min)" if last_minute is None else f"{last_minute:+.2f} MB/min"
    print(
        f"  RSS of {end.processes} process(es): {first.rss_kib / 1024:.1f} MB at the start, "
        f"{end.rss_kib / 1024:.1f} MB at the end; {whole:+.2f} MB/min over the load, "
        f"{last} in the last minute"
    )
    creep = fd_creep(samples)
    after = f"{o.after.fds} after it" if o.after else "none after it"
    print(
        f"  open descriptors: {first.fds} before the load, {end.fds} at its end, {after}; "
        f"at most {max(s.fds for s in samples)} under load; last minute over the earlier "
        f"peak: {'n/a' if creep is None else f'{creep:+d}'} ({len(samples)} samples)"
    )
    stopped = "killed" if o.stop_status is None else f"exit status {o.stop_status}"
    keys = "" if o.redis_keys_left is None else f"; {o.redis_keys_left} Redis keys left, removed"
    print(
        f"  SIGTERM: {stopped} after {o.stop_seconds:.1f} s; durable store {o.store_mb:.1f} MB{keys}"
    )
    print(f"  gateway log: {len(o.log_errors)} error lines")
    for line in o.log_errors[:5]:
        print(f"    {line[:200]}")


def report(o: Outcome, concurrency: int, limits: Limits) -> list[str]:
    """Prints one configuration's figures; returns what failed it."""
    lat, mixed = o.stats.latencies, len(o.stats.latencies)
    print(f"\n== {o.name} ==")
    print(
        f"  {o.seconds:.0f} s of load from {concurrency} clients: {mixed:,} requests of the mix, "
        f"{mixed / max(o.seconds, 1e-9):,.0f} req/s, p50 {percentile_ms(lat, 0.5):.1f} ms, "
        f"p99 {percentile_ms(lat, 0.99):.1f} ms"
    )
    cpu = ", ".join(f"{name} {cores:.2f}" for name, cores in o.cpu_cores.items())
    print(f"  CPU in cores ({os.cpu_count()} on this machine): {cpu}")
    print_requests(o.stats)
    print_errors(o.stats)
    print_process(o)
    problems = judge(o, limits)
    print(f"  => {'FAIL: ' + '; '.join(problems) if problems else 'pass'}")
    return problems
