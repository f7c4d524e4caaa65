"""The `forward_auth` section of gateway.yaml (gateway/config/forwardauth.py)."""

from __future__ import annotations

import pytest

from gateway.config.forwardauth import ForwardAuth, read_forward_auth
from gateway.config.load import parse_config
from gateway.config.yaml_reader import Source
from gateway.errors import ConfigError

MINIMAL = "listen: 127.0.0.1:0\nupstream: {url: http://127.0.0.1:9}\n"


def test_without_the_section_there_is_no_endpoint() -> None:
    assert parse_config(MINIMAL).forward_auth is None


def test_an_empty_section_turns_it_on_with_the_usual_header_names() -> None:
    settings = parse_config(MINIMAL + "forward_auth: {}\n").forward_auth
    assert settings == ForwardAuth("Remote-User", "Remote-Groups", 2.0)


def test_every_key_is_read() -> None:
    text = MINIMAL + (
        "forward_auth:\n  user_header: X-Auth-User\n  groups_header: X-Auth-Groups\n"
        "  session_cache: 500ms\n"
    )
    assert parse_config(text).forward_auth == ForwardAuth("X-Auth-User", "X-Auth-Groups", 0.5)
    off = parse_config(MINIMAL + "forward_auth: {session_cache: 0}\n").forward_auth
    assert off is not None and off.session_cache == 0.0


def test_every_problem_is_reported_with_its_line_and_key() -> None:
    text = MINIMAL + (
        "forward_auth:\n"
        "  user_header: Remote_User\n"
        "  groups_header: Cookie\n"
        "  session_cache: 5m\n"
        "  user: bob\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert str(caught.value).splitlines() == [
        "gateway.yaml:7: forward_auth.user: unknown key "
        "(known here: groups_header, session_cache, user_header)",
        "gateway.yaml:4: forward_auth.user_header: must be a header name (letters, digits, -) "
        "but it's 'Remote_User'",
        "gateway.yaml:5: forward_auth.groups_header: must not be a header the gateway "
        "manages: 'Cookie'",
        "gateway.yaml:6: forward_auth.session_cache: must be at most 1m",
    ]


def test_the_two_names_must_differ() -> None:
    text = MINIMAL + "forward_auth: {user_header: X-User, groups_header: x-user}\n"
    with pytest.raises(ConfigError, match="groups_header: must differ from user_header"):
        parse_config(text)


def test_with_gateway_login_the_user_header_is_the_one_the_crm_already_reads() -> None:
    # gateway.config.load gives login.identity_header when login.mode is gateway.
    source = Source("gateway.yaml")
    root = source.parse("forward_auth: {}\n")
    assert root is not None
    keys = root.mapping({"forward_auth"})
    assert keys is not None
    assert read_forward_auth(keys, "X-Remote-User") == ForwardAuth("X-Remote-User")
    root = source.parse("forward_auth: {user_header: X-Auth}\n")
    assert root is not None
    keys = root.mapping({"forward_auth"})
    assert keys is not None
    assert read_forward_auth(keys, "X-Remote-User") == ForwardAuth("X-Auth")
