"""Sign-in on the request path: who a browser is (our session cookie), the CRM's login seen and
its cookies held back until the second factor passes, the CRM's logout, and finishing a
sign-in (release the cookies, a fresh session id, the device remembered).

The pages themselves (challenge, enrolment, account) are gateway.web.routes; this module owns
what happens to requests bound for the CRM and the steps every page shares.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import logging
import re
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from aiohttp import ClientResponse, web
from multidict import CIMultiDict

from gateway.clock import Clock
from gateway.config import Config
from gateway.crypto import SealBroken, Sealer, same, verify_password
from gateway.decision import (
    Asks,
    Device,
    Facts,
    Kind,
    Request,
    Rules,
    Who,
    decide,
    mandatory,
)
from gateway.errors import HttpError
from gateway.factors.codes import CodeBook
from gateway.factors.recovery import RecoveryFactor
from gateway.factors.registry import build_factors
from gateway.factors.totp import TotpFactor
from gateway.fields import readings
from gateway.headers import fold
from gateway.identity import set_cookie_names
from gateway.model import Action, Decision, Settings
from gateway.pathrules import normalize_path
from gateway.regulation import Regulator
from gateway.senders import Sender
from gateway.session import DEVICE_MAX_AGE, FULL, Session, SessionBook
from gateway.stores import Device as StoredDevice
from gateway.stores import DurableStore, SharedStore
from gateway.web import proxy
from gateway.web.guard import Guard, audit_event
from gateway.web.keys import SESSION, USER, VIEW
from gateway.web.render import LANGUAGE_COOKIE, locked_text, page, retry_after, translator
from gateway.web.upstream import Adjust

log = logging.getLogger("gateway.signin")

DEVICE_COOKIE = "crm_gateway_device"
LOGIN_COOKIE = "crm_gateway_login"  # gateway mode: the login form's double-submit nonce
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CODES_WAIT = 30 * 86400.0  # recovery codes never confirmed are shown again for this long


@dataclass(frozen=True)
class Passwords:
    """login.mode gateway: user name (canonical) → argon2id hash, read from users_file."""

    hashes: dict[str, str]


class SignIn:
    def __init__(
        self,
        config: Config,
        guard: Guard,
        book: SessionBook,
        regulator: Regulator,
        durable: DurableStore,
        shared: SharedStore,
        sealer: Sealer,
        clock: Clock,
        passwords: Passwords | None = None,
        codes: CodeBook | None = None,
        senders: dict[str, Sender] | None = None,
    ) -> None:
        login = config.signin.login
        assert login is not None
        self.config = config
        self.login = login
        self.guard = guard
        self.book = book
        self.regulator = regulator
        self.durable = durable
        self.shared = shared
        self.sealer = sealer
        self.clock = clock
        self.passwords = passwords
        self.codes = codes  # SMS and e-mail codes, when a channel is configured
        self.senders = senders or {}  # "sms" / "email" → the provider that sends them
        # Every second factor, by the name the policy gives it (gateway.factors.registry).
        self.factors = build_factors(
            durable=durable,
            regulator=regulator,
            sealer=sealer,
            clock=clock,
            codes=codes,
            channels=self.senders.keys(),
            contact=self.contact,
        )
        self.messaging = config.messaging
        self.prefix = config.path_prefix
        cookies = {
            config.signin.sessions.cookie_name,
            DEVICE_COOKIE,
            LANGUAGE_COOKIE,
            LOGIN_COOKIE,
        }
        self._own_cookies = frozenset({*cookies, *(f"__Host-{c}" for c in cookies)})
        self.crm_cookies = frozenset(login.crm_cookies)
        self._own_and_crm_cookies = self._own_cookies | self.crm_cookies
        self._identity = fold(login.identity_header) if login.mode == "gateway" else ""
        self._tasks: set[asyncio.Task[None]] = set()
        # Where a browser signs in again: the CRM's login, or ours.
        self.login_url = login.path if login.mode == "upstream" else f"{self.prefix}login"

    def spawn(self, work: Coroutine[Any, Any, None], *, name: str) -> None:
        """Work that outlives its request (a notice to send): named, kept until it ends,
        its failure logged, and waited for at shutdown (`close`)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    async def close(self, grace: float = 5.0) -> None:
        """Let background work finish (for up to `grace` seconds), then cancel what is left."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                task.cancel()

    def contact(self, user: str, channel: str) -> str:
        """The user's phone number (E.164) or e-mail address from the policy; "" if none."""
        found = self.guard.user_for(user)
        return found.phone if channel == "sms" else found.email if channel == "email" else ""

    # -- cookies ---------------------------------------------------------------------------

    def secure(self, request: web.Request) -> bool:
        return request[VIEW].proto == "https"

    def cookie_name(self, request: web.Request, base: str) -> str:
        # `__Host-`: only over HTTPS, for this host and path / only; a sibling subdomain
        # cannot plant or overwrite it (session fixation through a cookie jar).
        return f"__Host-{base}" if self.secure(request) else base

    def set_cookie(
        self, request: web.Request, base: str, value: str, max_age: float | None = None
    ) -> tuple[str, str]:
        parts = [f"{self.cookie_name(request, base)}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
        if max_age is not None:
            parts.append(f"Max-Age={int(max_age)}")
        if self.secure(request):
            parts.append("Secure")
        return ("Set-Cookie", "; ".join(parts))

    def session_cookie(self, request: web.Request, session: Session) -> tuple[str, str]:
        base = self.config.signin.sessions.cookie_name
        return self.set_cookie(request, base, self.book.cookie_value(session))

    def clear_session_cookie(self, request: web.Request) -> tuple[str, str]:
        return self.set_cookie(request, self.config.signin.sessions.cookie_name, "", max_age=0)

    async def session(self, request: web.Request) -> Session | None:
        """The request's live session (cached on the request)."""
        if SESSION in request:
            return request[SESSION]
        base = self.config.signin.sessions.cookie_name
        session = await self.book.load(request.cookies.get(self.cookie_name(request, base)))
        if session is not None:
            request[SESSION] = session
            if session.stage == FULL:
                request[USER] = session.user
        return session

    # -- requests bound for the CRM ----------------------------------------------------------

    def adjust(self, signed_in: str | None, binding: str = "") -> Adjust:
        """Our cookies never reach the CRM; the CRM's own only with a full session, and its
        session cookie only with the value released to this session (`binding`: a copy of
        another user's CRM cookie is no use inside one's own gateway session); the identity
        header (gateway mode) only as we set it."""
        drop = self._own_cookies if signed_in else self._own_and_crm_cookies
        identity = self._identity
        bound = self.login.success_cookie if signed_in and self.login.mode == "upstream" else ""

        def keep(pair: str) -> bool:
            names = _names_read(pair)
            if not pair.strip() or names & drop:
                return False
            if bound and bound in names:
                name, _, value = pair.strip().partition("=")
                return name == bound and binding != "" and same(cookie_binding(value), binding)
            return True

        def adjust(headers: CIMultiDict[str]) -> None:
            if identity:
                for name in [n for n in headers if fold(n) == identity]:
                    headers.popall(name, None)
                if signed_in:
                    headers[self.login.identity_header] = signed_in
            cookies = headers.getall("Cookie", [])
            if cookies:
                kept = [pair.strip() for line in cookies for pair in line.split(";") if keep(pair)]
                headers.popall("Cookie", None)
                if kept:
                    headers["Cookie"] = "; ".join(kept)

        return adjust

    def is_crm_login(self, request: web.Request) -> bool:
        """A request to the CRM's own login form (login mode upstream), in any spelling a
        router may take for it: a trailing slash, another case (Rails and IIS do)."""
        login = self.login
        if login.mode != "upstream" or request.method != login.method:
            return False
        path = normalize_path(request.raw_path.partition("?")[0])
        return path.rstrip("/").lower() == login.path.rstrip("/").lower()

    @property
    def gateway_mode(self) -> bool:
        return self.login.mode == "gateway"

    async def forward_signed_in(
        self, request: web.Request, target: str, body: bytes | None = None
    ) -> web.StreamResponse:
        """A signed-in user's request: with the CRM cookie released to this session (and the
        identity header in gateway mode); the CRM's logout ends our session too; a CRM cookie
        rotated on the way is followed."""
        session = request[SESSION]
        login = self.login
        add: list[tuple[str, str]] = []
        path = target.partition("?")[0]
        if login.logout_path == path and request.method == login.logout_method:
            await self.book.end(session)
            add.append(self.clear_session_cookie(request))
            audit_event(request, "signin.logout", outcome="ok")
        return await proxy.handle(
            request,
            target,
            adjust=self.adjust(session.user, session.crm_binding),
            add_headers=add,
            observe=functools.partial(self._crm_cookie_set, request, session),
            body=body,
        )

    async def password_attempt(self, request: web.Request, user: str) -> float:
        """Count a password attempt for `user` from this request (0: go ahead), auditing a
        refusal: a lockout at this address, or the account's slow-down (passed by the user's
        own devices and usual addresses)."""
        regulator = self.regulator

        async def known_device() -> bool:
            return await self.device_of(request, user) is not None

        until = await regulator.password_attempt(user, request[VIEW].ip, known_device)
        if until:
            paused = until == await regulator.account_paused_until(user)
            reason = "account_paused" if paused else "locked"
            audit_event(request, "signin.locked", outcome="locked", user=user, reason=reason)
        return until

    # -- the steps every page shares ---------------------------------------------------------

    def settings(self, user: str) -> Settings:
        return self.guard.settings(user)

    def offered(self, settings: Settings) -> list[str]:
        """The policy's factors that can be offered here: SMS and e-mail only with a provider
        configured (a user without a number on file still sees the choice, and is told why)."""
        return [f for f in settings.factors if f in self.factors and self.factors[f].offerable()]

    async def facts(self, request: web.Request, user: str, *, device: bool = True) -> Facts:
        """What this user has on file, read for a decision: the factors they could answer
        now and (`device`, when one of them is) the remembered device this browser names."""
        settings = self.settings(user)
        offered = self.offered(settings)
        usable = tuple([f for f in offered if await self.factors[f].on_file(user)])
        found = await self.device_of(request, user) if device and usable else None
        return Facts(
            offered=tuple(offered),
            usable=usable,
            sends=frozenset(f for f in offered if self.factors[f].sends),
            device=Device(found.verified, found.remembered_until) if found else None,
        )

    def rules(self) -> Rules:
        return Rules(
            gateway_login=self.login.mode == "gateway",
            step_up_window=self.config.signin.sessions.step_up_window,
        )

    def decide(self, request: web.Request, who: Who, asks: Asks, facts: Facts) -> Decision:
        """The Decision for a sign-in (Asks.SIGN_IN) or a change (Asks.CHANGE)."""
        ask = Request(asks, request[VIEW].ip)
        now = self.clock.now()
        return decide(self.guard.view, who, ask, facts=facts, now=now, rules=self.rules())

    @property
    def totp(self) -> TotpFactor:
        """The authenticator-app factor, for the pages that add and list apps."""
        found = self.factors["totp"]
        assert isinstance(found, TotpFactor)
        return found

    @property
    def recovery(self) -> RecoveryFactor:
        """The recovery-code factor, for the pages that issue and count codes."""
        found = self.factors["recovery"]
        assert isinstance(found, RecoveryFactor)
        return found

    def mandatory(self, settings: Settings) -> bool:
        return mandatory(settings, self.clock.now())

    async def forget_other_devices(self, request: web.Request, user: str, why: str) -> None:
        """How this user signs in changed (a factor added or removed, new recovery codes, a
        recovery code used): every remembered device but this browser asks for a factor
        again (security catalogue OTP-9)."""
        here = self.device_id(request, user)
        now = self.clock.now()
        forgotten = 0
        for device in await self.durable.devices(user):
            if device.id != here and await self.durable.revoke_device(user, device.id, now):
                forgotten += 1
        if forgotten:
            audit_event(
                request, "device.revoked", outcome="ok", user=user, reason=why, count=forgotten
            )

    def device_id(self, request: web.Request, user: str) -> str | None:
        """The id the device cookie names, when it was issued to this user (no store read)."""
        cookie = request.cookies.get(self.cookie_name(request, DEVICE_COOKIE))
        return self.book.device_from_cookie(cookie, user) if cookie else None

    async def device_of(self, request: web.Request, user: str) -> StoredDevice | None:
        device_id = self.device_id(request, user)
        found = await self.durable.device(device_id) if device_id else None
        if found is None or found.user != user or found.revoked is not None:
            return None
        return found

    async def after_password(self, request: web.Request, session: Session) -> web.Response:
        """The password passed: acts on the sign-in's Decision (gateway.decision: straight
        in, a challenge, or the enrolment page)."""
        user = session.user
        who = Who(Kind.SIGNING_IN, user, verified=session.verified)
        decision = self.decide(request, who, Asks.SIGN_IN, await self.facts(request, user))
        if decision.action is Action.FORWARD:
            if decision.reason == "device_trusted":
                audit_event(request, "signin.device_trusted", outcome="ok", user=user)
                return await self.complete(request, session, factor="device")
            return await self.complete(request, session, factor="")
        # The challenge page also explains what is missing (no number on file, no factor).
        page = "enrol" if decision.reason == "enrol" else "challenge"
        response = self.redirect(f"{self.prefix}{page}")
        response.headers.add(*self.session_cookie(request, session))
        return response

    # -- what a session keeps for a later page (sealed to it) ----------------------------------

    def seal_pending(self, session: Session, name: str, value: str) -> None:
        sealed = self.sealer.seal(value.encode(), f"pending\x00{name}\x00{session.sid}")
        session.pending[name] = base64.b64encode(sealed).decode()

    def unsealed_pending(self, session: Session, name: str) -> str | None:
        raw = session.pending.get(name)
        if not raw:
            return None
        try:
            data = base64.b64decode(raw)
            return self.sealer.unseal(data, f"pending\x00{name}\x00{session.sid}").decode()
        except (SealBroken, ValueError):
            return None

    async def offer_codes(self, session: Session, codes: list[str]) -> None:
        """New recovery codes to show: in this session now, and again at each sign-in until
        the user confirms they saved them (a closed tab must not lose the only copy)."""
        text = "\n".join(codes)
        self.seal_pending(session, "recovery", text)
        sealed = self.sealer.seal(text.encode(), f"codes-waiting\x00{session.user}")
        await self.shared.put(f"codes-waiting:{session.user}", sealed, CODES_WAIT)

    async def codes_saved(self, session: Session) -> None:
        session.pending.pop("recovery", None)
        session.pending.pop("after_codes", None)
        await self.book.save(session)
        await self.shared.delete(f"codes-waiting:{session.user}")

    async def _codes_waiting(self, user: str) -> str | None:
        """Codes shown once and not yet confirmed, while they are still this user's."""
        data = await self.shared.get(f"codes-waiting:{user}")
        if data is None:
            return None
        try:
            text = self.sealer.unseal(data, f"codes-waiting\x00{user}").decode()
        except SealBroken:
            return None
        return text if await self.recovery.left(user) else None

    def redirect(self, location: str) -> web.Response:
        return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})

    async def release_held(self, session: Session) -> list[str] | None:
        """The CRM's cookies, once; None when they expired (the CRM login must be repeated)."""
        if not session.held:
            return []
        data = await self.shared.take(session.held)
        if data is None:
            return None
        try:
            found = json.loads(self.sealer.unseal(data, f"held\x00{session.user}"))
        except (SealBroken, ValueError):
            return None
        return [str(c) for c in found] if isinstance(found, list) else None

    async def complete(
        self, request: web.Request, session: Session, *, factor: str, remember: bool = False
    ) -> web.Response:
        """Second factor passed (or not needed): the browser gets the CRM's cookies and a fresh
        gateway session, and goes where it was going."""
        held = await self.release_held(session)
        if held is None:
            await self.book.end(session)
            return self.expired(request)
        now = self.clock.now()
        passed = factor not in ("", "device")  # a factor answered just now
        verified = now if passed else session.verified
        released = set_cookie_names(held).get(self.login.success_cookie, "")
        fresh = await self.book.rotate(
            session,
            stage=FULL,
            verified=verified,
            held="",
            pending={},
            crm_binding=cookie_binding(released) if released else "",
        )
        if fresh is None:
            return self.expired(request)
        request[SESSION] = fresh
        request[USER] = fresh.user
        going = fresh.return_to or "/"
        # Codes never confirmed are shown again only to a sign-in that just passed a factor
        # (not to a remembered device: showing them asks as much as making new ones).
        waiting = await self._codes_waiting(fresh.user) if passed else None
        if waiting is not None:
            # Recovery codes shown before and never confirmed: shown again first.
            self.seal_pending(fresh, "recovery", waiting)
            self.seal_pending(fresh, "after_codes", going)
            await self.book.save(fresh)
            going = f"{self.prefix}recovery-codes"
        response = self.redirect(going)
        for cookie in held:
            response.headers.add("Set-Cookie", cookie)
        response.headers.add(*self.session_cookie(request, fresh))
        if passed:
            await self._remember(request, response, fresh.user, now, remember)
            await self.regulator.remember_place(fresh.user, request[VIEW].ip)
        audit_event(
            request, "signin.completed", outcome="ok", user=fresh.user, reason=factor or "none"
        )
        return response

    async def _remember(
        self, request: web.Request, response: web.Response, user: str, now: float, remember: bool
    ) -> None:
        settings = self.settings(user)
        found = await self.device_of(request, user)
        remember = remember and settings.remember_device > 0
        until = now + settings.remember_device if remember else 0.0
        if found is not None:
            row = found._replace(verified=now, remembered_until=max(until, found.remembered_until))
        else:
            agent = request.headers.get("User-Agent", "")
            row = StoredDevice(
                secrets.token_urlsafe(16), user, device_label(agent), now, now, until
            )
        await self.durable.save_device(row)
        if remember:
            audit_event(request, "device.remembered", outcome="ok", user=user)
        value = self.book.device_cookie(row.id, user)
        response.headers.add(*self.set_cookie(request, DEVICE_COOKIE, value, DEVICE_MAX_AGE))

    async def _crm_cookie_set(
        self, request: web.Request, session: Session, upstream: ClientResponse
    ) -> frozenset[str]:
        """The CRM set its session cookie on a signed-in request. A new id on a page view is
        a rotation (CRMs rotate ids on privilege changes): the binding follows, so the user
        stays signed in to the CRM. A new session from a form or an API call may be a login
        as someone else at a route the gateway does not watch: never adopted, dropped and
        audited, and the user keeps their own. The cookie names to drop."""
        if self.login.mode != "upstream" or "Set-Cookie" not in upstream.headers:
            return frozenset()
        name = self.login.success_cookie
        value = set_cookie_names(upstream.headers.getall("Set-Cookie")).get(name)
        if not value or value in ('""', "deleted"):
            return frozenset()
        binding = cookie_binding(value)
        if binding == session.crm_binding:
            return frozenset()  # the same session, sent again
        if request.method not in SAFE_METHODS:
            audit_event(request, "signin.crm_cookie_dropped", outcome="refused")
            return frozenset({name})
        session.crm_binding = binding
        await self.book.save(session)
        return frozenset()

    def locked_page(self, request: web.Request, until: float) -> web.Response:
        t = translator(request)
        text = locked_text(request, until, "login.locked")
        response = page(request, "notice.html", t("login.title"), status=429, paragraphs=[text])
        response.headers["Retry-After"] = retry_after(request, until)
        return response

    def expired(self, request: web.Request) -> web.Response:
        t = translator(request)
        response = page(
            request,
            "notice.html",
            t("signin.expired.title"),
            status=400,
            paragraphs=[t("signin.expired.body")],
            link=(self.login_url, t("signin.again")),
        )
        response.headers.add(*self.clear_session_cookie(request))
        return response

    async def verify_password(self, user: str, password: str) -> bool:
        stored = self.passwords.hashes.get(user) if self.passwords else None
        return await asyncio.to_thread(verify_password, stored, password)

    async def watch_revocations(self) -> None:
        """Admin resets and `sessions revoke` reach every worker within seconds; so do admin
        requests for state only the gateway holds (`users unlock`: lockouts in the shared
        store, which may be this process's memory)."""
        version = -1
        while True:
            with contextlib.suppress(HttpError):
                found = await self.durable.revocations_version()
                if found != version:
                    version, self.book.revocations = await self.durable.revocations()
                await self.carry_out_requests()
            await asyncio.sleep(2.0)

    async def carry_out_requests(self) -> None:
        for request_id, action, user in await self.durable.pending_requests():
            if action == "unlock" and await self.durable.claim_request(
                request_id, self.clock.now()
            ):
                await self.regulator.unlock(user)
                log.info("admin request %d: %s unlocked", request_id, user)


class SignInRequired(HttpError):
    status = 401
    reason = "signin_required"


_COOKIE_GAP = re.compile(r"[\s,]+")
# `name=value` (after the space of `; `) with a token name and a value of visible ASCII other
# than `,` and `;`: read one way by everyone. Most pieces of most requests look like this, so
# they skip the readings below (on every request of a signed-in user).
_PLAIN_PAIR = re.compile(r" *([A-Za-z0-9_-]+)=[\x21-\x2b\x2d-\x3a\x3c-\x7e]*")


def _names_read(pair: str) -> set[str]:
    """The cookie names some server may read in one `;`-separated piece of a Cookie header.
    aiohttp and http.cookies also split at whitespace (`a=1 crm=x`, `a=1, crm=x`); PHP
    url-decodes a name and reads `.` and ` ` in it as `_` and `name[..]` as `name`."""
    plain = _PLAIN_PAIR.fullmatch(pair)  # most pairs: one name every reader agrees on
    return {plain.group(1)} if plain is not None else names_read_every_way(pair)


def names_read_every_way(pair: str) -> set[str]:
    """_names_read without its shortcut: each reader's way of finding names, in full."""
    names = [pair.split("=", 1)[0]]
    names += [token.split("=", 1)[0] for token in _COOKIE_GAP.split(pair) if "=" in token]
    found = {name.strip() for name in names}
    for name in names:
        # PHP url-decodes a cookie's name and reads it as it reads a form field's.
        whole, arrays = readings(unquote(name).strip())
        found |= whole | arrays
    return found


def cookie_binding(value: str) -> str:
    """What a session remembers of the CRM cookie released to it: a digest, not the value."""
    return hashlib.sha256(value.encode()).hexdigest()


def _quote(path: str) -> str:
    return quote(path, safe="")


def device_label(agent: str) -> str:
    """`Firefox on Windows`: enough to recognise a device in a list, nothing more."""
    browsers = [("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox")]
    browsers += [("Chrome/", "Chrome"), ("Safari/", "Safari")]
    systems = [("Windows", "Windows"), ("Android", "Android"), ("iPhone", "iPhone")]
    systems += [("iPad", "iPad"), ("Mac OS X", "macOS"), ("Linux", "Linux")]
    browser = next((name for mark, name in browsers if mark in agent), "Browser")
    system = next((name for mark, name in systems if mark in agent), "")
    return f"{browser} on {system}" if system else browser
