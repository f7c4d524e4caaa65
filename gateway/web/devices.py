"""Remembered devices: the signed cookie a browser gets once a factor passed on it, the row
that says until when it stands in for the factor, and forgetting devices when how a user
signs in changes (security catalogue OTP-9). A device never skips the password or the
address rules: gateway.signin.decision decides when it skips the factor.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from aiohttp import web

from gateway.clock import Clock
from gateway.model import Settings
from gateway.signin.session import DEVICE_MAX_AGE, SessionBook
from gateway.stores import Device, DurableStore
from gateway.web.audit import audit_event
from gateway.web.cookies import DEVICE_COOKIE, Cookies


@dataclass(frozen=True)
class Devices:
    _durable: DurableStore
    _book: SessionBook
    _cookies: Cookies
    _clock: Clock

    def device_id(self, request: web.Request, user: str) -> str | None:
        """The id the device cookie names, when it was issued to this user (no store read)."""
        cookie = self._cookies.get(request, DEVICE_COOKIE)
        return self._book.device_from_cookie(cookie, user) if cookie else None

    async def device_of(self, request: web.Request, user: str) -> Device | None:
        """The browser's device row, when it is this user's and not revoked."""
        device_id = self.device_id(request, user)
        found = await self._durable.device(device_id) if device_id else None
        if found is None or found.user != user or found.revoked is not None:
            return None
        return found

    async def remember(
        self,
        request: web.Request,
        response: web.Response,
        user: str,
        settings: Settings,
        remember: bool,
        now: float,
    ) -> None:
        """A factor passed on this browser at `now` (the time the session records): its row
        says so (and, when the user asked and the policy allows, until when it is
        remembered); the cookie names the row."""
        found = await self.device_of(request, user)
        remember = remember and settings.remember_device > 0
        until = now + settings.remember_device if remember else 0.0
        if found is not None:
            row = found._replace(verified=now, remembered_until=max(until, found.remembered_until))
        else:
            agent = request.headers.get("User-Agent", "")
            row = Device(secrets.token_urlsafe(16), user, device_label(agent), now, now, until)
        await self._durable.save_device(row)
        if remember:
            audit_event(request, "device.remembered", outcome="ok", user=user)
        value = self._book.device_cookie(row.id, user)
        response.headers.add(*self._cookies.set(request, DEVICE_COOKIE, value, DEVICE_MAX_AGE))

    async def forget_others(self, request: web.Request, user: str, why: str) -> None:
        """How this user signs in changed (a factor added or removed, new recovery codes, a
        recovery code used): every remembered device but this browser asks for a factor
        again (security catalogue OTP-9)."""
        here = self.device_id(request, user)
        now = self._clock.now()
        forgotten = 0
        for device in await self._durable.devices(user):
            if device.id != here and await self._durable.revoke_device(user, device.id, now):
                forgotten += 1
        if forgotten:
            audit_event(
                request, "device.revoked", outcome="ok", user=user, reason=why, count=forgotten
            )


def device_label(agent: str) -> str:
    """`Firefox on Windows`: enough to recognise a device in a list, nothing more."""
    browsers = [("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox")]
    browsers += [("Chrome/", "Chrome"), ("Safari/", "Safari")]
    systems = [("Windows", "Windows"), ("Android", "Android"), ("iPhone", "iPhone")]
    systems += [("iPad", "iPad"), ("Mac OS X", "macOS"), ("Linux", "Linux")]
    browser = next((name for mark, name in browsers if mark in agent), "Browser")
    system = next((name for mark, name in systems if mark in agent), "")
    return f"{browser} on {system}" if system else browser
