"""SMS through any provider with an HTTP API: `{to}` and `{text}` filled into a body template.
Also what Twilio's sender shares with it (ApiSender: the lazy session, the retry rules);
never puts a body in a detail.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Generic, TypeVar

import aiohttp
from multidict import CIMultiDict

from gateway.config.messaging import HttpProvider, TwilioProvider
from gateway.senders.protocols import Delivery, Message
from gateway.senders.retry import Attempt, Outcome, deliver, secrets_of

# The connection was never made: the provider cannot have the message; try again.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientConnectorError,)
# Slow, reset or cut off once connected: the provider may have the message; never again.
UNCERTAIN_ERRORS: tuple[type[Exception], ...] = (
    TimeoutError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
)
P = TypeVar("P", HttpProvider, TwilioProvider)
_PLACEHOLDER = re.compile(r"\{(to|text)\}")
_CONTENT_TYPES = {"json": "application/json", "form": "application/x-www-form-urlencoded"}


def is_transient(status: int) -> bool:
    """429 (slow down) and 503 (not now) say the message was not taken: worth another try.
    Other answers are final: a 500 may have come after the message went out."""
    return status in (429, 503)


def render_body(template: str, body_format: str, to: str, text: str) -> str:
    """Fill `{to}` and `{text}` once each, escaped for `body_format` ("json" or "form")."""
    escape: Callable[[str], str] = (
        _json_string if body_format == "json" else urllib.parse.quote_plus
    )
    values = {"to": to, "text": text}
    # One pass: a text that itself contains "{to}" is not filled again.
    return _PLACEHOLDER.sub(lambda match: escape(values[match.group(1)]), template)


def _json_string(value: str) -> str:
    return json.dumps(value)[1:-1]  # the inside of a JSON string literal


class LazySession:
    """One ClientSession per sender, made inside the running loop on first use."""

    def __init__(self, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)  # per attempt
        self._session: aiohttp.ClientSession | None = None
        self.closed = False

    def get(self) -> aiohttp.ClientSession:
        if self.closed:
            raise RuntimeError("the sender is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def close(self) -> None:
        self.closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


class ApiSender(Generic[P]):
    """What the senders that call an HTTP API share: one lazy session, bounded retries by
    the shared rules, and scrubbing of the message and the provider's own secrets. A
    subclass says how one attempt goes (`_attempt`) and what else must never be shown."""

    name = ""

    def __init__(self, provider: P, *, backoff: float = 0.5) -> None:
        self._provider: P = provider
        self._backoff = backoff
        self._session = LazySession(provider.timeout)

    async def send(self, message: Message) -> Delivery:
        if self._session.closed:
            return Delivery(ok=False, provider=self.name, detail="the sender is closed", attempts=0)
        return await deliver(
            self.name,
            self._attempt(message),
            retries=self._provider.retries,
            backoff=self._backoff,
            transient=TRANSIENT_ERRORS,
            uncertain=UNCERTAIN_ERRORS,
            secrets=[*secrets_of(message), *self._secrets()],
        )

    def _attempt(self, message: Message) -> Attempt:
        raise NotImplementedError

    def _secrets(self) -> list[str]:
        return []

    async def close(self) -> None:
        await self._session.close()


class HttpSender(ApiSender[HttpProvider]):
    name = "http"

    def _attempt(self, message: Message) -> Attempt:
        provider = self._provider
        body = render_body(provider.body, provider.format, message.to, message.text)
        url, data = provider.url, body.encode()
        if provider.method == "GET" and provider.format == "form":
            url, data = f"{url}{'&' if '?' in url else '?'}{body}", b""
        headers: CIMultiDict[str] = CIMultiDict(provider.headers)
        if data:
            content_type = _CONTENT_TYPES.get(provider.format, _CONTENT_TYPES["form"])
            headers.setdefault("Content-Type", content_type)

        async def attempt() -> Outcome:
            # Redirects are not followed: they would carry the API key headers elsewhere.
            async with self._session.get().request(
                provider.method, url, data=data or None, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                return Outcome(
                    ok=response.status in provider.success_status,
                    detail=f"status {response.status}",
                    transient=is_transient(response.status),
                )

        return attempt

    def _secrets(self) -> list[str]:
        return [value for _, value in self._provider.headers]
