"""gateway.yaml as frozen values: the gateway's own sections (listen, upstream, state,
logging, audit, admin, branding) and the whole Config, which also holds the sign-in,
messaging, alerts and shutdown sections (their own modules). What each key means is
documented in docs/configuration.md."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from gateway.config.alerts import Alerts
from gateway.config.console import Console
from gateway.config.forwardauth import ForwardAuth
from gateway.config.messaging import Messaging
from gateway.config.shutdown import Shutdown
from gateway.config.signin import SignIn
from gateway.config.webauthn import WebAuthn
from gateway.errors import Problem

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# The store kinds `state.durable.type` and `state.shared.type` may name: each is a module in
# gateway/stores/ and a line of its registry (gateway.stores.DURABLE_BACKENDS and
# SHARED_BACKENDS, which config may not import: tests/stores/test_stores_registry.py keeps
# them equal).
DURABLE_KINDS = ("sqlite", "postgres")


SHARED_KINDS = ("memory", "redis")


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
    # The CRM's web server ignores case in paths (IIS, Windows): rules, the login and the
    # logout match in any case, and Windows aliases of a name are refused.
    case_insensitive_paths: bool = False


@dataclass(frozen=True)
class StoreConfig:
    type: str
    path: str = ""  # sqlite file
    url: str = field(default="", repr=False)  # postgres / redis URL (may carry a password)
    prefix: str = "crm-gateway:"  # redis: keys start with it (several gateways, one Redis)
    # postgres: the password when the URL has none; connections per process (a bounded
    # pool); seconds to connect (or wait for a pooled connection), and for one statement.
    password: str = field(default="", repr=False)
    max_connections: int = 5
    connect_timeout: float = 5.0
    statement_timeout: float = 10.0


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
    the CRM's users never reach. None of it when `listen` is not set. The helpdesk console
    (`console`, None when off) is served there or under the prefix."""

    listen: Listen | None = None
    console: Console | None = None


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
    workers: int = 1  # `auto` is resolved: one per core this process may run on
    workers_auto: bool = False
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
    forward_auth: ForwardAuth | None = None  # the forward-auth endpoint, when configured
    webauthn: WebAuthn = field(default_factory=WebAuthn)  # passkeys' relying party (public_url)
    warnings: tuple[Problem, ...] = ()
