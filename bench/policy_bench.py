"""`make bench` (part 2): policy decisions at scale — 10,000 users, 50,000 networks.

Targets (policy issue): a decision in <= 20 µs median on one core, with no linear scan of
networks per request, and a full policy load in <= 2 s. The decisions measured are the whole
per-request policy work: path normalisation, the address checks (deny lists, every allow
layer) and the path rules, for random users and random client addresses.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import tempfile
import time
from pathlib import Path

from gateway.paths import normalize_path
from gateway.policy.load import load_policies
from gateway.policy.networks import NetworkIndex
from gateway.policy.rules import check_access


def generate(
    folder: Path, users: int, networks: int, seed: int = 7, *, lists: bool = False
) -> None:
    """`lists`: the 50,000 networks in 100 plain list files (one CIDR per line) named from
    networks.yaml, as an organisation keeps big allow lists, instead of inline YAML."""
    rng = random.Random(seed)
    cidrs = []
    for i in range(networks):
        if i % 10 == 9:
            prefix = rng.choice((48, 56, 64))
            raw = f"2001:db8:{rng.randrange(65536):x}:{rng.randrange(65536):x}::/{prefix}"
            cidrs.append(str(ipaddress.ip_network(raw, strict=False)))
        else:
            plen = rng.choice((16, 20, 24, 28, 32))
            value = rng.randrange(1 << 32) >> (32 - plen) << (32 - plen)
            address = ".".join(str((value >> s) & 255) for s in (24, 16, 8, 0))
            cidrs.append(f"{address}/{plen}")
    lines = ["networks:"]
    if lists:
        # Names n0..n{networks-1} stay valid: each list file holds a slice, and every name
        # the generated roles and users use refers to one list's slice by its own name.
        per = max(1, networks // 100)
        for start in range(0, networks, per):
            chunk = cidrs[start : start + per]
            (folder / f"list{start}.txt").write_text("\n".join(chunk) + "\n")
            lines.append(f"  n{start}: {{file: list{start}.txt}}")
    else:
        lines += [f'  n{i}: ["{cidr}"]' for i, cidr in enumerate(cidrs)]
    (folder / "networks.yaml").write_text("\n".join(lines) + "\n")
    if lists:
        networks = networks // max(1, networks // 100)  # names that exist: one per list
    step = max(1, len(cidrs) // 100) if lists else 1

    def pick() -> str:
        return f"n{rng.randrange(networks) * step}"

    roles = ["roles:"] + [
        f"  r{i}: {{networks: [{', '.join(pick() for _ in range(200))}], max_interval: 7d}}"
        for i in range(20)
    ]
    groups = ["groups:"] + [
        f"  g{i}: {{networks: [{', '.join(pick() for _ in range(100))}], interval: 1d}}"
        for i in range(50)
    ]
    (folder / "roles.yaml").write_text("\n".join(roles + groups) + "\n")
    people = ["users:"]
    for i in range(users):
        own = f", networks: [{pick()}, {pick()}]" if i % 3 == 0 else ""
        people.append(
            f"  u{i}: {{roles: [r{rng.randrange(20)}], groups: [g{rng.randrange(50)}, g{rng.randrange(50)}]{own}}}"
        )
    (folder / "users.yaml").write_text("\n".join(people) + "\n")
    rules = [f"organisation: {{deny: [n0, n{step}, n{2 * step}]}}", "paths:"]
    for i in range(20):
        rules.append(f"  - {{path: /area{i}/**, allow: [role:r{i}, group:g{i}]}}")
    rules.append("  - {path: /**, allow: [authenticated]}")
    (folder / "paths.yaml").write_text("\n".join(rules) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--networks", type=int, default=50_000)
    parser.add_argument("--decisions", type=int, default=100_000)
    args = parser.parse_args()
    load_seconds: dict[str, float] = {}
    for label, lists in (("inline YAML", False), ("list files", True)):
        with tempfile.TemporaryDirectory(prefix="crm-gateway-policy-") as tmp:
            folder = Path(tmp)
            generate(folder, args.users, args.networks, lists=lists)
            loads = []
            for _ in range(3):
                started = time.perf_counter()
                policy = load_policies(folder)
                index = NetworkIndex(policy.networks)
                loads.append(time.perf_counter() - started)
            load_seconds[label] = statistics.median(loads)
            if not lists:
                # Decisions are timed on the 50,000 separately named networks: the most
                # names to index and to check per request.
                kept = policy, index
    policy, index = kept
    rng = random.Random(11)
    names = list(policy.users)
    requests = []
    for _ in range(args.decisions):
        if rng.random() < 0.9:
            ip = ".".join(str(rng.randrange(256)) for _ in range(4))
        else:
            ip = f"2001:db8:{rng.randrange(65536):x}:{rng.randrange(65536):x}::1"
        requests.append(
            (
                policy.users[rng.choice(names)],
                ip,
                f"/area{rng.randrange(25)}/page/{rng.randrange(50)}",
            )
        )
    index.match.cache_clear()
    normalize_path.cache_clear()
    timings = []
    clock = time.perf_counter_ns
    for user, ip, path in requests:
        started = clock()
        check_access(policy, index, user=user, ip=ip, method="GET", path=normalize_path(path))
        timings.append(clock() - started)
    timings.sort()
    median_us = statistics.median(timings) / 1000
    p99_us = timings[int(len(timings) * 0.99)] / 1000
    print(
        f"policy: {len(policy.users):,} users, {len(policy.networks):,} networks, "
        f"{len(policy.paths)} path rules"
    )
    for label, seconds in load_seconds.items():
        target = "target <= 2 s" if label == "list files" else "no target: big sets go in files"
        print(
            f"load (parse, validate, merge, index), networks as {label}, median of 3: "
            f"{seconds:.2f} s ({target})"
        )
    print(
        f"decision over {len(timings):,} random requests (distinct addresses, cold caches): "
        f"median {median_us:.1f} µs, p99 {p99_us:.1f} µs (target median <= 20 µs)"
    )
    ok = load_seconds["list files"] <= 2.0 and median_us <= 20.0
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
