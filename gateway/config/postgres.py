"""Reading `state.durable: {type: postgres, …}`: the URL, its password given apart like the
other secrets, the pool's size and the timeouts. Opens no connection (check-config only
looks for the driver, in gateway.config.sections)."""

from __future__ import annotations

from urllib.parse import urlsplit

from yaml.nodes import ScalarNode

from gateway.config.model import StoreConfig
from gateway.config.yaml_reader import Value

# Keys only a postgres store takes (another kind that names one is told so).
POSTGRES_KEYS = frozenset({"password", "max_connections", "timeouts"})
_DEFAULT = StoreConfig("postgres")


def _timeouts(value: Value) -> tuple[float, float]:
    keys = value.mapping({"connect", "statement"}) or {}
    found = {name: keys[name].duration(minimum=0.1) for name in keys}
    connect, statement = found.get("connect"), found.get("statement")
    return (
        _DEFAULT.connect_timeout if connect is None else connect,
        _DEFAULT.statement_timeout if statement is None else statement,
    )


def read_postgres(keys: dict[str, Value], value: Value) -> StoreConfig | None:
    """url: required, `postgresql://user@host:5432/database` (or postgres://), inline or as
    `{env: NAME}` / `{file: PATH}`. password: `{file: PATH}` or `{env: NAME}` (inline works,
    with a warning), for a URL without one; a URL that carries one, written inline, is
    warned about. The database must exist: the gateway makes its tables, not the database."""
    if "url" not in keys:
        value.fail("url: is required for postgres (postgresql://user@host:5432/database)")
        return None
    url = keys["url"].secret(inline_ok=True)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
        parts.port  # noqa: B018 (raises ValueError for a port that is no number)
    except ValueError as exc:
        keys["url"].fail(f"is not a URL that can be used: {exc}")
        return None
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        keys["url"].fail("must be postgresql://user@host:5432/database (a database is named)")
        return None
    password = ""
    if "password" in keys:
        password = keys["password"].secret() or ""
        if has_password:
            keys["password"].fail("the url carries a password already: give it in one place")
    elif has_password and isinstance(keys["url"].node, ScalarNode):
        keys["url"].warn(
            "carries a password written inline; prefer password: {file: PATH} or {env: NAME}"
        )
    pool = _DEFAULT.max_connections
    if "max_connections" in keys:
        pool = keys["max_connections"].integer(minimum=1, maximum=1000) or pool
    connect, statement = _DEFAULT.connect_timeout, _DEFAULT.statement_timeout
    if "timeouts" in keys:
        connect, statement = _timeouts(keys["timeouts"])
    return StoreConfig(
        "postgres",
        url=url,
        password=password,
        max_connections=pool,
        connect_timeout=connect,
        statement_timeout=statement,
    )
