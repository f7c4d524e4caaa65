"""gateway.yaml: read whole and validated once into a frozen Config, every problem reported
at once. This module knows the top-level keys and how the sections depend on one another;
each section is read by its own module. What each key means: docs/configuration.md."""

from __future__ import annotations

from pathlib import Path

from gateway.config.alerts import read_alerts
from gateway.config.forwardauth import read_forward_auth
from gateway.config.messaging import read_messaging
from gateway.config.model import Admin, Audit, Branding, Config, Logging, State
from gateway.config.networks import IPNetwork
from gateway.config.process import read_policies_dir, read_policy_reload, read_workers
from gateway.config.sections import (
    default_durable,
    read_admin,
    read_audit,
    read_branding,
    read_key,
    read_listen,
    read_logging,
    read_prefix,
    read_public_url,
    read_state,
    read_trusted_proxies,
    read_upstream,
)
from gateway.config.shutdown import read_shutdown
from gateway.config.signin import SignIn, read_signin
from gateway.config.webauthn import read_webauthn
from gateway.config.yaml_reader import Source, Value, read_file
from gateway.errors import ConfigError

TOP_KEYS = {
    "listen",
    "workers",
    "public_url",
    "upstream",
    "trusted_proxies",
    "trusted_proxy_header",
    "path_prefix",
    "forward_auth",
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
    "notices",
    "alerts",
    "shutdown",
    "webauthn",
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


def workers_problem(workers: int, signin: SignIn, state: State, *, auto: bool = False) -> str:
    """Why this many workers cannot run with this state ("" when they can): the config file
    and `run --workers` are checked by the same rule. `auto` is refused wherever several
    workers would be, whatever the cores of this machine: a file valid on one host is valid
    on the next."""
    if signin.login is not None and (workers > 1 or auto) and state.shared.type == "memory":
        said = f"auto (one per core: {workers} here)" if auto else "more than 1"
        return (
            f"{said} needs state.shared type redis once login is on: sessions and rate "
            "limits must be shared by every worker (or set workers: 1)"
        )
    return ""


def _build(root: Value, source: Source) -> Config | None:
    keys = root.mapping(TOP_KEYS)
    if keys is None:
        return None
    for required in ("listen", "upstream"):
        if required not in keys:
            source.problem(root.node, required, "is required")
    listen = read_key(keys, "listen", read_listen, None)
    upstream = read_key(keys, "upstream", read_upstream, None)
    workers, workers_auto = read_key(keys, "workers", read_workers, (1, False))
    public_url = read_key(keys, "public_url", read_public_url, "")
    trusted: tuple[IPNetwork, ...] = read_key(keys, "trusted_proxies", read_trusted_proxies, ())
    proxy_header = read_key(
        keys,
        "trusted_proxy_header",
        lambda v: v.choice(("X-Forwarded-For", "Forwarded")),
        "X-Forwarded-For",
    ).lower()
    prefix = read_key(keys, "path_prefix", read_prefix, "/_gateway/")
    state = read_key(keys, "state", read_state, None) or State(durable=default_durable(source))
    logging = read_key(keys, "logging", read_logging, Logging())
    audit = read_key(keys, "audit", read_audit, Audit())
    admin = read_key(keys, "admin", read_admin, Admin())
    branding = read_key(keys, "branding", read_branding, Branding())
    policies = read_key(keys, "policies", read_policies_dir, "")
    hold_share = read_key(keys, "policy_reload", read_policy_reload, 0.5)
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
    shared_problem = workers_problem(workers, signin, state, auto=workers_auto)
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
    if admin.console is not None and signin.login is None:
        source.problem(
            keys["admin"].node,
            "admin.console",
            "needs a login section: only a signed-in administrator may use the console",
        )
    shutdown = read_shutdown(keys)  # read even when the file fails below: every problem at once
    webauthn = read_webauthn(
        keys.get("webauthn"), keys.get("public_url"), public_url, branding.product_name
    )
    login = signin.login
    forward_auth = read_forward_auth(
        keys, login.identity_header if login and login.mode == "gateway" else ""
    )
    if listen is None or upstream is None:
        return None
    return Config(
        source=source.file,
        listen=listen,
        upstream=upstream,
        workers=workers,
        workers_auto=workers_auto,
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
        forward_auth=forward_auth,
        webauthn=webauthn,
        warnings=tuple(source.warnings),
    )
