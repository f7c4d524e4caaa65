"""gateway.yaml: validated once into frozen dataclasses, every problem reported at once.

What each key means is documented in README.md ("Configuration reference"); this module
owns the defaults and the rules. It does not open sockets, files of state or stores.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from gateway.alerts_config import Alerts, read_alerts
from gateway.errors import ConfigError, Problem
from gateway.headers import MANAGED, fold
from gateway.loader import Source, Value, read_file
from gateway.messaging_config import Messaging, read_messaging
from gateway.policy import policy_files
from gateway.shutdown_config import Shutdown, read_shutdown
from gateway.signin_config import SignIn, read_signin

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")

_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.\-]+)):(?P<port>\d{1,5})$"
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")
# The store kinds `state.durable.type` and `state.shared.type` may name: each is a module in
# gateway/stores/ and a line of its registry (gateway.stores.DURABLE_BACKENDS and
# SHARED_BACKENDS, which config may not import: tests/test_store_registry.py keeps them equal).
DURABLE_KINDS = ("sqlite",)
SHARED_KINDS = ("memory", "redis")
# Store kinds that need a package not installed by default: the module, and how to get it.
_DRIVERS = {"redis": ("redis.asyncio", "pip install 'crm-gateway[redis]'")}


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0  # TCP connect to the CRM
    read: float = 60.0  # waiting for response headers, and between two reads of a body
    pool: float = 10.0  # waiting for a free pooled connection (then 503, FL-11)


@dataclass(frozen=True)
class SecretHeader:
    """A header the gateway adds to every upstream request and strips from clients (NB-1)."""

    name: str
    value: str = field(repr=False)


@dataclass(frozen=True)
class Upstream:
    url: str  # scheme://host[:port], no path
    scheme: str
    host: str  # as written in Host: host or host:port
    hostname: str
    port: int
    host_header: str = "client"  # "client": pass the client's Host; "upstream": send ours
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_connections: int = 100
    keepalive: float = 30.0
    websocket_max_message: int = 4 * 1024 * 1024
    secret_header: SecretHeader | None = None


@dataclass(frozen=True)
class StoreConfig:
    type: str
    path: str = ""  # sqlite file
    url: str = field(default="", repr=False)  # postgres / redis URL (may carry a password)
    prefix: str = "crm-gateway:"  # redis: keys start with it (several gateways, one Redis)


@dataclass(frozen=True)
class State:
    durable: StoreConfig = field(default_factory=lambda: StoreConfig("sqlite", "gateway.db"))
    shared: StoreConfig = field(default_factory=lambda: StoreConfig("memory"))


@dataclass(frozen=True)
class Logging:
    level: str = "info"
    format: str = "text"
    access_log: bool = True


@dataclass(frozen=True)
class Audit:
    """Where audit events go besides the durable store, and how long the store keeps them."""

    file: str = "-"  # a path, "-" for stdout, "" for none (the store only)
    keep: float = 400 * 86400.0  # seconds; 0 = forever


@dataclass(frozen=True)
class Admin:
    """The admin listener: Prometheus metrics (and health) on an address of its own, which
    the CRM's users never reach. None of it when `listen` is not set."""

    listen: Listen | None = None


@dataclass(frozen=True)
class Branding:
    product_name: str = "CRM Gateway"
    colour: str = "#1f5f8b"
    logo_url: str = ""


@dataclass(frozen=True)
class Config:
    source: str
    listen: Listen
    upstream: Upstream
    workers: int = 1
    public_url: str = ""  # the client-facing origin, when known (used for absolute URLs)
    trusted_proxies: tuple[IPNetwork, ...] = ()
    trusted_proxy_header: str = "x-forwarded-for"  # or "forwarded": the one they write
    path_prefix: str = "/_gateway/"
    state: State = field(default_factory=State)
    logging: Logging = field(default_factory=Logging)
    audit: Audit = field(default_factory=Audit)
    admin: Admin = field(default_factory=Admin)
    branding: Branding = field(default_factory=Branding)
    policies: str = ""  # directory of policy files; "" = none (a transparent proxy)
    # A change the file watcher sees that removes more than this share of the path rules (or
    # every deny list) waits for `crm-gateway policy reload` or SIGHUP.
    policy_hold_share: float = 0.5
    signin: SignIn = field(default_factory=SignIn)
    messaging: Messaging = field(default_factory=Messaging)
    alerts: Alerts = field(default_factory=Alerts)
    shutdown: Shutdown = field(default_factory=Shutdown)
    warnings: tuple[Problem, ...] = ()


TOP_KEYS = {
    "listen",
    "workers",
    "public_url",
    "upstream",
    "trusted_proxies",
    "trusted_proxy_header",
    "path_prefix",
    "state",
    "logging",
    "audit",
    "admin",
    "branding",
    "policies",
    "policy_reload",
    "login",
    "sessions",
    "limits",
    "secrets",
    "sms",
    "email",
    "codes",
    "alerts",
    "shutdown",
}


def load_config(path: str | Path) -> Config:
    """Read and validate a gateway.yaml; raise ConfigError listing every problem."""
    path = Path(path)
    source = Source(str(path), path.parent)
    root = read_file(path, source)
    config = _build(root, source) if root is not None else None
    if source.problems or config is None:
        raise ConfigError(source.problems)
    return config


def parse_config(text: str, name: str = "gateway.yaml") -> Config:
    """The same as load_config, from text (the demo builds its config this way)."""
    source = Source(name)
    root = source.parse(text)
    config = _build(root, source) if root is not None else None
    if source.problems or config is None:
        raise ConfigError(source.problems)
    return config


def workers_problem(workers: int, signin: SignIn, state: State) -> str:
    """Why this many workers cannot run with this state ("" when they can): the config file
    and `run --workers` are checked by the same rule."""
    if signin.login is not None and workers > 1 and state.shared.type == "memory":
        return (
            "must be 1 with state.shared type memory once login is on: sessions and rate "
            "limits must be shared by every worker"
        )
    return ""


def parse_listen(value: str) -> Listen | None:
    match = _HOST_PORT.match(value.strip())
    if not match or int(match["port"]) > 65535:
        return None
    return Listen(match["v6"] or match["host"], int(match["port"]))


def _get(keys: dict[str, Value], name: str, read: Callable[[Value], T | None], default: T) -> T:
    if name not in keys:
        return default
    value = read(keys[name])
    return default if value is None else value


def _build(root: Value, source: Source) -> Config | None:
    keys = root.mapping(TOP_KEYS)
    if keys is None:
        return None
    for required in ("listen", "upstream"):
        if required not in keys:
            source.problem(root.node, required, "is required")
    listen = _get(keys, "listen", _listen, None)
    upstream = _get(keys, "upstream", _upstream, None)
    workers = _get(keys, "workers", lambda v: v.integer(minimum=1, maximum=64), 1)
    public_url = _get(keys, "public_url", _public_url, "")
    trusted: tuple[IPNetwork, ...] = _get(keys, "trusted_proxies", _trusted_proxies, ())
    proxy_header = _get(
        keys,
        "trusted_proxy_header",
        lambda v: v.choice(("X-Forwarded-For", "Forwarded")),
        "X-Forwarded-For",
    ).lower()
    prefix = _get(keys, "path_prefix", _prefix, "/_gateway/")
    state = _get(keys, "state", _state, None) or State(durable=_default_durable(source))
    logging = _get(keys, "logging", _logging, Logging())
    audit = _get(keys, "audit", _audit, Audit())
    admin = _get(keys, "admin", _admin, Admin())
    branding = _get(keys, "branding", _branding, Branding())
    policies = _get(keys, "policies", _policies_dir, "")
    hold_share = _get(keys, "policy_reload", _policy_reload, 0.5)
    signin = read_signin(keys, root)
    messaging = read_messaging(keys)
    alerts = read_alerts(keys, messaging)
    if signin.login is None:
        source.warn(
            None,
            "",
            "no login section: nobody signs in and no second factor is asked; "
            "the gateway applies only IP and path rules",
        )
    shared_problem = workers_problem(workers, signin, state)
    if shared_problem:
        source.problem(
            keys["workers"].node if "workers" in keys else None, "workers", shared_problem
        )
    if (
        admin.listen is not None
        and listen is not None
        and admin.listen.port != 0
        and (admin.listen.host, admin.listen.port) == (listen.host, listen.port)
    ):
        source.problem(
            keys["admin"].node,
            "admin.listen",
            "must differ from listen: metrics stay off the address the CRM's users reach",
        )
    shutdown = read_shutdown(keys)  # read even when the file fails below: every problem at once
    if listen is None or upstream is None:
        return None
    return Config(
        source=source.file,
        listen=listen,
        upstream=upstream,
        workers=workers,
        public_url=public_url,
        trusted_proxies=trusted,
        trusted_proxy_header=proxy_header,
        path_prefix=prefix,
        state=state,
        logging=logging,
        audit=audit,
        admin=admin,
        branding=branding,
        policies=policies,
        policy_hold_share=hold_share,
        signin=signin,
        messaging=messaging,
        alerts=alerts,
        shutdown=shutdown,
        warnings=tuple(source.warnings),
    )


def _policies_dir(value: Value) -> str | None:
    """Relative to the config file's folder, so `policies: policies` works from anywhere."""
    text = value.file_path()
    if text is None:
        return None
    folder = Path(text)
    if not folder.is_dir():
        value.fail(f"must be a folder of policy files but {str(folder)!r} is not a folder")
        return None
    if not policy_files(folder):
        value.warn(f"{str(folder)!r} holds no policy files (*.yaml, *.yml)")
    return str(folder)


def _policy_reload(value: Value) -> float | None:
    """`{hold_share: 50%}`: the share of path rules a watched change may remove unconfirmed."""
    keys = value.mapping({"hold_share"})
    if keys is None or "hold_share" not in keys:
        return None
    text = keys["hold_share"].text()
    if text is None:
        return None
    number = text[:-1].strip() if text.endswith("%") else ""
    if not number.isdigit() or not 0 <= int(number) <= 100:
        keys["hold_share"].fail(f"must be a share such as 50% but it's {text!r}")
        return None
    return int(number) / 100


def _listen(value: Value) -> Listen | None:
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


def _public_url(value: Value) -> str | None:
    origin = _origin(value, "the address users type")
    return None if origin is None else f"{origin[0]}://{origin[2]}"


def _upstream(value: Value) -> Upstream | None:
    keys = value.mapping(
        {
            "url",
            "host_header",
            "timeouts",
            "max_connections",
            "keepalive",
            "websocket",
            "secret_header",
        }
    )
    if keys is None:
        return None
    if "url" not in keys:
        value.fail("url: is required")
        return None
    origin = _origin(keys["url"], "the CRM's address")
    host_header = _get(keys, "host_header", lambda v: v.choice(("client", "upstream")), "client")
    timeouts = _get(keys, "timeouts", _timeouts, Timeouts())
    max_conn = _get(keys, "max_connections", lambda v: v.integer(minimum=1, maximum=10000), 100)
    keepalive = _get(keys, "keepalive", lambda v: v.duration(minimum=1), 30.0)
    ws_max = _get(keys, "websocket", _websocket, 4 * 1024 * 1024)
    secret_header = _get(keys, "secret_header", _secret_header, None)
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
    )


def _timeouts(value: Value) -> Timeouts | None:
    keys = value.mapping({"connect", "read", "pool"})
    if keys is None:
        return None
    default = Timeouts()
    return Timeouts(
        connect=_get(keys, "connect", lambda v: v.duration(minimum=0.001), default.connect),
        read=_get(keys, "read", lambda v: v.duration(minimum=0.001), default.read),
        pool=_get(keys, "pool", lambda v: v.duration(minimum=0.001), default.pool),
    )


def _websocket(value: Value) -> int | None:
    keys = value.mapping({"max_message_size"})
    if keys is None:
        return None
    return _get(keys, "max_message_size", lambda v: v.size(minimum=1024), 4 * 1024 * 1024)


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


def _trusted_proxies(value: Value) -> tuple[IPNetwork, ...] | None:
    networks = _networks(value)
    if networks and any(n.prefixlen == 0 for n in networks):
        value.warn(
            "trusts every address as a proxy (0.0.0.0/0 or ::/0): any client can then choose "
            "its own address with a forwarding header; name only your proxies"
        )
    return networks


def _networks(value: Value) -> tuple[IPNetwork, ...] | None:
    items = value.sequence()
    if items is None:
        return None
    found = [item.network() for item in items]
    return tuple(n for n in found if n is not None)


def _prefix(value: Value) -> str | None:
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


def _default_durable(source: Source) -> StoreConfig:
    """SQLite beside the config file (`gateway.db`), wherever a command is run from."""
    return StoreConfig("sqlite", str(source.resolve("gateway.db")))


def _sqlite_path(value: Value) -> str | None:
    text = value.text()
    return text if text == ":memory:" else value.file_path()


def _store(value: Value, kinds: tuple[str, ...]) -> StoreConfig | None:
    keys = value.mapping({"type", "path", "url", "prefix"})
    if keys is None:
        return None
    kind = value.kind(keys, kinds)
    if kind is None:
        return None
    if kind == "sqlite":
        path = _get(keys, "path", _sqlite_path, "") or _default_durable(value.source).path
        return StoreConfig(kind, path=path)
    if kind == "memory":
        return StoreConfig(kind)
    if kind in _DRIVERS and not _driver_installed(keys["type"], kind):
        return None
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
        prefix = _get(keys, "prefix", lambda v: v.text(), "crm-gateway:")
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


def _state(value: Value) -> State | None:
    keys = value.mapping({"durable", "shared"})
    if keys is None:
        return None
    default = State(durable=_default_durable(value.source))
    return State(
        durable=_get(keys, "durable", lambda v: _store(v, DURABLE_KINDS), default.durable),
        shared=_get(keys, "shared", lambda v: _store(v, SHARED_KINDS), default.shared),
    )


def _logging(value: Value) -> Logging | None:
    keys = value.mapping({"level", "format", "access_log"})
    if keys is None:
        return None
    return Logging(
        level=_get(
            keys, "level", lambda v: v.choice(("debug", "info", "warning", "error")), "info"
        ),
        format=_get(keys, "format", lambda v: v.choice(("text", "json")), "text"),
        access_log=_get(keys, "access_log", lambda v: v.boolean(), True),
    )


def _audit(value: Value) -> Audit | None:
    keys = value.mapping({"file", "keep"})
    if keys is None:
        return None
    target = _get(keys, "file", lambda v: v.text(), "-")
    if target == "off":
        target = ""
    elif target != "-":
        target = str(value.source.resolve(target))
    if target not in ("", "-") and not Path(target).parent.is_dir():
        keys["file"].fail(f"the folder of {target!r} does not exist")
    keep = _get(keys, "keep", lambda v: v.duration(minimum=0.0), Audit().keep)
    if keep and keep < 86400:
        keys["keep"].fail("must be at least 1d (or 0 to keep every event)")
    return Audit(file=target, keep=keep)


def _admin(value: Value) -> Admin | None:
    keys = value.mapping({"listen"})
    if keys is None:
        return None
    listen = _get(keys, "listen", _listen, None)
    if listen is not None and listen.host not in ("127.0.0.1", "::1", "localhost"):
        keys["listen"].warn(
            f"metrics are served on {listen.host}, not only loopback: make sure only your "
            "monitoring can reach it"
        )
    return Admin(listen=listen)


def _branding(value: Value) -> Branding | None:
    keys = value.mapping({"product_name", "colour", "logo_url"})
    if keys is None:
        return None
    default = Branding()
    colour = _get(keys, "colour", lambda v: v.text(), default.colour)
    if "colour" in keys and not _COLOUR.match(colour):
        keys["colour"].fail(f"must be a colour such as #1f5f8b but it's {colour!r}")
        colour = default.colour
    logo = _get(keys, "logo_url", lambda v: v.text(), "")
    # Browsers read `/\` as `//`: a backslash anywhere could point at another site.
    on_site = logo.startswith("/") and not logo.startswith("//") and "\\" not in logo
    if logo and not (logo.startswith("https://") or on_site):
        keys["logo_url"].fail(f"must be an https:// URL or a path on this site but it's {logo!r}")
        logo = ""
    return Branding(
        product_name=_get(keys, "product_name", lambda v: v.text(), default.product_name),
        colour=colour,
        logo_url=logo,
    )
