"""`crm-gateway policy explain` and `crm-gateway tokens …` as a person runs them."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.stores.sqlite import SqliteDurableStore
from tests.process import run_command

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, stdin: str = "", cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run_command(*args, stdin=stdin, cwd=cwd)


def new_store(path: Path) -> None:
    """An empty store, made as the gateway makes it at its first start: admin commands never
    make one."""

    async def make() -> None:
        store = SqliteDurableStore(str(path))
        await store.open()
        await store.close()

    asyncio.run(make())


@pytest.mark.parametrize(
    ("who", "ip", "path", "decision", "interval", "rule"),
    [
        ("alice", "203.0.113.7", "/admin/", "forward (ok)", "always", "policies/paths.yaml:4"),
        ("bob", "203.0.113.7", "/admin/", "deny (path_not_allowed)", "1d", "policies/paths.yaml:4"),
        (
            "bob",
            "198.51.100.3",
            "/contacts",
            "deny (ip_not_allowed)",
            "1d",
            "policies/roles.yaml:9",
        ),
        ("carol", "8.8.8.8", "/contacts", "forward (ok)", "7d", "policies/paths.yaml:12"),
        (
            "crm-sync --token",
            "203.0.113.7",
            "/api/x",
            "deny (ip_not_allowed)",
            "always",
            "policies/roles.yaml:22",
        ),
        (
            "crm-sync --token",
            "192.0.2.10",
            "/api/x",
            "forward (ok)",
            "always",
            "policies/paths.yaml:9",
        ),
        (
            "crm-sync",
            "192.0.2.10",
            "/api/x",
            "deny (path_not_allowed)",
            "always",
            "policies/paths.yaml:9",
        ),
        ("alice", "192.0.2.66", "/", "deny (ip_denied)", "always", "policies/organisation.yaml:3"),
    ],
)
def test_policy_explain_answers_for_each_example_user(
    who: str, ip: str, path: str, decision: str, interval: str, rule: str
) -> None:
    user = who.split()
    result = cli(
        "policy", "explain", "--policies", "policies", "--user", *user, "--ip", ip, "--path", path
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"decision: {decision}" in out
    assert f"interval: {interval}" in out
    assert rule in out


def test_policy_explain_for_an_unknown_token_and_an_ambiguous_path() -> None:
    result = cli(
        "policy",
        "explain",
        "--policies",
        "policies",
        "--ip",
        "192.0.2.10",
        "--path",
        "/api/x",
        "--unknown-token",
    )
    assert "decision: forward (ok)" in result.stdout
    assert "api.unknown_tokens networks contain the address" in result.stdout
    result = cli(
        "policy", "explain", "--policies", "policies", "--ip", "192.0.2.10", "--path", "/admin%2fx"
    )
    assert "decision: deny (400 path_ambiguous)" in result.stdout


EXPLAIN = ("policy", "explain", "--policies", "policies", "--user", "alice", "--ip", "203.0.113.7")


def test_policy_explain_into_a_closed_pipe_ends_quietly_with_141() -> None:
    """The reader went away before anything was written (`… | head -1` that already has its
    line): no BrokenPipeError traceback, the status a shell gives `grep … | head` (128+13)."""
    with subprocess.Popen(
        [sys.executable, "-m", "gateway", *EXPLAIN],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        err = process.stderr.read()
        assert (process.wait(60), err) == (141, b"")
    # And as typed in a shell: one line, nothing on stderr.
    piped = subprocess.run(
        f"{shlex.join([sys.executable, '-m', 'gateway', *EXPLAIN])} | head -1",
        shell=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (piped.stdout, piped.stderr) == ("request: GET / from 203.0.113.7 by user alice\n", "")


def test_policy_errors_exit_2_with_every_problem(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "users:\n  x: {roles: [ghost], interval: soon}\npaths:\n  - {path: admin, allow: [role:ghost]}\n"
    )
    result = cli("policy", "explain", "--policies", str(tmp_path), "--ip", "10.0.0.1")
    assert result.returncode == 2
    assert (
        f"{tmp_path}/a.yaml:2: users.x.roles[0]: names role 'ghost', which no policy file defines"
        in result.stderr
    )
    assert f"{tmp_path}/a.yaml:2: users.x.interval: must be a duration" in result.stderr
    assert f"{tmp_path}/a.yaml:4: paths[0].path: must be a path pattern" in result.stderr


def test_check_config_refuses_broken_policies(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(
        "roles:\n  m: {max_interval: 1d}\nusers:\n  u: {roles: [m], interval: 7d}\n"
    )
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\nupstream: {url: 'http://127.0.0.1:9'}\npolicies: policies\n"
    )
    result = cli("check-config", "-c", str(config))
    assert result.returncode == 2
    assert "users.u.interval: 7d is longer than the 1d cap of role m" in result.stderr


def test_tokens_add_list_revoke(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\nupstream: {url: 'http://127.0.0.1:9'}\n"
        f"state: {{durable: {{type: sqlite, path: {tmp_path}/g.db}}}}\npolicies: {ROOT}/policies\n"
    )
    new_store(tmp_path / "g.db")
    short = cli("tokens", "add", "--user", "crm-sync", "-c", str(config), stdin="short\n")
    assert short.returncode == 2
    added = cli(
        "tokens",
        "add",
        "--user",
        "crm-sync",
        "--label",
        "accounting sync",
        "-c",
        str(config),
        stdin="s3cret-token-value-0123456789\n",
    )
    assert added.returncode == 0, added.stderr
    token_id = added.stdout.strip()
    assert token_id.startswith("tok_")
    again = cli(
        "tokens",
        "add",
        "--user",
        "crm-sync",
        "-c",
        str(config),
        stdin="s3cret-token-value-0123456789\n",
    )
    assert again.returncode == 1  # the same token twice is refused, and said to be
    assert "not registered: this token is already registered" in again.stderr
    ghost = cli(
        "tokens", "add", "--user", "ghost", "-c", str(config), stdin="another-token-0123456789\n"
    )
    assert "in no policy file" in ghost.stderr
    listed = json.loads(cli("tokens", "list", "--json", "-c", str(config)).stdout)
    assert next((t["id"], t["user"], t["label"], t["revoked"]) for t in listed) == (
        token_id,
        "crm-sync",
        "accounting sync",
        None,
    )
    table = cli("tokens", "list", "-c", str(config)).stdout
    assert "s3cret" not in table and token_id in table
    assert cli("tokens", "revoke", token_id, "-c", str(config)).returncode == 0
    assert cli("tokens", "revoke", token_id, "-c", str(config)).returncode == 1
    listed = json.loads(cli("tokens", "list", "--json", "-c", str(config)).stdout)
    assert listed[0]["revoked"] is not None
