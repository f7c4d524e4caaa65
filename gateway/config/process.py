"""The gateway process and its policy files, as gateway.yaml says: how many workers (a
number, or `auto`: one per usable core), where the policy files are and which files count,
what the file watcher looks at, and how much of a policy a watched change may take away
before it waits for a person (`policy_reload.hold_share`)."""

from __future__ import annotations

import os
from pathlib import Path

from yaml.nodes import ScalarNode

from gateway.config.yaml_reader import Value, describe


def policy_files(directory: str | Path) -> list[Path]:
    """The policy files of a folder: its *.yaml and *.yml files, in name order."""
    folder = Path(directory)
    return sorted(p for p in [*folder.glob("*.yaml"), *folder.glob("*.yml")] if p.is_file())


def files_signature(directory: str | Path) -> tuple[tuple[str, int, int], ...]:
    """The policy files as the file system describes them (name, mtime, size): cheap enough
    to look at every few seconds, so a change is noticed without reading the files."""
    found = []
    for path in policy_files(directory):
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(found)


MAX_WORKERS = 64


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container or taskset
    limits it), at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def read_workers(value: Value) -> tuple[int, bool] | None:
    """`workers`: a number from 1 to 64, or `auto` (one per usable core): (count, auto)."""
    if isinstance(value.node, ScalarNode) and value.node.value == "auto":
        return usable_cores(), True
    if isinstance(value.node, ScalarNode) and not value.node.tag.endswith(":int"):
        said = describe(value.node)
        value.fail(f"must be a whole number from 1 to {MAX_WORKERS}, or auto, but it's {said}")
        return None
    count = value.integer(minimum=1, maximum=MAX_WORKERS)
    return None if count is None else (count, False)


def read_policies_dir(value: Value) -> str | None:
    """Relative to the config file's folder, so `policies: policies` works from anywhere."""
    text = value.file_path()
    if text is None:
        return None
    folder = Path(text)
    if not folder.is_dir():
        value.fail(f"must be a folder of policy files but {str(folder)!r} is not a folder")
        return None
    if not policy_files(folder):
        value.warn(f"{str(folder)!r} holds no policy files (*.yaml, *.yml)")
    return str(folder)


def read_policy_reload(value: Value) -> float | None:
    """`{hold_share: 50%}`: the share of path rules a watched change may remove unconfirmed."""
    keys = value.mapping({"hold_share"})
    if keys is None or "hold_share" not in keys:
        return None
    text = keys["hold_share"].text()
    if text is None:
        return None
    number = text[:-1].strip() if text.endswith("%") else ""
    if not number.isdigit() or not 0 <= int(number) <= 100:
        keys["hold_share"].fail(f"must be a share such as 50% but it's {text!r}")
        return None
    return int(number) / 100
