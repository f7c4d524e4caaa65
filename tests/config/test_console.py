"""`admin.console` read into frozen values, every problem with its file, line and key."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.config.console import Console
from gateway.config.load import parse_config
from gateway.errors import ConfigError

BASE = (
    "listen: 127.0.0.1:8080\nupstream: {url: 'http://127.0.0.1:8081'}\n"
    "login:\n  mode: gateway\n  users_file: /dev/null\n"
    "secrets: {session_keys: {env: K}, seal_keys: {env: K}}\n"
)


def console(text: str, base: str = BASE) -> Console | None:
    return parse_config(base + text, "gateway.yaml").admin.console


def problems(text: str, base: str = BASE) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(base + text, "gateway.yaml")
    return [str(p) for p in raised.value.problems]


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.crypto import new_key_line

    monkeypatch.setenv("K", new_key_line("k1"))


def test_a_console_under_the_prefix_by_default_with_each_rank_from_its_own_role() -> None:
    found = console("admin:\n  console: {networks: [office, 10.1.0.0/16]}\n")
    assert found == Console(networks=("office",), cidrs=(ipaddress.ip_network("10.1.0.0/16"),))
    assert found.at == "prefix" and found.fresh == 900.0
    assert found.rank_of(("helpdesk", "staff")) == 2
    assert found.rank_of(("auditor", "admin")) == 3
    assert found.rank_of(("staff",)) == 0
    assert console("") is None  # off unless configured


def test_roles_fresh_and_rates_are_set_here() -> None:
    found = console(
        "admin:\n  listen: 127.0.0.1:9100\n  console:\n    at: admin_listener\n"
        "    networks: [office]\n    roles: {helpdesk: [it-support, servicedesk], admin: []}\n"
        "    fresh: 5m\n    rate: {read: 30, act: 3}\n"
    )
    assert found is not None
    assert found.at == "admin_listener"
    assert dict(found.roles) == {
        "auditor": ("auditor",),
        "helpdesk": ("it-support", "servicedesk"),
        "admin": (),
    }
    assert (found.fresh, found.reads_per_minute, found.actions_per_minute) == (300.0, 30, 3)
    assert found.rank_of(("admin",)) == 0


def test_every_problem_is_named_with_its_key() -> None:
    found = problems(
        "admin:\n  console:\n    at: elsewhere\n    networks: [10.0.0.0/33]\n"
        "    roles: {root: [x]}\n    fresh: 1s\n    rate: {read: 0}\n    colour: red\n"
    )
    text = "\n".join(found)
    assert "admin.console.colour: unknown key" in text
    assert "admin.console.at: must be one of admin_listener, prefix" in text
    assert "admin.console.networks[0]: must be a network such as 10.0.0.0/8" in text
    assert "admin.console.roles.root: unknown key" in text
    assert "admin.console.fresh: must be at least 30.0" in text
    assert "admin.console.rate.read: must be at least 1" in text


def test_networks_are_required_and_the_admin_listener_needs_an_address() -> None:
    assert any("networks: is required" in p for p in problems("admin:\n  console: {}\n"))
    found = problems("admin:\n  console: {at: admin_listener, networks: [office]}\n")
    assert any("needs admin.listen" in p for p in found)


def test_a_console_needs_sign_in() -> None:
    base = "listen: 127.0.0.1:8080\nupstream: {url: 'http://127.0.0.1:8081'}\n"
    found = problems("admin:\n  console: {networks: [office]}\n", base)
    assert any("admin.console: needs a login section" in p for p in found)
