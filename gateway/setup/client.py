"""The browser that detect-login and doctor drive: GET and POST on one site, redirects
followed only there, a cookie jar of its own (cookies the gateway would hold back can be
withheld, so a login is tried as the CRM will receive it), a deadline on every request, and
every answer kept for the checks that read them afterwards (absolute redirects, cookie
domains, the CRM's clock). Failures become DetectionFailed with one plain sentence."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import TracebackType
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp

from gateway import __version__
from gateway.clock import Clock
from gateway.errors import DetectionFailed
from gateway.setup.html import Page, read_page
from gateway.signin.identity import clears, set_cookie_names

MAX_BODY = 2 * 1024 * 1024  # a page bigger than this is read this far
MAX_HOPS = 10
USER_AGENT = f"Mozilla/5.0 (compatible; crm-gateway/{__version__} setup)"


@dataclass(frozen=True)
class Answer:
    method: str
    url: str  # as the browser asked for it (on the site, not where it connected)
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: str
    elapsed: float  # seconds until the whole answer was read
    received: float = 0.0  # when (the clock's now()), to compare with the CRM's Date

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str:
        found = self.all(name)
        return found[0] if found else ""

    @property
    def location(self) -> str:
        return self.header("Location")

    @property
    def set_cookies(self) -> list[str]:
        return self.all("Set-Cookie")

    @property
    def redirect(self) -> bool:
        return self.status in (301, 302, 303, 307, 308) and bool(self.location)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def target_of(url: str) -> str:
    """The path and query of a URL, as a request line carries them."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def cleared(set_cookie: str, now: float) -> bool:
    """A Set-Cookie that removes its cookie: empty, `deleted`, Max-Age=0 or expired."""
    pair, _, rest = set_cookie.partition(";")
    value = pair.partition("=")[2].strip()
    if clears(value):
        return True
    for attribute in rest.split(";"):
        name, _, text = attribute.strip().partition("=")
        if name.lower() == "max-age" and text.strip().lstrip("-").isdigit():
            return int(text) <= 0
        if name.lower() == "expires":
            try:
                return parsedate_to_datetime(text.strip()).timestamp() < now
            except (TypeError, ValueError):
                continue
    return False


@dataclass
class Browser:
    """One browser on `site` (the origin a person types). `connect_to`: another origin the
    requests really go to (a gateway on loopback in front of the site), keeping the site's
    Host. `withheld`: cookie names never kept nor sent. `headers`: added to every request.
    `aliases`: other origins whose addresses mean the site's own (a login found on the CRM,
    then opened through a gateway in front of it)."""

    site: str
    timeout: float
    clock: Clock
    connect_to: str = ""
    withheld: frozenset[str] = frozenset()
    headers: dict[str, str] = field(default_factory=dict)
    aliases: frozenset[str] = frozenset()  # origins taken for the site's (the CRM's, behind)
    jar: dict[str, str] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    _http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Browser:
        self.site = origin_of(self.site)
        self._http = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=None)
        )
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.close()

    def on_site(self, url: str) -> bool:
        return origin_of(url) == self.site

    async def send(
        self,
        method: str,
        url: str,
        *,
        form: list[tuple[str, str]] | None = None,
        json_body: dict[str, str] | None = None,
        referer: str = "",
    ) -> Answer:
        """One request on the site, its redirect not followed."""
        assert self._http is not None
        if origin_of(url) in self.aliases:
            url = self.site + target_of(url)
        headers = {"User-Agent": USER_AGENT, "Accept": "text/html,*/*;q=0.8", **self.headers}
        data: bytes | None = None
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = urlencode(form).encode()
        elif json_body is not None:
            headers["Content-Type"] = "application/json"
            headers["Accept"] = "application/json"
            data = json.dumps(json_body).encode()
        if method not in ("GET", "HEAD"):
            headers["Origin"] = self.site
        if referer:
            headers["Referer"] = referer
        cookies = [f"{k}={v}" for k, v in self.jar.items() if k not in self.withheld]
        if cookies:
            headers["Cookie"] = "; ".join(cookies)
        where = url
        if self.connect_to:
            where = self.connect_to + target_of(url)
            headers["Host"] = urlsplit(self.site).netloc
        started = self.clock.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                async with self._http.request(
                    method, where, data=data, headers=headers, allow_redirects=False
                ) as r:
                    raw = await r.content.read(MAX_BODY)
                    charset = r.charset or "utf-8"
                    answer = Answer(
                        method,
                        url,
                        r.status,
                        r.reason or "",
                        tuple(r.headers.items()),
                        raw.decode(charset, errors="replace"),
                        self.clock.monotonic() - started,
                        self.clock.now(),
                    )
        except TimeoutError:
            raise DetectionFailed(
                f"{url} did not answer within {self.timeout:g} s: is the CRM up, and is "
                "this its address? (--timeout waits longer)"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            code = exc.os_error.errno
            why = os.strerror(code).lower() if code else str(exc.os_error)
            raise DetectionFailed(f"cannot connect to {origin_of(url)}: {why}") from None
        except (aiohttp.ClientError, LookupError, ValueError) as exc:
            said = str(exc) or type(exc).__name__
            raise DetectionFailed(f"{url} gave no usable answer: {said}") from None
        self.answers.append(answer)
        self._keep(answer.set_cookies)
        return answer

    def _keep(self, set_cookies: list[str]) -> None:
        now = self.clock.now()
        for header in set_cookies:
            for name, value in set_cookie_names([header]).items():
                if name in self.withheld:
                    continue
                if cleared(header, now):
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = value

    async def open(self, url: str, answer: Answer | None = None) -> tuple[Answer, Page]:
        """A page as a browser arrives at it: GET `url` (or start from `answer`, a redirect
        already received), following redirects on the site. A page that failed (4xx, 5xx)
        or a redirect off the site is DetectionFailed."""
        seen = 0
        if answer is None:
            answer = await self.send("GET", url)
        while answer.redirect:
            seen += 1
            target = urljoin(answer.url, answer.location)
            if not self.on_site(target):
                raise DetectionFailed(
                    f"{answer.url} sends the browser to {target}, another site than "
                    f"{self.site}: if that is the CRM under another name, give that address; "
                    "a login on another site (single sign-on) cannot be watched by the gateway"
                )
            if seen > MAX_HOPS:
                raise DetectionFailed(f"{url} redirects more than {MAX_HOPS} times (a loop?)")
            answer = await self.send("GET", target, referer=answer.url)
        if answer.status >= 400:
            raise DetectionFailed(
                f"{answer.url} answered {answer.status} {answer.reason}: the CRM must show its "
                "page with 200 (is it up? does it work in a browser? is --path right?)"
            )
        return answer, read_page(answer.body, answer.url)
