"""Admin commands and the durable store, run as the real `python -m gateway`: the store is
found from gateway.yaml's folder wherever the command is run from, a command never creates
one, and a store that is missing or cannot be used is named in one line with exit status 1."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gateway.clock import FakeClock
from gateway.config.load import load_config
from gateway.crypto import new_key_line
from gateway.stores.sqlite import SqliteDurableStore
from gateway.web.app import build_app
from gateway.web.guard import GUARD
from tests.conftest import Served, serve
from tests.process import run_command
from tests.signin_kit import DEMO_LOGIN, DEMO_POLICY, Browser, Browsers, SignInGateway, enrolled

# Every path relative, as an operator writes them: to the folder of this file.
SITE_CONFIG = """\
listen: 127.0.0.1:0
upstream: {{url: '{crm}'}}
state: {{durable: {{type: sqlite, path: data/gateway.db}}}}
policies: policies
audit: {{file: logs/audit.jsonl}}
logging: {{access_log: false}}
secrets:
  session_keys: {{file: keys/session.keys}}
  seal_keys: {{file: keys/seal.keys}}
"""


def write_site(site: Path, crm_url: str) -> Path:
    """A gateway's folder: gateway.yaml, its policies, keys, and folders for data and logs."""
    for folder in ("policies", "keys", "data", "logs"):
        (site / folder).mkdir(parents=True, exist_ok=True)
    (site / "policies" / "policy.yaml").write_text(DEMO_POLICY)
    for name in ("session", "seal"):
        (site / "keys" / f"{name}.keys").write_text(new_key_line("k1") + "\n")
    config = site / "gateway.yaml"
    config.write_text(SITE_CONFIG.format(crm=crm_url) + DEMO_LOGIN)
    return config


@pytest.fixture
async def site_gw(
    crm: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SignInGateway]:
    """A gateway started in its own folder (as a service starts), from gateway.yaml there."""
    site = tmp_path / "site"
    config = write_site(site, crm.url)
    monkeypatch.chdir(site)
    # A day before the commands' real clock: their "now" comes after every session made here.
    clock = FakeClock(time.time() - 86400)
    served = await serve(build_app(load_config(config), clock=clock), handler_cancellation=True)
    monkeypatch.chdir(tmp_path)
    yield SignInGateway(served, clock)
    await served.runner.cleanup()


async def command_from(
    folder: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` run in `folder` (off this test's event loop: the gateway here
    keeps serving meanwhile)."""
    return await asyncio.to_thread(run_command, *args, stdin=stdin, cwd=folder)


async def signed_out(b: Browser) -> bool:
    """True once the gateway has ended the browser's session (it looks every 2 s)."""
    for _ in range(60):
        if (await b.get("/contacts"))[0] == 302:
            return True
        await asyncio.sleep(0.1)
    return False


async def api_status(gw: SignInGateway, token: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{gw.url}/api/contacts", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        return r.status


async def test_admin_commands_run_from_another_folder_act_on_the_gateways_store(
    site_gw: SignInGateway, browsers: Browsers, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = "../site/gateway.yaml"  # relative to where the command runs, as typed
    alice, bob = browsers(site_gw), browsers(site_gw)
    await enrolled(alice)
    await enrolled(bob, "bob", "bob-demo")
    site_gw.clock.advance(1)

    assert await api_status(site_gw, "demo-token-carol") == 401  # not registered yet
    added = await command_from(
        elsewhere, "tokens", "add", "--user", "carol", "-c", config, stdin="demo-token-carol\n"
    )
    assert added.returncode == 0, added.stderr
    await site_gw.served.app[GUARD].refresh_tokens()  # what the gateway does every 2 s
    assert await api_status(site_gw, "demo-token-carol") == 200  # the CRM's own answer

    revoked = await command_from(elsewhere, "sessions", "revoke", "alice", "-c", config)
    assert revoked.returncode == 0, revoked.stderr
    assert await signed_out(alice)

    reset = await command_from(elsewhere, "users", "reset-2fa", "bob", "-c", config)
    assert reset.returncode == 0, reset.stderr
    assert "bob: 1 authenticators removed" in reset.stdout
    assert await site_gw.signin.totp.authenticators("bob") == []

    assert list(elsewhere.iterdir()) == []  # no store (or anything) made where they ran
    events = (tmp_path / "site" / "logs" / "audit.jsonl").read_text()
    assert '"admin.sessions_revoked"' in events  # the gateway's own audit file


# -- a store that is not there ---------------------------------------------------------------

ADMIN_COMMANDS = [
    ("tokens", "add", "--user", "alice"),
    ("tokens", "list"),
    ("tokens", "revoke", "tok_0123456789ab"),
    ("users", "list"),
    ("users", "show", "alice"),
    ("users", "reset-2fa", "alice"),
    ("users", "unlock", "alice"),
    ("sessions", "revoke", "alice"),
    ("recovery", "regenerate", "alice"),
    ("keys", "rotate"),
    ("audit", "tail"),
    ("audit", "search", "--since", "1d"),
    ("sms-usage", "--quarter", "2026Q3"),
]


def config_naming(folder: Path, store: str) -> Path:
    """A gateway.yaml in `folder` whose durable store is `store` (relative to `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seal.keys").write_text(new_key_line("k1") + "\n")
    config = folder / "gateway.yaml"
    config.write_text(
        "listen: 127.0.0.1:0\nupstream: {url: 'http://127.0.0.1:9'}\n"
        f"state: {{durable: {{type: sqlite, path: '{store}'}}}}\n"
        "secrets: {seal_keys: {file: seal.keys}}\n"
    )
    return config


@pytest.mark.parametrize("command", ADMIN_COMMANDS, ids=" ".join)
def test_a_missing_store_is_named_and_never_created(tmp_path: Path, command: tuple[str]) -> None:
    config = config_naming(tmp_path / "site", "data/gateway.db")
    store = tmp_path / "site" / "data" / "gateway.db"
    result = run_command(
        *command, "-c", str(config), stdin="a-token-of-sixteen-chars\n", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    (line,) = [x for x in result.stderr.splitlines() if not x.startswith("warning:")]
    assert f"no durable store at {store} (state.durable.path in {config})" in line
    assert not store.parent.exists()  # not the store, nor its folder
    assert not (tmp_path / "data").exists() and not (tmp_path / "gateway.db").exists()


def test_backup_of_a_missing_store_names_it_and_creates_nothing(tmp_path: Path) -> None:
    config = config_naming(tmp_path / "site", "gateway.db")
    result = run_command("backup", str(tmp_path / "b.cgb"), "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert f"no store at {tmp_path / 'site' / 'gateway.db'}" in result.stderr
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == ["gateway.yaml", "seal.keys"]


# -- a store that cannot be used -------------------------------------------------------------


async def make_store(path: Path) -> None:
    """A store as the gateway leaves it: made, WAL, closed (its -wal and -shm files gone)."""
    store = SqliteDurableStore(str(path))
    await store.open()
    await store.close()


def read_only_by_its_header(path: Path) -> None:
    """Marks the file with SQLite's "write version" 3 (offset 18): every SQLite opens it
    read-only, whoever runs the command. chmod would not do: tests may run as root."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")  # WAL's own header value is 2, read or write
    with path.open("r+b") as file:
        file.seek(18)
        file.write(bytes([3, 1]))


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Path]:
    """A store whose file and folder are immutable (chattr +i): root cannot write them
    either. Skipped where the file system has no such flag (tmpfs, overlay without it)."""
    folder = tmp_path / "frozen"
    folder.mkdir()
    store = folder / "gateway.db"
    asyncio.run(make_store(store))
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: the header test covers read-only stores")
    frozen = subprocess.run(["chattr", "+i", str(store), str(folder)], capture_output=True)
    if frozen.returncode != 0:
        pytest.skip(f"chattr +i is refused here: {frozen.stderr.decode().strip()}")
    try:
        yield store
    finally:
        subprocess.run(["chattr", "-i", str(store), str(folder)], check=True)


async def test_a_read_only_store_is_named_in_one_line_and_still_read(tmp_path: Path) -> None:
    config = config_naming(tmp_path, "gateway.db")
    store = tmp_path / "gateway.db"
    await make_store(store)
    read_only_by_its_header(store)
    revoke = await asyncio.to_thread(run_command, "sessions", "revoke", "alice", "-c", str(config))
    assert revoke.returncode == 1
    assert "Traceback" not in revoke.stderr
    (line,) = [x for x in revoke.stderr.splitlines() if not x.startswith("warning:")]
    assert line == (
        f"the durable store {store} cannot be used (state.durable.path in {config}): "
        "attempt to write a readonly database"
    )
    listing = await asyncio.to_thread(run_command, "users", "list", "-c", str(config))
    assert listing.returncode == 0, listing.stderr  # reading needs no writing


def test_an_immutable_store_is_named_in_one_line(immutable: Path) -> None:
    config = config_naming(immutable.parent.parent / "conf", str(immutable))
    result = run_command("tokens", "revoke", "tok_0123456789ab", "-c", str(config))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if not x.startswith("warning:")]
    assert line.startswith(f"the durable store {immutable} cannot be used (state.durable.path")


def test_a_store_that_is_not_a_database_file_is_named_in_one_line(tmp_path: Path) -> None:
    config = config_naming(tmp_path, "gateway.db")
    (tmp_path / "gateway.db").mkdir()  # a folder where the file should be: root cannot open it
    result = run_command("users", "reset-2fa", "alice", "-c", str(config))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if not x.startswith("warning:")]
    assert line.startswith(f"the durable store {tmp_path / 'gateway.db'} cannot be used")
    assert os.listdir(tmp_path / "gateway.db") == []
