"""Passkeys for the operator, through the real `python -m gateway` process: check-config refuses
a policy naming passkeys that gateway.yaml cannot make (file, line, key), `users show` lists a
user's passkeys, `users reset-2fa` removes them, `policy explain` says who is held to them."""

from __future__ import annotations

import json
from pathlib import Path

from fido2.utils import websafe_decode

from gateway.clock import FakeClock
from gateway.config.signin import Limits
from gateway.config.webauthn import WebAuthn
from gateway.crypto import Sealer, new_key_line, parse_keys
from gateway.factors.webauthn import WebAuthnFactor
from gateway.signin.regulation import Regulator
from gateway.stores.memory import MemorySharedStore
from gateway.stores.sqlite import SqliteDurableStore
from tests.factors.test_webauthn import RECORDED
from tests.process import run_command, run_command_async

MINIMAL = "listen: 127.0.0.1:8080\nupstream:\n  url: http://127.0.0.1:8081\n"
POLICY = """\
defaults:
  factors: [totp, recovery]
roles:
  admin:
    phishing_resistant: true
users:
  ada: {roles: [admin]}
"""


def files(tmp_path: Path, config: str) -> Path:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "policy.yaml").write_text(POLICY)
    path = tmp_path / "gateway.yaml"
    state = f"state:\n  durable: {{type: sqlite, path: {tmp_path}/gateway.db}}\n"
    path.write_text(MINIMAL + state + f"policies: {tmp_path}/policies\n" + config)
    return path


def test_passkeys_named_without_public_url_stop_check_config_at_the_policy_line(
    tmp_path: Path,
) -> None:
    path = files(tmp_path, "")

    checked = run_command("check-config", "-c", str(path))

    assert checked.returncode == 2
    policy = tmp_path / "policies" / "policy.yaml"
    assert checked.stderr.splitlines()[-2:] == [
        f"{policy}:5: roles.admin.phishing_resistant: names webauthn, which this gateway cannot "
        f"offer: public_url is not set in {path}",
        f"{path}: the policies name factors it cannot offer",
    ]
    started = run_command("run", "-c", str(path))
    assert started.returncode == 2  # the gateway does not start on it either
    assert "cannot offer" in started.stderr


def test_an_http_public_url_is_not_enough_for_passkeys(tmp_path: Path) -> None:
    path = files(tmp_path, "public_url: http://crm.example.com\n")

    checked = run_command("check-config", "-c", str(path))

    assert checked.returncode == 2
    assert "public_url http://crm.example.com is not https://" in checked.stderr


def test_with_an_https_public_url_the_same_files_are_fine(tmp_path: Path) -> None:
    path = files(tmp_path, "public_url: https://crm.example.com\n")

    checked = run_command("check-config", "-c", str(path))

    assert (checked.returncode, checked.stdout.strip()) == (0, f"{path}: OK")


async def test_users_show_lists_passkeys_and_reset_2fa_removes_them(tmp_path: Path) -> None:
    path = files(tmp_path, "public_url: https://crm.example.com\n")
    store = SqliteDurableStore(str(tmp_path / "gateway.db"), create=True)
    await store.open()
    clock = FakeClock(1_800_000_000.0)
    shared = MemorySharedStore(clock)
    recorded = RECORDED["register_alice"]
    factor = WebAuthnFactor(
        store,
        shared,
        Regulator(shared, clock, Limits()),
        Sealer(parse_keys(new_key_line("k1"))),
        clock,
        WebAuthn("localhost", RECORDED["origin"], "CRM", unavailable=""),
        new_challenge=lambda: websafe_decode(recorded["challenge"]),
    )
    await factor.registration("ada", "s")
    assert (await factor.register("ada", "s", json.dumps(recorded["response"]), "YubiKey")).ok
    await store.close()

    code, out, _ = await run_command_async("users", "show", "ada", "-c", str(path))
    assert code == 0
    assert (
        "authenticators: 1\n  - YubiKey: passkey or security key (added 2027-01-15 08:00:00" in out
    )
    code, out, _ = await run_command_async("users", "show", "ada", "--json", "-c", str(path))
    assert [(a["name"], a["kind"]) for a in json.loads(out)["authenticators"]] == [
        ("YubiKey", "webauthn")
    ]
    code, out, _ = await run_command_async("users", "reset-2fa", "ada", "-c", str(path))
    assert code == 0
    assert out.startswith("ada: 1 authenticators removed")
    code, out, _ = await run_command_async("users", "show", "ada", "--json", "-c", str(path))
    assert json.loads(out)["authenticators"] == []


async def test_policy_explain_says_who_is_held_to_passkeys(tmp_path: Path) -> None:
    path = files(tmp_path, "public_url: https://crm.example.com\n")

    code, out, _ = await run_command_async(
        "policy", "explain", "-c", str(path), "--user", "ada", "--ip", "10.0.0.1"
    )

    assert code == 0
    assert "factors: webauthn\nphishing-resistant only: yes" in out
    policy = tmp_path / "policies" / "policy.yaml"
    assert f"role admin: phishing-resistant factors only: webauthn  ({policy}:5)" in out
