"""A gateway of the deployment's own config on a loopback port, in this process, for doctor:
the app `crm-gateway run` serves (gateway.web.app.build_app), on 127.0.0.1:0, one worker,
its state in a temporary folder (the deployment's store, audit trail, lockout counts and
sessions untouched; alerts silent) and 127.0.0.1 trusted as the proxy in front, so doctor
can present a browser at public_url as the TLS proxy does. In-process rather than a child
process: no executable to find, no port to race for, nothing left running when doctor is
stopped; what is tested is the configuration, not process management (tests/flows has that).

Through it: a login with a made-up user (does the CRM's CSRF check take the browser's Origin
as the gateway forwards it?) and the test account's (is it held for the second factor?)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from gateway.clock import Clock
from gateway.config.alerts import Alerts
from gateway.config.model import Admin, Config, Listen, State, StoreConfig
from gateway.errors import DetectionFailed
from gateway.policy.model import Policy
from gateway.setup.attempt import Attempt, Entry, submit
from gateway.setup.client import Answer, Browser, origin_of
from gateway.setup.detect import PROBE_USER
from gateway.web.app import build_app

_REFUSED_WORDS = re.compile(r"csrf|origin|forgery|cross.site|referer|expired", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]+>")
_HEAD = re.compile(r"<head\b.*?</head>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Trial:
    url: str  # where it listens: http://127.0.0.1:PORT
    site: str  # the origin a browser uses: public_url, or the gateway's own
    headers: dict[str, str]  # what the proxy in front adds: the client's address, the scheme
    audit_file: Path
    upstream: str  # the CRM's origin

    def events(self) -> list[dict[str, Any]]:
        """The audit events so far (the trail is written at once, line by line)."""
        if not self.audit_file.exists():
            return []
        lines = self.audit_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def browser(self, wait: float, clock: Clock) -> Browser:
        """A browser at the site, through this gateway; the CRM's addresses (where the login
        was found) taken for the site's."""
        return Browser(
            self.site,
            wait,
            clock,
            connect_to=self.url,
            headers=dict(self.headers),
            aliases=frozenset({self.upstream}),
        )


def _proxy_headers(config: Config, client_ip: str, scheme: str) -> dict[str, str]:
    if config.trusted_proxy_header == "forwarded":
        shown = f"[{client_ip}]" if ":" in client_ip else client_ip
        return {"Forwarded": f'for="{shown}";proto={scheme}'}
    return {"X-Forwarded-For": client_ip, "X-Forwarded-Proto": scheme}


@contextlib.asynccontextmanager
async def trial_gateway(
    config: Config, policy: Policy | None, folder: Path, client_ip: str
) -> AsyncIterator[Trial]:
    """The gateway, served until the block ends; its start failing is DetectionFailed."""
    audit = folder / "audit.jsonl"
    trial = replace(
        config,
        listen=Listen("127.0.0.1", 0),
        workers=1,
        workers_auto=False,
        trusted_proxies=(*config.trusted_proxies, ipaddress.ip_network("127.0.0.1/32")),
        state=State(StoreConfig("sqlite", str(folder / "trial.db")), StoreConfig("memory")),
        audit=replace(config.audit, file=str(audit)),
        admin=Admin(),
        alerts=Alerts(),
        logging=replace(config.logging, access_log=False),
    )
    runner = web.AppRunner(build_app(trial, policy=policy), access_log=None)
    try:
        await runner.setup()
    except Exception as exc:  # whatever stops `run` from starting, said as `run` would
        await runner.cleanup()
        raise DetectionFailed(f"a gateway of this config did not start: {exc}") from exc
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        await web.SockSite(runner, sock).start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        site = origin_of(config.public_url) if config.public_url else url
        scheme = urlsplit(site).scheme
        headers = _proxy_headers(config, client_ip, scheme)
        yield Trial(url, site, headers, audit, origin_of(config.upstream.url))
    finally:
        await runner.cleanup()
        sock.close()


REFUSALS = (400, 403, 419, 422)  # what frameworks answer a form they take for a forgery


def refused_as_forgery(answer: Answer) -> str:
    """The CRM's words when it refused a form as a forgery: a refusal that speaks of CSRF, an
    origin, a referer or an expired page ("" otherwise)."""
    if answer.status not in REFUSALS:
        return ""
    body = _HEAD.sub(" ", answer.body)  # not the page's title: its words
    text = " ".join(_TAGS.sub(" ", body).split())
    found = _REFUSED_WORDS.search(text)
    if found is None:
        return ""
    start = max(0, text.rfind(".", 0, found.start()) + 1)
    return text[start : start + 140].strip()


async def probe(browser: Browser, entry: Entry) -> Attempt:
    """A login with a made-up user and password: nobody is signed in, the CRM answers its
    failure, or refuses the form."""
    return await submit(browser, entry, PROBE_USER, "probe-" + secrets.token_urlsafe(9))
