"""Sign-in on the request path: who a browser is (our session cookie), the CRM's login seen and
its cookies held back until the second factor passes, the CRM's logout, finishing a sign-in
(release the cookies, a fresh session id, the device remembered), and the steps every page
(gateway.web.pages: challenge, enrolment, account) shares."""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from gateway.clock import Clock
from gateway.config.model import Config
from gateway.crypto import Sealer, verify_password
from gateway.errors import SealBroken
from gateway.factors.codes import CodeBook
from gateway.factors.recovery import RecoveryFactor
from gateway.factors.registry import build_factors, retired_factors
from gateway.factors.totp import TotpFactor
from gateway.model import Action, Decision, Settings
from gateway.senders import Sender
from gateway.signin.decision import (
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
from gateway.signin.identity import names_login, names_logout, set_cookie_names
from gateway.signin.regulation import Regulator
from gateway.signin.session import FULL, PASSWORD, Session, SessionBook
from gateway.stores import DurableStore, SharedStore
from gateway.tasks import Background
from gateway.web import proxy
from gateway.web.audit import audit_event
from gateway.web.client import Body, CrmResponse
from gateway.web.cookies import Cookies, cookie_binding
from gateway.web.devices import Devices
from gateway.web.guard import Guard
from gateway.web.keys import SESSION, USER, VIEW
from gateway.web.pages.render import locked_text, page, retry_after, translator
from gateway.web.pending import Pending

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
        tasks: Background | None = None,
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
            shared=shared,
            relying_party=config.webauthn,
        )
        self.messaging = config.messaging
        self.prefix = config.path_prefix
        self.tasks = tasks or Background()  # notices sent after a page answered
        self.cookies = Cookies(config.signin.sessions.cookie_name, login)
        self.devices = Devices(durable, book, self.cookies, clock)
        self.pending = Pending(sealer, shared, book, self.recovery.left)
        self.gateway_mode = login.mode == "gateway"  # our login page, not the CRM's
        # Where a browser signs in again: the CRM's login, or ours.
        self.login_url = login.path if login.mode == "upstream" else f"{self.prefix}login"

    def session_cookie(self, request: web.Request, session: Session) -> tuple[str, str]:
        """The Set-Cookie header naming `session` (signed, `__Host-` over HTTPS)."""
        return self.cookies.session(request, self.book.cookie_value(session))

    def contact(self, user: str, channel: str) -> str:
        """The user's phone number (E.164) or e-mail address from the policy; "" if none."""
        found = self.guard.user_for(user)
        return found.phone if channel == "sms" else found.email if channel == "email" else ""

    async def session(self, request: web.Request) -> Session | None:
        """The request's live session (cached on the request)."""
        if SESSION in request:
            return request[SESSION]
        session = await self.book.load(self.cookies.get(request, self.cookies.session_name))
        if session is not None:
            request[SESSION] = session
            if session.stage == FULL:
                request[USER] = session.user
        return session

    # -- requests bound for the CRM ----------------------------------------------------------

    def is_crm_login(self, request: web.Request) -> bool:
        """A request to the CRM's own login form (login mode upstream), in any spelling a
        router may take for it: a trailing slash, another case (Rails and IIS do)."""
        return names_login(self.login, request.method, request.raw_path)

    async def forward_signed_in(
        self, request: web.Request, target: str, body: Body = None
    ) -> web.StreamResponse:
        """A signed-in user's request: with the CRM cookie released to this session (and the
        identity header in gateway mode); the CRM's logout ends our session too; a CRM cookie
        rotated on the way is followed."""
        session = request[SESSION]
        add: list[tuple[str, str]] = []
        if self.signs_out(request.method, target, request.body_exists, request.headers):
            await self.book.end(session)
            add.append(self.cookies.clear_session(request))
            audit_event(request, "signin.logout", outcome="ok")
        return await proxy.handle(
            request,
            target,
            adjust=self.cookies.adjust(session.user, session.crm_binding),
            add_headers=add,
            observe=functools.partial(self.crm_cookie_set, request, session),
            body=body,
        )

    def signs_out(self, method: str, target: str, body: bool, headers: MultiMapping[str]) -> bool:
        """The CRM's logout (`target`: judged path and raw query; `body`, Cookie `headers`:
        what PHP may read over the query): it ends our session too, needing no due code."""
        fold = self.guard.fold_paths
        return names_logout(self.login, method, target, fold=fold, body=body, headers=headers)

    async def password_attempt(self, request: web.Request, user: str) -> float:
        """Count a password attempt for `user` from this request (0: go ahead), auditing a
        refusal: a lockout at this address, or the account's slow-down (passed by the user's
        own devices and usual addresses)."""
        regulator = self.regulator

        async def known_device() -> bool:
            return await self.devices.device_of(request, user) is not None

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
        found = await self.devices.device_of(request, user) if device and usable else None
        return Facts(
            offered=tuple(offered),
            usable=usable,
            sends=frozenset(f for f in offered if self.factors[f].sends),
            enrollable=tuple(f for f in offered if self.factors[f].enrol_page),
            device=Device(found.verified, found.remembered_until) if found else None,
            retired=() if usable else await retired_factors(self.factors, offered, user),
        )

    def rules(self) -> Rules:
        return Rules(
            gateway_login=self.login.mode == "gateway",
            step_up_window=self.config.signin.sessions.step_up_window,
            fold_paths=self.guard.fold_paths,
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

    async def begin(self, user: str, **values: Any) -> Session:
        """A sign-in whose password passed: its session, with the interval the user chose
        (read once per sign-in: requests never ask the store for it)."""
        found = await self.durable.interval_choice(user)
        chosen = None if found is None else found.seconds
        return await self.book.create(user, PASSWORD, chosen_interval=chosen, **values)

    async def after_password(
        self, request: web.Request, session: Session, facts: Facts | None = None
    ) -> web.Response:
        """The password passed: acts on the sign-in's Decision (gateway.signin.decision: straight
        in, a challenge, or the enrolment page). `facts`: the user's, read already."""
        user = session.user
        chosen = session.chosen_interval
        who = Who(Kind.SIGNING_IN, user, verified=session.verified, chosen_interval=chosen)
        facts = facts or await self.facts(request, user)
        decision = self.decide(request, who, Asks.SIGN_IN, facts)
        if decision.action is Action.FORWARD:
            if decision.reason == "device_trusted" and facts.device is not None:
                audit_event(request, "signin.device_trusted", outcome="ok", user=user)
                # The session's verification is the device's: `reverify` counts from there.
                since = facts.device.verified
                return await self.complete(request, session, factor="device", since=since)
            return await self.complete(request, session, factor="")
        # The challenge page also explains what is missing (no number on file, no factor).
        enrol = decision.reason == "enrol"
        page = self.factors[decision.factors[0]].enrol_page if enrol else "challenge"
        response = self.redirect(f"{self.prefix}{page}")
        response.headers.add(*self.session_cookie(request, session))
        return response

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
        self,
        request: web.Request,
        session: Session,
        *,
        factor: str,
        remember: bool = False,
        since: float = 0.0,
    ) -> web.Response:
        """Second factor passed (or not needed): the browser gets the CRM's cookies and a fresh
        gateway session, and goes where it was going. `since`: a remembered device stood in
        for the factor, which passed on it then."""
        held = await self.release_held(session)
        if held is None:
            await self.book.end(session)
            return self.expired(request)
        now = self.clock.now()
        passed = factor not in ("", "device")  # a factor answered just now
        verified = now if passed else max(session.verified, since)
        by = {**session.verified_by, factor: now} if passed else session.verified_by
        released = set_cookie_names(held).get(self.login.success_cookie, "")
        fresh = await self.book.rotate(
            session,
            stage=FULL,
            verified=verified,
            verified_by=by,
            due_reason="",
            due=[],
            held="",
            pending={},
            crm_binding=cookie_binding(released) if released else session.crm_binding,
        )
        if fresh is None:
            return self.expired(request)
        request[SESSION] = fresh
        request[USER] = fresh.user
        going = fresh.return_to or "/"
        # Codes never confirmed are shown again only to a sign-in that just passed a factor
        # (not to a remembered device: showing them asks as much as making new ones).
        waiting = await self.pending.codes_waiting(fresh.user) if passed else None
        if waiting is not None:
            # Recovery codes shown before and never confirmed: shown again first.
            self.pending.seal(fresh, "recovery", waiting)
            self.pending.seal(fresh, "after_codes", going)
            await self.book.save(fresh)
            going = f"{self.prefix}recovery-codes"
        response = self.redirect(going)
        for cookie in held:
            response.headers.add("Set-Cookie", cookie)
        response.headers.add(*self.session_cookie(request, fresh))
        if passed:
            settings = self.settings(fresh.user)
            await self.devices.remember(request, response, fresh.user, settings, remember, now)
            await self.regulator.remember_place(fresh.user, request[VIEW].ip)
        audit_event(
            request, "signin.completed", outcome="ok", user=fresh.user, reason=factor or "none"
        )
        return response

    async def crm_cookie_set(
        self, request: web.Request, session: Session, upstream: CrmResponse
    ) -> frozenset[str]:
        """The CRM set its session cookie on a signed-in request. A new id on a page view is
        a rotation (CRMs rotate ids on privilege changes): the binding follows, so the user
        stays signed in to the CRM. A new session from a form or an API call may be a login
        as someone else at a route the gateway does not watch: never adopted, dropped and
        audited, and the user keeps their own. The cookie names to drop. Every Set-Cookie of
        the name counts (Cookies.new_crm_sessions); only one new value, spelled as the CRM
        names its cookie, on a page view is a rotation."""
        if self.login.mode != "upstream" or "Set-Cookie" not in upstream.headers:
            return frozenset()
        name = self.login.success_cookie
        fresh = self.cookies.new_crm_sessions(upstream.headers.getall("Set-Cookie"), session)
        if not fresh:
            return frozenset()
        if request.method not in SAFE_METHODS or len(fresh) > 1 or next(iter(fresh))[0] != name:
            audit_event(request, "signin.crm_cookie_dropped", outcome="refused")
            return frozenset({name})
        session.crm_binding = cookie_binding(next(iter(fresh))[1])
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
        response.headers.add(*self.cookies.clear_session(request))
        return response

    async def verify_password(self, user: str, password: str) -> bool:
        stored = self.passwords.hashes.get(user) if self.passwords else None
        return await asyncio.to_thread(verify_password, stored, password)


SIGNIN = web.AppKey("signin", SignIn)  # present only when login is configured
