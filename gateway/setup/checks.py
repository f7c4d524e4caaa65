"""doctor's checks of the deployment itself, beside the CRM: the files that hold secrets
(readable by the gateway, by nobody else), public_url, TLS in front and trusted_proxies
telling one story, and the stores answering and taking a write. Each check is a Verdict:
what was seen and, when it fails, the fix."""

from __future__ import annotations

import getpass
import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.clock import Clock
from gateway.config.model import Config
from gateway.config.yaml_reader import Source, read_file
from gateway.errors import StoreUnavailable
from gateway.model import AuditEvent
from gateway.stores import STORE_MISSING, durable_address, open_durable, open_shared

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"


@dataclass(frozen=True)
class Verdict:
    item: str
    state: str  # OK, WARN, FAIL or SKIP
    said: str  # what was seen
    fix: str = ""  # what to do, when it is not OK


def secret_files(config_file: str) -> list[tuple[str, Path]]:
    """(the key that names it, the file) for every `{file: PATH}` in gateway.yaml, and the
    users file of login mode gateway: the files that hold secrets."""
    source = Source(config_file)
    root = read_file(Path(config_file), source)
    found: list[tuple[str, Path]] = []

    def walk(node: Node, where: str) -> None:
        if isinstance(node, MappingNode):
            pairs = [(k.value, v) for k, v in node.value if isinstance(k, ScalarNode)]
            if len(pairs) == 1 and pairs[0][0] == "file" and isinstance(pairs[0][1], ScalarNode):
                found.append((where, source.resolve(str(pairs[0][1].value))))
                return
            for key, value in pairs:
                child = f"{where}.{key}" if where else str(key)
                if child == "login.users_file" and isinstance(value, ScalarNode):
                    found.append((child, source.resolve(str(value.value))))
                walk(value, child)
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{where}[{index}]")

    if root is not None:
        walk(root.node, "")
    return found


def check_secret_files(config_file: str) -> list[Verdict]:
    verdicts = []
    for key, path in secret_files(config_file):
        item = f"{key} file"
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            verdicts.append(Verdict(item, FAIL, f"{path}: {exc.strerror}", f"create {path}"))
            continue
        if not os.access(path, os.R_OK):
            fix = f"chown the gateway's user {path}; chmod 600 {path}"
            verdicts.append(Verdict(item, FAIL, f"{path} is not readable by this user", fix))
        elif mode & (stat.S_IROTH | stat.S_IWOTH):
            said = f"{path} is readable by every user of this host (mode {stat.filemode(mode)})"
            verdicts.append(Verdict(item, FAIL, said, f"chmod 600 {path}"))
        elif mode & stat.S_IWGRP:
            said = f"{path} may be changed by its group (mode {stat.filemode(mode)})"
            verdicts.append(Verdict(item, WARN, said, f"chmod g-w {path}"))
        else:
            verdicts.append(Verdict(item, OK, f"{path}: readable here, not by others"))
    return verdicts


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _every_address(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def check_public_side(config: Config) -> list[Verdict]:
    """public_url, TLS in front and trusted_proxies: one story, or the gaps it leaves."""
    item = "public_url and proxies"
    public = urlsplit(config.public_url) if config.public_url else None
    proxies = config.trusted_proxies
    found: list[Verdict] = []
    if any(net.prefixlen == 0 for net in proxies):
        said = "trusted_proxies trusts every address: any client can choose its own address"
        found.append(Verdict(item, FAIL, said, "trusted_proxies: [the address of your proxy]"))
    if public is None:
        found.append(
            Verdict(
                item,
                WARN,
                "public_url is not set: the CRM's absolute redirects become relative, and "
                "cookie domains cannot be checked against the address users type",
                "public_url: https://crm.example.com (the address users type)",
            )
        )
        return found or [Verdict(item, OK, "nothing set that could disagree")]
    if public.scheme == "https" and not proxies:
        found.append(
            Verdict(
                item,
                FAIL,
                f"public_url is {config.public_url} (TLS in front) but trusted_proxies is "
                "empty: the gateway takes every request for plain http from the proxy's "
                "address (no Secure cookies; every user at one address for the rules and "
                "the lockouts)",
                "trusted_proxies: [the proxy's address], and have it send X-Forwarded-For "
                "and X-Forwarded-Proto",
            )
        )
    if public.scheme == "http" and not _loopback(public.hostname or ""):
        found.append(
            Verdict(
                item,
                WARN,
                f"public_url is {config.public_url}: passwords and session cookies cross "
                "the network unencrypted",
                "terminate TLS in front (nginx, HAProxy) and set public_url: https://…",
            )
        )
    upstream = urlsplit(config.upstream.url)
    if (public.hostname, public.port) == (upstream.hostname, upstream.port):
        found.append(
            Verdict(
                item,
                FAIL,
                f"public_url {config.public_url} is the CRM's own address (upstream.url)",
                "public_url: the address users type to reach the gateway",
            )
        )
    if proxies and _every_address(config.listen.host):
        found.append(
            Verdict(
                item,
                WARN,
                f"the gateway listens on every address ({config.listen}) behind a proxy: "
                "clients can reach it around the proxy",
                "listen: the address the proxy connects to (127.0.0.1:8080 on one host)",
            )
        )
    said = f"{config.public_url}, trusted proxies {', '.join(str(n) for n in proxies) or 'none'}"
    return found or [Verdict(item, OK, said)]


async def check_stores(config: Config, clock: Clock) -> list[Verdict]:
    """The durable store opens and takes a write (an audit event admin.doctor, which says
    that doctor ran); the shared store answers and takes a short-lived key."""
    verdicts = []
    store, key = durable_address(config.state.durable)
    item = "durable store"
    try:
        durable = await open_durable(config.state.durable, create=False)
    except StoreUnavailable as exc:
        verdicts.append(_missing(config, store, key, exc))
    else:
        try:
            await durable.ping()
            by = (("by", _operator()),)
            event = AuditEvent(clock.now(), "admin.doctor", "ok", method="CLI", details=by)
            await durable.add_audit_events([event])
            said = f"{store} answers and took a write (audit event admin.doctor)"
            verdicts.append(Verdict(item, OK, said))
        except StoreUnavailable as exc:
            fix = f"let the gateway's user write {store} (and, for SQLite, its folder)"
            verdicts.append(Verdict(item, FAIL, f"{store}: {exc.__cause__ or exc}", fix))
        finally:
            await durable.close()
    settings = config.state.shared
    if settings.type == "memory":
        said = "in the gateway's memory (one worker; kept over a restart beside the SQLite file)"
        verdicts.append(Verdict("shared store", OK, said))
        return verdicts
    try:
        shared = await open_shared(settings, clock)
        try:
            await shared.put("doctor:probe", b"1", 10.0)
            await shared.delete("doctor:probe")
        finally:
            await shared.close()
        verdicts.append(Verdict("shared store", OK, f"{settings.type} answers and took a key"))
    except StoreUnavailable as exc:
        fix = "start it, or correct state.shared.url"
        verdicts.append(Verdict("shared store", FAIL, f"{settings.type}: {exc.detail}", fix))
    return verdicts


def _operator() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid {os.getuid()}"


def _missing(config: Config, store: str, key: str, exc: StoreUnavailable) -> Verdict:
    item = "durable store"
    if exc.reason != STORE_MISSING:
        return Verdict(item, FAIL, f"{store}: {exc.__cause__ or exc.detail}", f"check {key}")
    folder = Path(config.state.durable.path).parent
    if config.state.durable.type == "sqlite":
        if not folder.is_dir():
            said = f"no store at {store}, and its folder {folder} does not exist"
            return Verdict(item, FAIL, said, f"mkdir -p {folder} (owned by the gateway's user)")
        if not os.access(folder, os.W_OK):
            said = f"no store at {store}, and its folder {folder} is not writable here"
            return Verdict(item, FAIL, said, f"chown the gateway's user {folder}")
    said = f"no store at {store} yet: crm-gateway run creates it at its first start"
    return Verdict(item, WARN, said, "start the gateway once (or check the path)")
