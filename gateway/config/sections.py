"""Reading the gateway's own sections of gateway.yaml (listen, upstream, state, logging,
audit, admin, branding, trusted proxies, the path prefix) into their values, every problem
recorded with its line and key. The defaults and the rules live here; it opens no sockets,
no state files and no stores (a store's driver is only looked for)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from gateway.config.console import read_console
from gateway.config.model import (
    DURABLE_KINDS,
    SHARED_KINDS,
    Admin,
    Audit,
    Branding,
    IPNetwork,
    Listen,
    Logging,
    SecretHeader,
    State,
    StoreConfig,
    Timeouts,
    Upstream,
)
from gateway.config.postgres import POSTGRES_KEYS, read_postgres
from gateway.config.yaml_reader import Source, Value
from gateway.headers import MANAGED, fold

T = TypeVar("T")
_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.\-]+)):(?P<port>\d{1,5})$"
)


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token


_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")


# Store kinds that need a package not installed by default: the module, and how to get it.
_DRIVERS = {
    "redis": ("redis.asyncio", "pip install 'crm-gateway[redis]'"),
    "postgres": ("asyncpg", "pip install 'crm-gateway[postgres]'"),
}


def parse_listen(value: str) -> Listen | None:
    match = _HOST_PORT.match(value.strip())
    if not match or int(match["port"]) > 65535:
        return None
    return Listen(match["v6"] or match["host"], int(match["port"]))


def read_key(keys: dict[str, Value], name: str, read: Callable[[Value], T | None], default: T) -> T:
    if name not in keys:
        return default
    value = read(keys[name])
    return default if value is None else value


def read_listen(value: Value) -> Listen | None:
    text = value.text()
    if text is None:
        return None
    listen = parse_listen(text)
    if listen is None:
        value.fail(f"must be host:port (for example 0.0.0.0:8080 or [::]:8080) but it's {text!r}")
    return listen


def _origin(value: Value, what: str) -> tuple[str, str, str, int | None] | None:
    text = value.text()
    if text is None:
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        value.fail(f"must be an http(s) URL but it's {text!r}")
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        value.fail(f"must be only scheme, host and port ({what}) but it's {text!r}")
        return None
    return parts.scheme, parts.hostname, parts.netloc, port


def read_public_url(value: Value) -> str | None:
    origin = _origin(value, "the address users type")
    return None if origin is None else f"{origin[0]}://{origin[2]}"


def read_upstream(value: Value) -> Upstream | None:
    keys = value.mapping(
        {
            "url",
            "host_header",
            "timeouts",
            "max_connections",
            "keepalive",
            "websocket",
            "secret_header",
            "case_insensitive_paths",
        }
    )
    if keys is None:
        return None
    if "url" not in keys:
        value.fail("url: is required")
        return None
    origin = _origin(keys["url"], "the CRM's address")
    host_header = read_key(
        keys, "host_header", lambda v: v.choice(("client", "upstream")), "client"
    )
    timeouts = read_key(keys, "timeouts", _timeouts, Timeouts())
    max_conn = read_key(keys, "max_connections", lambda v: v.integer(minimum=1, maximum=10000), 100)
    keepalive = read_key(keys, "keepalive", lambda v: v.duration(minimum=1), 30.0)
    ws_max = read_key(keys, "websocket", _websocket, 4 * 1024 * 1024)
    secret_header = read_key(keys, "secret_header", _secret_header, None)
    fold = read_key(keys, "case_insensitive_paths", lambda v: v.boolean(), False)
    if origin is None:
        return None
    scheme, hostname, netloc, port = origin
    return Upstream(
        url=f"{scheme}://{netloc}",
        scheme=scheme,
        host=netloc,
        hostname=hostname,
        port=port or (443 if scheme == "https" else 80),
        host_header=host_header,
        timeouts=timeouts,
        max_connections=max_conn,
        keepalive=keepalive,
        websocket_max_message=ws_max,
        secret_header=secret_header,
        case_insensitive_paths=fold,
    )


def _timeouts(value: Value) -> Timeouts | None:
    keys = value.mapping({"connect", "read", "pool"})
    if keys is None:
        return None
    default = Timeouts()
    return Timeouts(
        connect=read_key(keys, "connect", lambda v: v.duration(minimum=0.001), default.connect),
        read=read_key(keys, "read", lambda v: v.duration(minimum=0.001), default.read),
        pool=read_key(keys, "pool", lambda v: v.duration(minimum=0.001), default.pool),
    )


def _websocket(value: Value) -> int | None:
    keys = value.mapping({"max_message_size"})
    if keys is None:
        return None
    return read_key(keys, "max_message_size", lambda v: v.size(minimum=1024), 4 * 1024 * 1024)


def _header_name(value: Value) -> str | None:
    name = value.text()
    if name is not None and not _HEADER_NAME.match(name):
        value.fail(f"must be an HTTP header name but it's {name!r}")
        return None
    return name


def _secret_header(value: Value) -> SecretHeader | None:
    keys = value.mapping({"name", "value"})
    if keys is None:
        return None
    for required in ("name", "value"):
        if required not in keys:
            value.fail(f"{required}: is required")
    if "name" not in keys or "value" not in keys:
        return None
    name = _header_name(keys["name"])
    if name is not None and fold(name) in MANAGED:
        keys["name"].fail(f"must not be a header the gateway manages but it's {name!r}")
        name = None
    secret = keys["value"].secret()
    if name is None or secret is None:
        return None
    return SecretHeader(name, secret)


def read_trusted_proxies(value: Value) -> tuple[IPNetwork, ...] | None:
    networks = read_networks(value)
    if networks and any(n.prefixlen == 0 for n in networks):
        value.warn(
            "trusts every address as a proxy (0.0.0.0/0 or ::/0): any client can then choose "
            "its own address with a forwarding header; name only your proxies"
        )
    return networks


def read_networks(value: Value) -> tuple[IPNetwork, ...] | None:
    items = value.sequence()
    if items is None:
        return None
    found = [item.network() for item in items]
    return tuple(n for n in found if n is not None)


def read_prefix(value: Value) -> str | None:
    text = value.text()
    if text is None:
        return None
    segments = text.strip("/").split("/")
    shaped = re.fullmatch(r"/[A-Za-z0-9._~\-]+(?:/[A-Za-z0-9._~\-]+)*/", text)
    if not shaped or any(set(segment) == {"."} for segment in segments):
        value.fail(
            f"must look like /_gateway/ (a path that starts and ends with /) but it's {text!r}"
        )
        return None
    return text


def default_durable(source: Source) -> StoreConfig:
    """SQLite beside the config file (`gateway.db`), wherever a command is run from."""
    return StoreConfig("sqlite", str(source.resolve("gateway.db")))


def _sqlite_path(value: Value) -> str | None:
    text = value.text()
    return text if text == ":memory:" else value.file_path()


def read_store(value: Value, kinds: tuple[str, ...]) -> StoreConfig | None:
    keys = value.mapping({"type", "path", "url", "prefix", *POSTGRES_KEYS})
    if keys is None:
        return None
    kind = value.kind(keys, kinds)
    if kind is None:
        return None
    for name in sorted(POSTGRES_KEYS & keys.keys()) if kind != "postgres" else ():
        keys[name].fail(f"is a key of type: postgres, not of type: {kind}")
    if kind == "sqlite":
        path = read_key(keys, "path", _sqlite_path, "") or default_durable(value.source).path
        return StoreConfig(kind, path=path)
    if kind == "memory":
        return StoreConfig(kind)
    if kind in _DRIVERS and not _driver_installed(keys["type"], kind):
        return None
    if kind == "postgres":
        return read_postgres(keys, value)
    if kind == "redis":
        if "url" not in keys:
            value.fail("url: is required for redis (redis://host:6379/0, or {env: NAME})")
            return None
        url = keys["url"].secret(inline_ok=True)
        if url is None:
            return None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            keys["url"].fail("must start with redis://, rediss:// or unix://")
            return None
        prefix = read_key(keys, "prefix", lambda v: v.text(), "crm-gateway:")
        return StoreConfig(kind, url=url, prefix=prefix)
    keys["type"].fail(f"{kind} is not available in this version")
    return None


def _driver_installed(value: Value, kind: str) -> bool:
    """Whether the optional package a store kind needs imports; a problem when not, so a
    missing driver stops `check-config` instead of the gateway at its first request."""
    module, remedy = _DRIVERS[kind]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        value.fail(f"{kind} needs the Python package {module.split('.')[0]!r} ({remedy}): {exc}")
        return False
    return True


def read_state(value: Value) -> State | None:
    keys = value.mapping({"durable", "shared"})
    if keys is None:
        return None
    default = State(durable=default_durable(value.source))
    return State(
        durable=read_key(keys, "durable", lambda v: read_store(v, DURABLE_KINDS), default.durable),
        shared=read_key(keys, "shared", lambda v: read_store(v, SHARED_KINDS), default.shared),
    )


def read_logging(value: Value) -> Logging | None:
    keys = value.mapping({"level", "format", "access_log"})
    if keys is None:
        return None
    return Logging(
        level=read_key(
            keys, "level", lambda v: v.choice(("debug", "info", "warning", "error")), "info"
        ),
        format=read_key(keys, "format", lambda v: v.choice(("text", "json")), "text"),
        access_log=read_key(keys, "access_log", lambda v: v.boolean(), True),
    )


def read_audit(value: Value) -> Audit | None:
    keys = value.mapping({"file", "keep"})
    if keys is None:
        return None
    target = read_key(keys, "file", lambda v: v.text(), "-")
    if target == "off":
        target = ""
    elif target != "-":
        target = str(value.source.resolve(target))
    if target not in ("", "-") and not Path(target).parent.is_dir():
        keys["file"].fail(f"the folder of {target!r} does not exist")
    keep = read_key(keys, "keep", lambda v: v.duration(minimum=0.0), Audit().keep)
    if keep and keep < 86400:
        keys["keep"].fail("must be at least 1d (or 0 to keep every event)")
    return Audit(file=target, keep=keep)


def read_admin(value: Value) -> Admin | None:
    keys = value.mapping({"listen", "console"})
    if keys is None:
        return None
    listen = read_key(keys, "listen", read_listen, None)
    console = read_key(keys, "console", read_console, None)
    if console is not None and console.at == "admin_listener" and listen is None:
        keys["console"].fail("at: admin_listener needs admin.listen (the address to serve it on)")
    if listen is not None and listen.host not in ("127.0.0.1", "::1", "localhost"):
        keys["listen"].warn(
            f"metrics are served on {listen.host}, not only loopback: make sure only your "
            "monitoring can reach it"
        )
    return Admin(listen=listen, console=console)


def read_branding(value: Value) -> Branding | None:
    keys = value.mapping({"product_name", "colour", "logo_url"})
    if keys is None:
        return None
    default = Branding()
    colour = read_key(keys, "colour", lambda v: v.text(), default.colour)
    if "colour" in keys and not _COLOUR.match(colour):
        keys["colour"].fail(f"must be a colour such as #1f5f8b but it's {colour!r}")
        colour = default.colour
    logo = read_key(keys, "logo_url", lambda v: v.text(), "")
    # Browsers read `/\` as `//`: a backslash anywhere could point at another site.
    on_site = logo.startswith("/") and not logo.startswith("//") and "\\" not in logo
    if logo and not (logo.startswith("https://") or on_site):
        keys["logo_url"].fail(f"must be an https:// URL or a path on this site but it's {logo!r}")
        logo = ""
    return Branding(
        product_name=read_key(keys, "product_name", lambda v: v.text(), default.product_name),
        colour=colour,
        logo_url=logo,
    )
