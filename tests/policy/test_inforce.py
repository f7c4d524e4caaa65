"""gateway.policy.inforce: the files in force, kept in the durable store, hold a gateway that
starts after an unconfirmed edit to them, as the running gateways' watchers hold it (stop 28,
helper-63: a restarted instance served a cut-down file its peers held back). An edit that
would load while running loads at the start too; a note that does not read is passed over.
Real gateways on one SQLite store, a real echo CRM, the real CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.config.model import StoreConfig
from gateway.policy.inforce import IN_FORCE_NOTE, Snapshot, decode, read_snapshot
from gateway.stores import open_durable
from tests.conftest import GatewayFactory, Served
from tests.policy.test_live import FULL, PREFIX, edit, guard, status
from tests.process import run_command, write_config


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    found = tmp_path / "policies"
    found.mkdir()
    (found / "policy.yaml").write_text(FULL)
    return found


async def _note(tmp_path: Path) -> str:
    store = await open_durable(StoreConfig("sqlite", str(tmp_path / "gateway.db")), create=False)
    try:
        return await store.note(IN_FORCE_NOTE)
    finally:
        await store.close()


async def test_a_gateway_started_after_an_unconfirmed_edit_holds_it_back(
    upstream: Served,
    start_gateway: GatewayFactory,
    folder: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await start_gateway(upstream.url, f"policies: {folder}\n")
    assert await status(first) == 403
    edit(folder, PREFIX, 1)  # cut down to a valid prefix while it runs
    await guard(first).look()
    await guard(first).look()
    assert await status(first) == 403  # held back

    caplog.set_level(logging.INFO, "gateway.policy")
    later = await start_gateway(upstream.url, f"policies: {folder}\n")  # an instance restarted
    assert await status(later) == 403  # held back there too: one policy in force
    held = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
    assert any("held back (started after an edit)" in message for message in held)
    # The rules in force are named as they were written, in the policy folder.
    files = {rule.where.file for rule in guard(later).policy.paths}
    assert files == {str(folder / "policy.yaml")}, files

    # A person confirms the files with the CLI: both load them at their next look.
    config = write_config(tmp_path, upstream.url, f"policies: {folder}\n")
    result = run_command("policy", "reload", "-c", str(config))
    assert result.returncode == 0, result.stderr
    for gw in (first, later):
        await guard(gw).look()
        assert await status(gw) == 200
    assert decode(await _note(tmp_path)) == read_snapshot(folder)  # the confirmed ones now


async def test_an_edit_that_would_load_while_running_loads_at_the_start(
    upstream: Served, start_gateway: GatewayFactory, folder: Path, tmp_path: Path
) -> None:
    first = await start_gateway(upstream.url, f"policies: {folder}\n")
    assert await status(first, "/open/x") == 403
    await first.runner.cleanup()
    edit(folder, FULL.replace("/public/**", "/open/**"), 1)  # one rule moved: an edit
    later = await start_gateway(upstream.url, f"policies: {folder}\n")
    assert await status(later, "/open/x") == 200
    assert decode(await _note(tmp_path)) == read_snapshot(folder)


@pytest.mark.parametrize("note", ["not json", '{"files": 3}', '{"files": {"a.yaml": "%%"}}'])
async def test_a_note_that_does_not_read_is_passed_over(
    upstream: Served, start_gateway: GatewayFactory, folder: Path, tmp_path: Path, note: str
) -> None:
    store = await open_durable(StoreConfig("sqlite", str(tmp_path / "gateway.db")), create=True)
    try:
        await store.set_note(IN_FORCE_NOTE, note)
    finally:
        await store.close()
    edit(folder, PREFIX, 1)
    gw = await start_gateway(upstream.url, f"policies: {folder}\n")
    assert await status(gw) == 200  # the files on disk, as before the note existed
    assert decode(await _note(tmp_path)) == read_snapshot(folder)  # and noted now


def test_a_snapshot_reads_back_as_written_and_never_names_a_path_outside(tmp_path: Path) -> None:
    snapshot = Snapshot((("a.yaml", b"paths: []\n"), ("b.yml", b"\xff\x00")))
    assert decode(snapshot.encode()) == snapshot
    assert decode(snapshot.encode()).digest == snapshot.digest  # type: ignore[union-attr]
    tampered = '{"files": {"../x.yaml": "", "/etc/y.yaml": "", "ok.yaml": ""}}'
    assert decode(tampered) == Snapshot((("ok.yaml", b""),))
    assert decode("") is None
