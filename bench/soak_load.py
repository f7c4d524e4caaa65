"""The soak's client side: signs in through the gateway's real pages and drives the mixed load
with a bounded number of workers, counting every answer. It starts no process and imports
nothing of the gateway: it speaks HTTP, as a browser or an integration would.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html import unescape

import aiohttp
import pyotp

TIMEOUT = aiohttp.ClientTimeout(total=10)  # a request that takes longer is counted as failed
BROWSER = {"Accept": "text/html"}
BLOCKED = "198.51.100"  # the soak policy's organisation deny list (TEST-NET-2)


@dataclass(frozen=True)
class Target:
    """A running gateway as the load sees it."""

    url: str
    cookie: str  # the Cookie header of a complete session (alice, signed in with a code)
    api_token: str  # registered with `crm-gateway tokens add` for bob
    addresses: int  # how many client addresses the anonymous requests come from


# What one request of a kind sends: (path, headers).
Build = Callable[[Target, random.Random], tuple[str, dict[str, str]]]


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix: how often, what it sends, which answers are right."""

    name: str
    weight: int
    expected: frozenset[int]
    build: Build


@dataclass
class Stats:
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)  # connection errors, timeouts
    unexpected: Counter[str] = field(default_factory=Counter)  # "kind: status"
    latencies: list[float] = field(default_factory=list)  # seconds, mixed load only

    def note(self, kind: str, status: int, expected: frozenset[int]) -> None:
        self.statuses.setdefault(kind, Counter())[status] += 1
        if status < 500 and status not in expected:
            self.unexpected[f"{kind}: {status}"] += 1

    def server_errors(self) -> int:
        return sum(n for c in self.statuses.values() for s, n in c.items() if s >= 500)


def anywhere(rng: random.Random, addresses: int) -> str:
    """One of the first `addresses` addresses of 10/8, which the policy allows. A few thousand
    are an office and its home workers; 2**24 makes every request come from a new one, the
    worst case for state kept per address."""
    i = rng.randrange(min(addresses, 1 << 24))
    return f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"


def _page(path: str, *, cookie: bool = False, blocked: bool = False) -> Build:
    def build(target: Target, rng: random.Random) -> tuple[str, dict[str, str]]:
        if cookie:  # alice, at her desk in the office: one address
            return path, {**BROWSER, "Cookie": target.cookie, "X-Forwarded-For": "10.20.0.5"}
        if blocked:
            return path, {**BROWSER, "X-Forwarded-For": f"{BLOCKED}.{rng.randrange(1, 255)}"}
        return path, {**BROWSER, "X-Forwarded-For": anywhere(rng, target.addresses)}

    return build


def _api(*, registered: bool) -> Build:
    def build(target: Target, rng: random.Random) -> tuple[str, dict[str, str]]:
        token = target.api_token if registered else secrets.token_urlsafe(24)
        # The gateway reads X-API-Key (the soak policy's api.tokens); the demo CRM its own token.
        headers = {
            "Accept": "application/json",
            "X-API-Key": token,
            "Authorization": "Token demo-token-bob",
            "X-Forwarded-For": "10.30.0.7",  # the integration server
        }
        return "/api/contacts", headers

    return build


MIX = (
    Kind("anonymous page", 30, frozenset({200}), _page("/hello")),
    Kind("anonymous login page", 5, frozenset({200}), _page("/login")),
    Kind("signed-in CRM page", 30, frozenset({200}), _page("/contacts", cookie=True)),
    Kind("signed-in account page", 3, frozenset({200}), _page("/_gateway/account", cookie=True)),
    Kind("API, registered token", 20, frozenset({200}), _api(registered=True)),
    Kind("denied: blocked address", 5, frozenset({403}), _page("/hello", blocked=True)),
    Kind("denied: path", 4, frozenset({403}), _page("/admin/users")),
    Kind("denied: unknown token", 3, frozenset({401}), _api(registered=False)),
)


async def timed_get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], stats: Stats, kind: str
) -> int | None:
    """One GET, its body read; the status, or None when it failed (counted)."""
    try:
        async with http.get(url, headers=headers, allow_redirects=False) as r:
            await r.read()
            return r.status
    except TimeoutError:
        stats.failures[f"{kind}: timeout"] += 1
    except aiohttp.ClientError as exc:
        stats.failures[f"{kind}: {type(exc).__name__}"] += 1
    return None


async def load_worker(
    http: aiohttp.ClientSession, target: Target, stats: Stats, deadline: float, seed: int
) -> None:
    rng = random.Random(seed)
    weights = [k.weight for k in MIX]
    for _ in range(2_000_000):  # far above what a worker can send; the deadline ends it
        if time.monotonic() >= deadline:
            return
        kind = rng.choices(MIX, weights)[0]
        path, headers = kind.build(target, rng)
        started = time.perf_counter()
        status = await timed_get(http, target.url + path, headers, stats, kind.name)
        if status is not None:
            stats.latencies.append(time.perf_counter() - started)
            stats.note(kind.name, status, kind.expected)


async def mixed_load(target: Target, stats: Stats, seconds: float, concurrency: int) -> float:
    """`concurrency` workers, each sending one request after another until `seconds` pass.
    Returns the seconds it really took (the last requests end after the deadline)."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    started = time.monotonic()
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), timeout=TIMEOUT
    ) as http:
        deadline = started + seconds
        await asyncio.gather(
            *(load_worker(http, target, stats, deadline, seed) for seed in range(concurrency))
        )
    return time.monotonic() - started


# -- sign-in through the real pages ----------------------------------------------------------


def form_field(html: str, name: str) -> str:
    found = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    if found is None:
        raise RuntimeError(f"no field {name!r} in the page: {html[:300]!r}")
    return unescape(found.group(1))


class Browser:
    """One browser: its own cookie jar and address, following no redirect on its own."""

    def __init__(self, url: str, address: str) -> None:
        self.url = url
        self.jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of an IP-address host
        headers = {**BROWSER, "X-Forwarded-For": address}
        self.http = aiohttp.ClientSession(cookie_jar=self.jar, headers=headers, timeout=TIMEOUT)

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def get(self, path: str) -> tuple[int, str, str]:
        async with self.http.get(self.url + path, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers.get("Location", "")

    async def post(self, path: str, data: dict[str, str]) -> tuple[int, str, str]:
        async with self.http.post(self.url + path, data=data, allow_redirects=False) as r:
            return r.status, await r.text(), r.headers.get("Location", "")

    def cookie_header(self) -> str:
        return "; ".join(f"{c.key}={c.value}" for c in self.jar)

    async def crm_login(self, user: str) -> tuple[int, str]:
        """The demo CRM's own login form, through the gateway: (status, where it sends us)."""
        _, html, _ = await self.get("/login")
        form = {
            "csrf_token": form_field(html, "csrf_token"),
            "username": user,
            "password": f"{user}-demo",
            "next": "/contacts",
        }
        status, _, location = await self.post("/login", form)
        return status, location


def expect(step: str, got: tuple[int, str, str], status: int) -> tuple[int, str, str]:
    if got[0] != status:
        raise RuntimeError(f"sign-in: {step} answered {got[0]}, not {status}: {got[1][:300]!r}")
    return got


async def enrol(url: str, user: str, address: str) -> tuple[str, str]:
    """A first sign-in as a person does it: the CRM's login, the authenticator enrolled from
    the text key with a real TOTP code, the recovery codes confirmed. (The Cookie header of
    the complete session, the authenticator's secret.)"""
    async with Browser(url, address) as b:
        status, location = await b.crm_login(user)
        if (status, location) not in {(302, "/_gateway/enrol"), (303, "/_gateway/enrol")}:
            raise RuntimeError(f"sign-in: the CRM login of {user} led to {status} {location!r}")
        _, html, _ = expect("enrol page", await b.get("/_gateway/enrol"), 200)
        key = re.search(r'id="secret-key"><code>([^<]+)</code>', html)
        if key is None:
            raise RuntimeError("sign-in: no key on the enrolment page")
        secret = key.group(1).replace(" ", "")
        code = pyotp.TOTP(secret).now()
        form = {"csrf": form_field(html, "csrf"), "name": "Soak phone", "code": code}
        expect("enrolment", await b.post("/_gateway/enrol", form), 303)
        _, html, _ = expect("codes page", await b.get("/_gateway/recovery-codes"), 200)
        form = {"csrf": form_field(html, "csrf"), "saved": "1"}
        expect("codes saved", await b.post("/_gateway/recovery-codes", form), 303)
        expect("first CRM page", await b.get("/contacts"), 200)
        return b.cookie_header(), secret


def wrong_code(secret: str, rng: random.Random) -> str:
    """Six digits the authenticator shows neither now nor within two minutes either way."""
    totp, now = pyotp.TOTP(secret), time.time()
    near = {totp.at(now + 30 * step) for step in range(-4, 5)}
    for _ in range(100):
        code = f"{rng.randrange(1_000_000):06d}"
        if code not in near:
            return code
    raise RuntimeError("no wrong code in 100 tries")


async def wrong_code_round(
    target: Target, user: str, secret: str, stats: Stats, rng: random.Random
) -> None:
    """A colleague mistypes: the CRM login, the challenge, one wrong code. After five of them
    carol is locked out for a while, and the login or the challenge answers 429."""
    kind, fine = "wrong code (sign-in steps)", frozenset({200, 302, 303, 429})
    try:
        async with Browser(target.url, anywhere(rng, target.addresses)) as b:
            status, location = await b.crm_login(user)
            stats.note(kind, status, fine)
            if location != "/_gateway/challenge":
                return
            status, html, _ = await b.get("/_gateway/challenge?factor=totp")
            stats.note(kind, status, fine)
            if status != 200:
                return
            form = {
                "csrf": form_field(html, "csrf"),
                "factor": "totp",
                "code": wrong_code(secret, rng),
            }
            status, _, _ = await b.post("/_gateway/challenge", form)
            stats.note("wrong code (the answer)", status, frozenset({200, 400, 401, 429}))
    except TimeoutError:
        stats.failures[f"{kind}: timeout"] += 1
    except (aiohttp.ClientError, RuntimeError) as exc:
        stats.failures[f"{kind}: {type(exc).__name__}"] += 1


async def wrong_codes(
    target: Target, user: str, secret: str, stats: Stats, seconds: float, every: float
) -> None:
    rng = random.Random(7)
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / every) + 1):
        await asyncio.sleep(min(every, max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            return
        await wrong_code_round(target, user, secret, stats, rng)
