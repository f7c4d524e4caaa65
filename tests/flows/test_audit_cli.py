"""`crm-gateway audit tail|search` as an auditor runs them: events written by the real audit
trail into a real SQLite store (and by a real gateway's sign-ins), read back by the real CLI;
`tail -f` as a real process stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.audit import AuditTrail
from gateway.cli.main import main
from gateway.clock import FakeClock, SystemClock
from gateway.stores.sqlite import SqliteDurableStore
from gateway.web.keys import AUDIT
from tests.conftest import Served
from tests.signin_kit import Browsers, Start, enrolled

HOUR = 3600.0
EVENT_KEYS = {
    "id",
    "time",
    "event",
    "outcome",
    "user",
    "ip",
    "user_agent",
    "path",
    "method",
    "request_id",
    "reason",
}


def cli_config(folder: Path) -> str:
    path = folder / "admin.yaml"
    path.write_text(
        "listen: 127.0.0.1:0\nupstream: {url: 'http://127.0.0.1:1'}\n"
        f"state:\n  durable: {{type: sqlite, path: {folder}/gateway.db}}\n"
    )
    return str(path)


async def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real CLI (it runs its own event loop, so in a thread); (exit status, out, err)."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def names(out: str) -> list[str]:
    return [json.loads(line)["event"] for line in out.splitlines()]


class Trail:
    """The audit trail of a gateway, written into the store the commands read."""

    def __init__(self, store: SqliteDurableStore) -> None:
        self.clock = FakeClock(0.0)
        self.trail = AuditTrail(store, self.clock, output="")

    async def at(self, hours_ago: float, name: str, outcome: str = "ok", **fields: str) -> None:
        """An event `hours_ago` before the real now (the commands read the real clock)."""
        self.clock.advance(SystemClock().now() - hours_ago * HOUR - self.clock.now())
        self.trail.record(name, outcome, **fields)
        await self.trail.flush()


@pytest.fixture
async def history(store: SqliteDurableStore) -> Trail:
    """A few days of a gateway's life."""
    trail = Trail(store)
    alice, bob = "203.0.113.7", "198.51.100.3"
    await trail.at(70, "signin.crm_ok", user="alice", ip=alice, request_id="r-old", path="/login")
    await trail.at(50, "challenge.failed", "failed", user="alice", ip=alice, reason="wrong_code")
    await trail.at(2, "challenge.ok", user="bob", ip=bob, request_id="r-bob", path="/_gateway/c")
    await trail.at(1, "challenge.lockout", "locked", user="alice", ip=alice, reason="locked")
    await trail.at(0.2, "admin.token_added", user="carol", method="CLI", id="tok_1")
    return trail


async def test_tail_prints_the_latest_events_oldest_first(
    capsys: pytest.CaptureFixture[str], history: Trail, tmp_path: Path
) -> None:
    code, out, _ = await run(capsys, "audit", "tail", "-n", "2", "-c", cli_config(tmp_path))

    header, *rows = out.splitlines()
    assert code == 0
    assert header.split()[:4] == ["TIME", "(UTC)", "EVENT", "OUTCOME"]
    assert [row.split()[2:4] for row in rows] == [
        ["challenge.lockout", "locked"],
        ["admin.token_added", "ok"],
    ]
    code, out, _ = await run(capsys, "audit", "tail", "--json", "-c", cli_config(tmp_path))
    assert names(out)[0] == "signin.crm_ok" and len(names(out)) == 5  # fewer than 20 exist


async def test_search_by_user_is_canonical_and_since_counts_back_from_now(
    capsys: pytest.CaptureFixture[str], history: Trail, tmp_path: Path
) -> None:
    config = cli_config(tmp_path)

    code, out, _ = await run(capsys, "audit", "search", "--user", " ALICE ", "--json", "-c", config)
    assert (code, names(out)) == (0, ["signin.crm_ok", "challenge.failed", "challenge.lockout"])

    code, out, _ = await run(
        capsys, "audit", "search", "--user", "alice", "--since", "1d", "--json", "-c", config
    )
    assert names(out) == ["challenge.lockout"]

    code, out, _ = await run(capsys, "audit", "search", "--since", "90m", "--json", "-c", config)
    assert names(out) == ["challenge.lockout", "admin.token_added"]


async def test_search_between_utc_dates_and_times(
    capsys: pytest.CaptureFixture[str], history: Trail, tmp_path: Path
) -> None:
    now = SystemClock().now()
    since = datetime.fromtimestamp(now - 60 * HOUR, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    until = datetime.fromtimestamp(now - 1.5 * HOUR, UTC).isoformat()  # with its +00:00

    code, out, _ = await run(
        capsys,
        "audit",
        "search",
        "--since",
        since,
        "--until",
        until,
        "--json",
        "-c",
        cli_config(tmp_path),
    )

    assert (code, names(out)) == (0, ["challenge.failed", "challenge.ok"])
    day = datetime.fromtimestamp(now + 86400, UTC).date().isoformat()
    code, out, _ = await run(capsys, "audit", "search", "--since", day, "-c", cli_config(tmp_path))
    assert (code, out) == (0, "no events matched\n")


async def test_search_by_event_prefix_address_outcome_and_request_id(
    capsys: pytest.CaptureFixture[str], history: Trail, tmp_path: Path
) -> None:
    config = cli_config(tmp_path)

    async def found(*criteria: str) -> list[str]:
        code, out, err = await run(capsys, "audit", "search", *criteria, "--json", "-c", config)
        assert code == 0, err
        return names(out)

    assert await found("--event", "challenge.*") == [
        "challenge.failed",
        "challenge.ok",
        "challenge.lockout",
    ]
    assert await found("--event", "admin.*", "--event", "signin.crm_ok") == [
        "signin.crm_ok",
        "admin.token_added",
    ]
    assert await found("--ip", "198.51.100.3") == ["challenge.ok"]
    assert await found("--outcome", "locked") == ["challenge.lockout"]
    assert await found("--request-id", "r-bob") == ["challenge.ok"]
    assert await found("--event", "challenge.*", "--ip", "203.0.113.7", "--outcome", "ok") == []


async def test_the_table_is_compact_and_escapes_what_requests_put_in(
    capsys: pytest.CaptureFixture[str], history: Trail, tmp_path: Path
) -> None:
    await history.at(0.1, "signin.refused", "refused", user="\x1b]0;owned\x07eve", path="/x")

    code, out, _ = await run(
        capsys, "audit", "search", "--event", "signin.*", "-c", cli_config(tmp_path)
    )

    header, first, last = out.splitlines()
    assert code == 0
    assert header.split() == [
        "TIME",
        "(UTC)",
        "EVENT",
        "OUTCOME",
        "USER",
        "IP",
        "REASON",
        "PATH",
        "REQUEST",
        "ID",
    ]
    assert first.split()[2:] == [
        "signin.crm_ok",
        "ok",
        "alice",
        "203.0.113.7",
        "-",
        "/login",
        "r-old",
    ]
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;owned\\x07eve" in last


async def test_limit_says_when_more_events_matched(
    capsys: pytest.CaptureFixture[str], history: Trail, tmp_path: Path
) -> None:
    config = cli_config(tmp_path)

    code, out, err = await run(capsys, "audit", "search", "--limit", "2", "--json", "-c", config)
    assert (code, names(out)) == (0, ["signin.crm_ok", "challenge.failed"])
    assert "more than 2 events matched" in err

    code, out, err = await run(capsys, "audit", "search", "--limit", "5", "--json", "-c", config)
    assert len(names(out)) == 5
    assert "more than" not in err


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--since", "yesterday"], "--since: must be a duration back from now such as 30m"),
        (["--until", "12 parsecs"], "or a UTC date or time such as 2026-11-22"),
        (["--since", "1h", "--until", "2h"], "--since: must be before --until"),
        (["--event", "chall*ge"], "--event: must be a name or a prefix ending in *"),
        (["--ip", "203.0.113"], "--ip: must be an IP address"),
        (["--limit", "0"], "--limit: must be 1 or more"),
    ],
)
async def test_options_that_cannot_be_understood_exit_2_and_say_what_is_expected(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: list[str], expected: str
) -> None:
    code, out, err = await run(capsys, "audit", "search", *option, "-c", cli_config(tmp_path))

    assert (code, out) == (2, "")
    assert expected in err


async def test_follow_prints_an_event_added_while_following(
    capsys: pytest.CaptureFixture[str], history: Trail, tmp_path: Path
) -> None:
    config = cli_config(tmp_path)
    tail = ["audit", "tail", "-n", "1", "--follow-for", "3", "--json", "-c", config]
    following = asyncio.create_task(run(capsys, *tail))
    printed = ""
    for _ in range(200):  # until the command has shown the latest event and follows
        await asyncio.sleep(0.05)
        printed += capsys.readouterr().out
        if printed:
            break
    await history.at(0, "challenge.ok", user="dave")

    code, out, _ = await following

    assert code == 0
    assert names(printed) == ["admin.token_added"]
    assert names(out) == ["challenge.ok"]
    assert json.loads(out)["user"] == "dave"


async def test_tail_follow_stops_cleanly_on_sigterm(history: Trail, tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "audit",
        "tail",
        "-f",
        "-n",
        "0",
        "-c",
        cli_config(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        header = await asyncio.wait_for(process.stdout.readline(), 30)
        assert header.startswith(b"TIME (UTC)")  # following from here
        await history.at(0, "device.revoked", user="erin")
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"device.revoked" in line and b"erin" in line
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert b"Traceback" not in err


async def test_a_real_sign_in_is_found_by_user_and_request_id_with_no_secret(
    capsys: pytest.CaptureFixture[str],
    crm: Served,
    start: Start,
    browsers: Browsers,
    tmp_path: Path,
) -> None:
    gw = await start(crm.url)
    b = browsers(gw)
    secret, codes = await enrolled(b)
    await gw.served.app[AUDIT].flush()
    config = cli_config(tmp_path / "gw0")  # the store `start` made

    code, out, _ = await run(capsys, "audit", "search", "--user", "alice", "--json", "-c", config)

    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert {"signin.crm_ok", "enrol.completed"} <= {e["event"] for e in events}
    assert all(set(e) >= EVENT_KEYS and e["user"] == "alice" for e in events)
    for text in (secret, *codes, *(c.value for c in b.jar)):
        assert text not in out
    enrol_request = next(e["request_id"] for e in events if e["event"] == "enrol.completed")
    code, out, _ = await run(
        capsys, "audit", "search", "--request-id", enrol_request, "--json", "-c", config
    )
    assert enrol_request
    assert "enrol.completed" in names(out)
    assert "signin.crm_ok" not in names(out)  # another request
    assert {json.loads(line)["request_id"] for line in out.splitlines()} == {enrol_request}
