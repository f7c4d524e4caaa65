"""`state.durable: {type: postgres, …}` in gateway.yaml: the URL, its password given apart like
the other secrets, the pool and the timeouts, and every mistake reported with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import parse_config
from gateway.errors import ConfigError

MINIMAL = "listen: 127.0.0.1:8080\nupstream:\n  url: http://127.0.0.1:8081\n"
URL = "postgresql://gateway@db1.internal:5432/crm_gateway"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return [str(p) for p in caught.value.problems]


def durable(text: str) -> str:
    return MINIMAL + "state:\n  durable:\n    type: postgres\n" + text


def test_defaults_are_a_pool_of_five_and_short_timeouts() -> None:
    store = parse_config(durable(f"    url: {URL}\n")).state.durable

    assert (store.type, store.url, store.password) == ("postgres", URL, "")
    assert (store.max_connections, store.connect_timeout, store.statement_timeout) == (5, 5.0, 10.0)


def test_the_password_comes_from_a_file_or_the_environment_and_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pg.password").write_text("s3cret-from-file\n")
    monkeypatch.setenv("CRM_GATEWAY_PG_PASSWORD", "s3cret-from-env")

    from_file = parse_config(
        durable(f"    url: {URL}\n    password: {{file: {tmp_path / 'pg.password'}}}\n")
    ).state.durable
    from_env = parse_config(
        durable(f"    url: {URL}\n    password: {{env: CRM_GATEWAY_PG_PASSWORD}}\n")
    ).state.durable

    assert from_file.password == "s3cret-from-file"
    assert from_env.password == "s3cret-from-env"
    assert "s3cret" not in repr(from_file) + repr(from_env)


def test_the_whole_url_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_GATEWAY_PG_URL", "postgresql://gateway:pw@db1/crm_gateway")

    config = parse_config(durable("    url: {env: CRM_GATEWAY_PG_URL}\n"))

    assert config.state.durable.url == "postgresql://gateway:pw@db1/crm_gateway"
    assert config.warnings == () or all("password" not in str(w) for w in config.warnings)


def test_a_password_written_inline_is_warned_about() -> None:
    config = parse_config(durable("    url: postgresql://gateway:pw@db1/crm_gateway\n"))

    assert [str(w) for w in config.warnings if "state" in str(w)] == [
        "gateway.yaml:7: state.durable.url: carries a password written inline; prefer "
        "password: {file: PATH} or {env: NAME}"
    ]


def test_pool_and_timeouts_are_read_and_bounded() -> None:
    store = parse_config(
        durable(
            f"    url: {URL}\n    max_connections: 12\n    timeouts: {{connect: 2s, statement: 30s}}\n"
        )
    ).state.durable
    assert (store.max_connections, store.connect_timeout, store.statement_timeout) == (
        12,
        2.0,
        30.0,
    )

    assert problems(durable(f"    url: {URL}\n    max_connections: 0\n")) == [
        "gateway.yaml:8: state.durable.max_connections: must be at least 1 but it's 0"
    ]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("", "gateway.yaml:6: state.durable: url: is required for postgres"),
        (
            "    url: mysql://db1/crm\n",
            "gateway.yaml:7: state.durable.url: must be postgresql://user@host:5432/database",
        ),
        (
            "    url: postgresql://db1:5432\n",
            "gateway.yaml:7: state.durable.url: must be postgresql://user@host:5432/database",
        ),
        (
            "    url: postgresql://gateway:pw@db1/crm\n    password: {env: HOME}\n",
            "gateway.yaml:8: state.durable.password: the url carries a password already",
        ),
        (
            f"    url: {URL}\n    timeouts: {{statement: soon}}\n",
            "gateway.yaml:8: state.durable.timeouts.statement: must be a duration",
        ),
    ],
)
def test_mistakes_are_reported_with_their_line(written: str, expected: str) -> None:
    [found] = problems(durable(written))

    assert found.startswith(expected)


def test_keys_of_postgres_on_another_kind_are_refused() -> None:
    found = problems(
        MINIMAL + "state:\n  durable: {type: sqlite, path: x.db, max_connections: 3}\n"
    )

    assert found == [
        "gateway.yaml:5: state.durable.max_connections: is a key of type: postgres, not of "
        "type: sqlite"
    ]
