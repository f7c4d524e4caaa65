"""The benchmark's instruments: one wrk run (req/s, p50/p99, and the CPU time the serving
process tree spent on it, from /proc), a 100 MB download, a process's RSS.

Reads wrk's text and /proc; starts nothing but wrk, each run bounded by its duration.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    """One wrk run against one target."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    cpu_us: float  # the serving tree's user + system CPU time per request
    errors: str  # wrk's socket errors and non-2xx/3xx count, "" when none


def process_tree(root: int) -> list[int]:
    """`root` and every descendant alive now (children of every thread)."""
    found: list[int] = []
    todo = [root]
    while todo and len(found) < 4096:  # a bound, not a limit any target comes near
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except OSError:  # it ended while being read
            continue
    return found


def cpu_ticks(root: int) -> int:
    """User and system time, in clock ticks, of the tree so far (proc(5) stat fields 14, 15)."""
    ticks = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """VmRSS (now) or VmHWM (the peak since it started) of one process, in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) / 1024 if found else 0.0


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1e3, "m": 6e4}[found.group(2)]


def parse_wrk(out: str) -> tuple[float, float, float, int, str]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"(?m)^\s+50%\s+(\S+)", out)
    p99 = re.search(r"(?m)^\s+99%\s+(\S+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and p50 and p99 and total):
        raise SystemExit(f"wrk gave no figures:\n{out}")
    errors = "; ".join(
        m.group(0) for m in re.finditer(r"Non-2xx or 3xx responses: \d+|Socket errors: .*", out)
    )
    return float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), int(total.group(1)), errors


def run_wrk(wrk: str, url: str, seconds: int, connections: int, root: int, cookie: str = "") -> Run:
    """`wrk -t2 -cN` (one thread at one connection); the CPU of `root`'s tree over the run."""
    threads = min(2, connections)
    extra = ["-H", f"Cookie: {cookie}"] if cookie else []
    args = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *extra, url]
    before = cpu_ticks(root)
    out = subprocess.run(
        args, capture_output=True, text=True, check=True, timeout=seconds + 30
    ).stdout
    spent = cpu_ticks(root) - before
    rps, p50, p99, requests, errors = parse_wrk(out)
    cpu_us = spent / TICK * 1e6 / requests if requests else 0.0
    return Run(rps, p50, p99, requests, cpu_us, errors)


def download(url: str, expected: int, cookie: str = "") -> float:
    """MB/s of one GET read to its end (into one reused buffer: the reader costs little)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=60)
    buffer = memoryview(bytearray(1 << 20))
    try:
        started = time.perf_counter()
        connection.request(
            "GET", f"{parts.path}?{parts.query}", headers={"Cookie": cookie} if cookie else {}
        )
        answer = connection.getresponse()
        size = 0
        while size <= expected and (n := answer.readinto(buffer)):
            size += n
        seconds = time.perf_counter() - started
    finally:
        connection.close()
    if answer.status != 200 or size != expected:
        raise SystemExit(f"{url} gave {answer.status} and {size} bytes, not {expected}")
    return size / seconds / 1e6


def machine_ticks() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine so far (/proc/stat, all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def own_ticks(roots: list[int]) -> int:
    """CPU ticks of this benchmark: the trees it started, itself and the wrk runs it waited for."""
    mine = os.times()
    seconds = mine.user + mine.system + mine.children_user + mine.children_system
    return sum(cpu_ticks(root) for root in roots) + round(seconds * TICK)


class OtherWork:
    """The share of the machine's CPU that processes not started by the benchmark took
    between two readings: other people's work, which makes the rounds noisy."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self._last = (*machine_ticks(), own_ticks(roots))

    def share(self) -> float:
        busy, total, own = (*machine_ticks(), own_ticks(self.roots))
        last_busy, last_total, last_own = self._last
        self._last = (busy, total, own)
        spent = total - last_total
        return max(0.0, (busy - last_busy) - (own - last_own)) / spent if spent else 0.0
