"""The benchmark's report: medians of the rounds, each ratio taken round by round (both runs
of a pair close in time), the spread of the rounds, and issue 14's targets beside the figures.

Pure formatting of what proxy_bench.py measured: Markdown tables that read in a terminal and
paste into docs/performance.md as they are.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from proxy_measure import Run

ROWS = ("direct", "nginx", "naive", "anonymous", "signed-in")
GATEWAYS = ("anonymous", "signed-in")
LOADED, SINGLE = 64, 1  # wrk connections of the two loads
FLAT_MB = 3.0  # RSS growth from after the warm-up to the end that still counts as flat


@dataclass
class Memory:
    """RSS of one gateway worker (MB) over the run."""

    at_rest: float = 0.0  # started, signed in, no load yet
    after_warmup: float = 0.0
    rounds: list[float] = field(default_factory=list)  # at the end of each round
    peak: float = 0.0  # VmHWM at the end: the most it ever held
    after: float = 0.0  # after the downloads, idle

    @property
    def growth(self) -> float:
        return self.after - self.after_warmup


@dataclass
class Results:
    names: dict[str, str]
    runs: dict[tuple[str, int], list[Run]] = field(default_factory=dict)
    downloads: dict[str, list[float]] = field(default_factory=dict)
    memory: dict[str, Memory] = field(default_factory=dict)
    other_work: list[float] = field(default_factory=list)  # others' share of the CPU, per round

    def has(self, key: str) -> bool:
        return key in self.names


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: list[float]) -> str:
    """Max minus min of the rounds, in % of their median."""
    if len(values) < 2:
        return "-"
    return f"{(max(values) - min(values)) / statistics.median(values) * 100:.0f} %"


def paired(
    results: Results, a: str, b: str, conns: int, of: Callable[[Run, Run], float]
) -> list[float]:
    if not (results.has(a) and results.has(b)):
        return []
    return [
        of(x, y) for x, y in zip(results.runs[(a, conns)], results.runs[(b, conns)], strict=True)
    ]


def _rps_ratio(x: Run, y: Run) -> float:
    return x.rps / y.rps


def _added_us(x: Run, y: Run) -> float:
    return (x.p50_ms - y.p50_ms) * 1000


def _cpu_ratio(x: Run, y: Run) -> float:
    """y's CPU time per request over x's: steadier than req/s while other work takes turns
    on the cores, since each counts only its own CPU time."""
    return y.cpu_us / x.cpu_us if x.cpu_us else float("nan")


def load_table(results: Results) -> list[str]:
    lines = [
        "| target | conns | req/s | spread | p50 ms | p99 ms | CPU µs/req | ÷ naive | ÷ nginx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for conns in (LOADED, SINGLE):
        for key in ROWS:
            if not results.has(key):
                continue
            runs = results.runs[(key, conns)]
            rps = [r.rps for r in runs]
            ratios = []
            for ref in ("naive", "nginx"):
                found = paired(results, key, ref, conns, _rps_ratio)
                ratios.append(f"{_median(found):.2f}" if found and key != ref else "-")
            lines.append(
                f"| {results.names[key]} | {conns} | {_median(rps):,.0f} | {_spread(rps)} "
                f"| {_median([r.p50_ms for r in runs]):.3f} | {_median([r.p99_ms for r in runs]):.2f} "
                f"| {_median([r.cpu_us for r in runs]):.0f} | {ratios[0]} | {ratios[1]} |"
            )
    return lines


def latency_lines(results: Results) -> list[str]:
    """What each proxy adds at one connection, at p50, over the upstream alone."""
    parts = []
    for key in ROWS[1:]:
        added = paired(results, key, "direct", SINGLE, _added_us)
        if added:
            parts.append(f"{results.names[key]} {_median(added):+.0f} µs")
    return [f"p50 added over the upstream alone at 1 connection: {'; '.join(parts)}."]


def download_table(results: Results) -> list[str]:
    lines = ["| 100 MB download through | MB/s | spread | ÷ nginx |", "|---|---:|---:|---:|"]
    nginx = results.downloads.get("nginx")
    for key in ROWS:
        speeds = results.downloads.get(key)
        if not speeds:
            continue
        ratio = "-"
        if nginx and key != "nginx":
            ratio = f"{_median([a / b for a, b in zip(speeds, nginx, strict=True)]):.2f}"
        lines.append(
            f"| {results.names[key]} | {_median(speeds):,.0f} | {_spread(speeds)} | {ratio} |"
        )
    return lines


def memory_table(results: Results) -> list[str]:
    lines = [
        "| gateway RSS, MB | at rest | after warm-up | end of each round | peak | after | flat |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for key, m in results.memory.items():
        rounds = " / ".join(f"{v:.1f}" for v in m.rounds)
        flat = "yes" if m.growth <= FLAT_MB else "no"
        lines.append(
            f"| {results.names[key]} | {m.at_rest:.1f} | {m.after_warmup:.1f} | {rounds} "
            f"| {m.peak:.1f} | {m.after:.1f} | {flat} ({m.growth:+.1f}) |"
        )
    return lines


@dataclass(frozen=True)
class Goal:
    what: str
    wanted: str
    measured: str
    rounds: str  # the lowest and highest of the rounds
    met: bool | None  # None: not measured in this run (no nginx)
    by_cpu: str = ""  # the same ratio from CPU time per request


def _ratio_goal(what: str, values: list[float], at_least: float, by_cpu: str = "") -> Goal:
    if not values:
        return Goal(what, f"≥ {at_least:.2f}×", "-", "-", None)
    m = _median(values)
    rounds = f"{min(values):.2f} to {max(values):.2f}"
    return Goal(what, f"≥ {at_least:.2f}×", f"{m:.2f}×", rounds, m >= at_least, by_cpu)


def _latency_goal(what: str, values: list[float], at_most: float) -> Goal:
    if not values:
        return Goal(what, f"≤ {at_most:.0f} µs", "-", "-", None)
    m = _median(values)
    rounds = f"{min(values):.0f} to {max(values):.0f}"
    return Goal(what, f"≤ {at_most:.0f} µs", f"{m:.0f} µs", rounds, m <= at_most)


def _throughput_goal(results: Results, key: str, at_least: float) -> Goal:
    by_cpu = paired(results, key, "naive", LOADED, _cpu_ratio)
    return _ratio_goal(
        f"{key} req/s ÷ naive proxy (64 conns)",
        paired(results, key, "naive", LOADED, _rps_ratio),
        at_least,
        f"{_median(by_cpu):.2f}×" if by_cpu else "",
    )


def goals(results: Results) -> list[Goal]:
    """Issue 14's targets, each from pairs measured in the same round."""
    found = [
        _throughput_goal(results, "anonymous", 1.5),
        _throughput_goal(results, "signed-in", 1.2),
    ]
    for key, at_most in (("anonymous", 150), ("signed-in", 250)):
        added = paired(results, key, "nginx", SINGLE, _added_us)
        found.append(_latency_goal(f"{key} p50 − nginx proxy p50 (1 conn)", added, at_most))
    nginx = results.downloads.get("nginx", [])
    for key in GATEWAYS:
        speeds = results.downloads.get(key, [])
        ratios = [a / b for a, b in zip(speeds, nginx, strict=True)] if nginx else []
        found.append(_ratio_goal(f"100 MB download ÷ nginx proxy, {key}", ratios, 0.9))
    for key, m in results.memory.items():
        rest = f"{m.at_rest:.1f} MB"
        found.append(Goal(f"RSS at rest, {key}", "≤ 60 MB", rest, "-", m.at_rest <= 60))
        growth, peak = f"{m.growth:+.1f} MB", f"peak {m.peak:.1f}"
        wanted = f"≤ +{FLAT_MB:.0f} MB"
        found.append(Goal(f"RSS flat, {key}", wanted, growth, peak, m.growth <= FLAT_MB))
    return found


def goal_table(results: Results) -> list[str]:
    lines = [
        "| issue 14 target (1 worker) | wanted | measured | rounds | by CPU µs | |",
        "|---|---|---:|---:|---:|---|",
    ]
    for g in goals(results):
        verdict = {True: "met", False: "**not met**", None: "not measured (no nginx)"}[g.met]
        lines.append(
            f"| {g.what} | {g.wanted} | {g.measured} | {g.rounds} | {g.by_cpu} | {verdict} |"
        )
    return lines


def noise_lines(results: Results) -> list[str]:
    spreads = []
    for (key, conns), runs in results.runs.items():
        rps = [r.rps for r in runs]
        if len(rps) > 1:
            spreads.append(((max(rps) - min(rps)) / statistics.median(rps) * 100, key, conns))
    lines = []
    if results.other_work:
        per_round = ", ".join(f"{v * 100:.0f} %" for v in results.other_work)
        lines.append(
            f"Other work on the machine took {_median(results.other_work) * 100:.0f} % of its "
            f"CPU during the rounds (per round: {per_round})."
        )
    if not spreads:
        return [*lines, "Noise: one round only, no spread (--rounds 3 or more)."]
    worst = max(spreads)
    typical = _median([s[0] for s in spreads])
    return [
        *lines,
        f"Noise: a target's req/s varied between rounds by {typical:.0f} % (median over the "
        f"rows; at most {worst[0]:.0f} %, {results.names[worst[1]]} at {worst[2]} conns). "
        "Ratios are taken round by round; 'rounds' gives their lowest and highest.",
    ]


def report(results: Results) -> str:
    lines = [*load_table(results), "", *latency_lines(results), *noise_lines(results), ""]
    lines += [*download_table(results), "", *memory_table(results), "", *goal_table(results)]
    return "\n".join(lines)


def put_into_doc(doc: Path, text: str, begin: str, end: str) -> None:
    """`text` in place of what stands between the lines `begin` and `end` of `doc`."""
    content = doc.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{doc} has no {begin} ... {end} block to replace")
    head, rest = content.split(begin, 1)
    doc.write_text(f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")
    print(f"\nwrote the report into {doc}")
