"""`check-config` on what an operator may really feed it: a file with thousands of mistakes,
absurd values, a store whose Python driver is not installed. Run as the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.load import parse_config
from gateway.crypto import new_key_line
from gateway.errors import ConfigError
from tests.process import run_command

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = "listen: 127.0.0.1:8080\nupstream:\n  url: http://127.0.0.1:8081\n"


def check_config(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return [str(p) for p in caught.value.problems]


def test_thousands_of_problems_show_the_first_fifty_and_count_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(MINIMAL + "".join(f"key{i}: 1\n" for i in range(100_000)))

    result = check_config(path)

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 52
    assert lines[0].startswith(f"{path}:4: key0: unknown key (known here: ")
    assert lines[49].startswith(f"{path}:53: key49: unknown key")
    assert lines[50:] == ["… and 99,950 more problems", f"{path}: 100,000 problems"]
    assert len(result.stderr) < 20_000  # was 20 MB


def test_a_bad_file_is_not_said_to_be_not_started_by_check_config(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(MINIMAL + "workers: 0\n")

    checked = check_config(path)
    started = run_command("run", "-c", str(path), cwd=tmp_path)

    assert checked.returncode == started.returncode == 2
    assert checked.stderr.splitlines()[-1] == f"{path}: 1 problem"
    assert started.stderr.splitlines()[-1] == f"{path}: 1 problem; not started"


def test_a_five_megabyte_product_name_is_refused_with_its_length(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(MINIMAL + f"branding: {{product_name: '{'x' * 5_000_000}'}}\n")

    result = check_config(path)

    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}:4: branding.product_name: must be at most 4,096 characters but it's "
        f"5,000,000 characters long (starting '{'x' * 60}')",
        f"{path}: 1 problem",
    ]


def test_a_long_value_is_quoted_back_cut_short() -> None:
    assert problems(MINIMAL + f"logging: {{level: {'b' * 1000}}}\n") == [
        f"gateway.yaml:4: logging.level: must be one of debug, info, warning, error but it's "
        f"'{'b' * 60}'… (1,000 characters)"
    ]


@pytest.mark.parametrize(
    ("key", "written", "expected"),
    [
        ("workers", "9" * 5000, "must be a whole number of at most 15 digits"),
        ("upstream.keepalive", "9" * 5000, "must be a duration such as 30s"),
        ("upstream.websocket.max_message_size", "9" * 5000, "must be a size such as 64KiB"),
    ],
)
def test_a_number_thousands_of_digits_long_is_a_problem_not_a_crash(
    key: str, written: str, expected: str
) -> None:
    *parents, name = key.split(".")
    text = f"{name}: {written}"
    for parent in reversed(parents):
        text = f"{parent}: {{{text}}}"
    if parents:  # upstream is in MINIMAL: replace it
        text = text.replace("upstream: {", "upstream: {url: 'http://127.0.0.1:8081', ", 1)
        base = "listen: 127.0.0.1:8080\n"
    else:
        base = MINIMAL
    (found,) = problems(base + text + "\n")
    assert f"{key}: {expected}" in found
    assert f"'{'9' * 60}'… (5,000 characters)" in found


@pytest.mark.parametrize(
    "written",
    ["k" * 1000 + ": 1", "? " + "k" * 100_000 + "\n: 1"],  # YAML's explicit key: no limit
    ids=["plain", "explicit"],
)
def test_a_key_longer_than_a_name_is_reported_without_repeating_it(written: str) -> None:
    length = len(written.split(":")[0].strip("? \n"))
    assert problems(MINIMAL + written + "\n") == [
        f"gateway.yaml:4: {'k' * 60}…: is {length:,} characters long: a key is a name (at most 256)"
    ]


def test_check_config_fails_when_the_redis_package_cannot_be_imported(tmp_path: Path) -> None:
    # A `redis` package first on the path that fails to import, as a missing one does.
    shim = tmp_path / "shim" / "redis"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'redis'\", name='redis')\n"
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(MINIMAL + "state:\n  shared: {type: redis, url: 'redis://127.0.0.1:6379/0'}\n")
    env = {**os.environ, "PYTHONPATH": str(shim.parent)}

    result = check_config(path, env)

    assert result.returncode == 2
    assert result.stderr.splitlines()[-2:] == [
        f"{path}:5: state.shared.type: redis needs the Python package 'redis' "
        "(pip install 'crm-gateway[redis]'): No module named 'redis'",
        f"{path}: 1 problem",
    ]
    assert check_config(path).returncode == 0  # installed here: the same file is fine


def test_shutdown_problems_are_reported_with_the_other_problems() -> None:
    """Every problem at once: a bad upstream used to hide every problem of `shutdown`."""
    found = problems(
        "listen: 127.0.0.1:8080\nupstream:\n  url: crm.local\nshutdown: {grace: soon, bogus: 1}\n"
    )
    assert any("upstream.url" in p for p in found)
    assert any("shutdown.grace" in p for p in found)
    assert any("shutdown.bogus" in p for p in found)


def test_a_bad_users_file_fails_check_config_not_the_start(tmp_path: Path) -> None:
    """Gateway mode's users file is read at start: check-config reads it too (it said OK,
    and `run` listened, then died)."""
    (tmp_path / "k").write_text(new_key_line("k1") + "\n")
    users = tmp_path / "users.yaml"
    users.write_text("alice: not-a-hash\n")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        MINIMAL
        + "login: {mode: gateway, users_file: users.yaml}\n"
        + "secrets: {session_keys: {file: k}, seal_keys: {file: k}}\n"
    )
    result = check_config(config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{users}:1: alice: must be an argon2id hash" in result.stderr
