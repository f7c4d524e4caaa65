"""Reloads that cannot open the doors (issue #21, item 1).

The watcher used to read a policy every 2 s: a file saved in two steps, or truncated to a
valid prefix (`paths: [{path: "/**", allow: [anyone]}]`), was loaded, and a path and an
address the full file denies got 200. Now a file is read only once it stayed unchanged for a
whole look, a reload logs what it changed, and a watched change that removes every deny list
or most path rules waits for `crm-gateway policy reload` or SIGHUP.
Real gateway, real echo CRM, the real CLI; the watcher's looks are driven by the test.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from pathlib import Path

import aiohttp
import pytest

from gateway.policy.load import load_policies
from gateway.policy.model import Policy
from gateway.web.app import build_app
from gateway.web.guard import GUARD, Guard
from tests.conftest import GatewayFactory, Served, gateway_config, serve
from tests.process import run_command, write_config

FULL = """\
networks:
  office: [127.0.0.0/8]
  blocked: [127.0.0.9/32]
organisation:
  deny: [blocked]
roles:
  admin: {networks: [office]}
users:
  ann: {roles: [admin]}
paths:
  - {path: /admin/**, allow: [role:admin]}
  - {path: /reports/**, methods: [GET], allow: [role:admin]}
  - {path: /reports/**, allow: [role:admin]}
  - {path: /public/**, allow: [anyone]}
"""
PREFIX = 'paths: [{path: "/**", allow: [anyone]}]\n'  # a valid start of some other file


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    found = tmp_path / "policies"
    found.mkdir()
    (found / "policy.yaml").write_text(FULL)
    return found


@pytest.fixture
async def gw(upstream: Served, start_gateway: GatewayFactory, folder: Path) -> Served:
    return await start_gateway(upstream.url, f"policies: {folder}\n")


def guard(gw: Served) -> Guard:
    return gw.app[GUARD]


async def status(gw: Served, path: str = "/admin/users") -> int:
    async with aiohttp.ClientSession() as http, http.get(gw.url + path) as r:
        return r.status


def edit(folder: Path, text: str, step: int) -> None:
    """Write the file and make it look changed even within one tick of the file clock."""
    path = folder / "policy.yaml"
    path.write_text(text)
    stamp = path.stat().st_mtime_ns + step * 1_000_000
    os.utime(path, ns=(stamp, stamp))


async def test_a_file_saved_in_two_steps_is_never_read_half_written(
    gw: Served, folder: Path
) -> None:
    assert await status(gw) == 403  # anonymous: the admin area is the admin role's
    edit(folder, PREFIX, 1)  # the editor's first write…
    await guard(gw).look()
    assert await status(gw) == 403  # …seen once: not read yet
    edit(folder, FULL.replace("/public/**", "/open/**"), 2)  # …and the rest of the file
    await guard(gw).look()
    assert await status(gw) == 403
    await guard(gw).look()  # unchanged for a whole look: read, and it is the whole file
    assert await status(gw, "/open/x") == 200
    assert await status(gw) == 403


async def test_a_change_that_removes_every_deny_and_most_rules_waits_for_a_person(
    upstream: Served, gw: Served, folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    edit(folder, PREFIX, 1)  # truncated to a valid prefix, and left so
    caplog.set_level(logging.INFO, "gateway.policy")
    for _ in range(4):
        await guard(gw).look()
    assert await status(gw) == 403  # still the full file's answer
    held = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
    assert "removes every deny list" in held[0]
    assert "crm-gateway policy reload" in held[0]
    assert any("path rules removed (4)" in line for line in held)
    assert len([m for m in held if "policy change held back (" in m]) == 1  # said once

    # A person confirms it with the CLI, which writes to the gateway's store.
    config = write_config(tmp_path, upstream.url, f"policies: {folder}\n")
    result = run_command("policy", "reload", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "confirmed" in result.stdout
    await guard(gw).look()
    assert await status(gw) == 200  # the confirmed file is what they wanted


async def test_sighup_loads_a_held_change_at_once(gw: Served, folder: Path) -> None:
    edit(folder, PREFIX, 1)
    await guard(gw).look()
    await guard(gw).look()
    assert await status(gw) == 403
    assert await guard(gw).reload("SIGHUP")  # what the signal handler calls
    assert await status(gw) == 200


async def test_a_reload_logs_what_it_changed_and_whose_access_widened(
    gw: Served, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "gateway.policy")
    wider = FULL.replace("office: [127.0.0.0/8]", "office: [127.0.0.0/8, 10.0.0.0/8]").replace(
        "  - {path: /public/**, allow: [anyone]}\n",
        "  - {path: /public/**, allow: [anyone]}\n  - {path: /files/**, allow: [role:admin]}\n",
    )
    edit(folder, wider, 1)
    await guard(gw).look()
    await guard(gw).look()
    lines = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("policy reloaded:")
    ]
    assert "policy reloaded: path rules added (1): any method /files/** allow role:admin" in lines
    assert "policy reloaded: users whose access widened (1): ann" in lines


async def test_the_share_that_holds_a_change_is_configurable(
    upstream: Served, start_gateway: GatewayFactory, folder: Path
) -> None:
    gw = await start_gateway(
        upstream.url, f"policies: {folder}\npolicy_reload: {{hold_share: 100%}}\n"
    )
    # Every rule removed but the deny list kept: under a share of 100 %, not held.
    kept_deny = FULL.split("paths:")[0] + PREFIX
    edit(folder, kept_deny, 1)
    await guard(gw).look()
    await guard(gw).look()
    assert await status(gw) == 200


async def test_the_audit_trail_records_a_held_change(
    gw: Served, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(folder, PREFIX, 1)
    await guard(gw).look()
    await guard(gw).look()
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "{" in line]
    held = [e for e in events if e["event"] == "policy.reload_held"]
    assert held and held[0]["outcome"] == "refused"
    assert "deny" in held[0]["reason"]


def test_rules_added_where_there_were_none_narrow_and_widen_nobody(tmp_path: Path) -> None:
    """Without path rules every path passes: adding rules is not a widening; removing them
    all is, for everyone."""
    from gateway.policy.change import compare
    from gateway.policy.load import load_policies

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "p.yaml").write_text(FULL.split("paths:")[0])
    (tmp_path / "b" / "p.yaml").write_text(FULL)
    none, some = load_policies(tmp_path / "a"), load_policies(tmp_path / "b")
    assert compare(none, some, hold_share=0.5).widened == ()
    assert compare(some, none, hold_share=0.5).widened == ("ann",)


async def test_a_change_that_lifts_an_allow_list_or_unblocks_waits_for_a_person(
    gw: Served, folder: Path
) -> None:
    """Protection taken away whole (an allow list gone, a deny entry gone with nothing in its
    place) is what a file cut short looks like: held. Moving a deny entry is an edit."""
    lifted = FULL.replace("admin: {networks: [office]}", "admin: {}")
    edit(folder, lifted, 1)
    await guard(gw).look()
    await guard(gw).look()
    assert guard(gw).view.policy.roles["admin"].networks is not None  # still the old one
    moved = FULL.replace("blocked: [127.0.0.9/32]", "blocked: [127.0.0.8/32]")
    edit(folder, moved, 2)
    await guard(gw).look()
    await guard(gw).look()
    assert guard(gw).view.policy.networks["blocked"] != (ipaddress.ip_network("127.0.0.9/32"),)


# -- a worker forked with a copy read long before -----------------------------------------


async def _worker_with(upstream: Served, tmp_path: Path, folder: Path, policy: Policy) -> Served:
    """A gateway started as a worker is: with the policy its supervisor read at the start."""
    config = gateway_config(upstream.url, tmp_path, f"policies: {folder}\n")
    return await serve(build_app(config, policy=policy))


async def test_a_worker_forked_with_a_policy_read_before_the_files_changed_reads_them_at_start(
    upstream: Served, folder: Path, tmp_path: Path
) -> None:
    """A worker replaced hours after the start is forked with the supervisor's copy: it used
    to note the files as they are now, never see them change, and serve the old policy."""
    read_at_start = load_policies(folder)
    edit(folder, FULL.replace("/public/**", "/open/**"), 1)
    worker = await _worker_with(upstream, tmp_path, folder, read_at_start)
    try:
        assert await status(worker, "/open/x") == 200  # the files as they are now
        assert await status(worker, "/public/x") == 403
    finally:
        await worker.runner.cleanup()


async def test_a_change_a_person_confirmed_by_sighup_is_loaded_by_a_worker_started_later(
    upstream: Served, gw: Served, folder: Path, tmp_path: Path
) -> None:
    read_at_start = load_policies(folder)
    edit(folder, PREFIX, 1)  # a change the watcher would hold back
    assert await guard(gw).reload("SIGHUP")  # …which a person asked for
    assert await status(gw) == 200
    worker = await _worker_with(upstream, tmp_path, folder, read_at_start)
    try:
        assert await status(worker) == 200  # the same policy as the running gateway
    finally:
        await worker.runner.cleanup()


async def test_a_change_nobody_confirmed_is_held_by_a_worker_started_later_too(
    upstream: Served, gw: Served, folder: Path, tmp_path: Path
) -> None:
    read_at_start = load_policies(folder)
    edit(folder, PREFIX, 1)
    await guard(gw).look()
    await guard(gw).look()
    assert await status(gw) == 403  # held back
    worker = await _worker_with(upstream, tmp_path, folder, read_at_start)
    try:
        assert await status(worker) == 403  # held back there as well: one policy in force
    finally:
        await worker.runner.cleanup()
