"""The gateway's own sign-in pages under the reserved prefix: login (gateway mode), challenge,
enrolment, recovery codes, account, logout and the language switch.

Every form is CSRF-checked against the session; every change to how a user signs in needs a
second factor passed within `sessions.step_up_window`. Decisions about sessions and factors
belong to gateway.web.signin and gateway.factors; this module turns them into pages.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.decision import Asks, Kind, Who
from gateway.errors import MethodNotAllowed, NotFound
from gateway.factors import totp
from gateway.factors.protocol import Answer, SecondFactor, Verdict
from gateway.factors.totp import MAX_AUTHENTICATORS
from gateway.i18n import LANGUAGES, duration
from gateway.identity import canonical_user
from gateway.metrics import CHALLENGES
from gateway.model import Action, Settings
from gateway.paths import safe_return_path
from gateway.session import FULL, PASSWORD, Session
from gateway.web.codes import send_code, sent_problem
from gateway.web.forms import CsrfFailed, checked_form, read_form
from gateway.web.guard import audit_event
from gateway.web.keys import SIGNIN, USER, VIEW
from gateway.web.notices import notify_factor_added
from gateway.web.render import (
    LANGUAGE_COOKIE,
    language,
    locked_text,
    page,
    retry_after,
    stylesheet,
    translator,
    when,
)
from gateway.web.signin import LOGIN_COOKIE, SignIn

Handler = Callable[[web.Request, SignIn], Awaitable[web.StreamResponse]]
SessionHandler = Callable[[web.Request, SignIn, Session], Awaitable[web.StreamResponse]]


async def _change(
    request: web.Request, signin: SignIn, session: Session, back: str
) -> web.Response | None:
    """A change to how the user signs in (add or remove a factor, new codes, postponing
    enrolment), decided by gateway.decision: None when it may go ahead, else the way to the
    factor that must pass first (the challenge, or a step-up coming back to `back`)."""
    facts = await signin.facts(request, session.user, device=False)
    kind = Kind.SIGNING_IN if session.stage == PASSWORD else Kind.SESSION
    who = Who(kind, session.user, verified=session.verified)
    decision = signin.decide(request, who, Asks.CHANGE, facts)
    if decision.action is Action.CHALLENGE:
        return signin.redirect(f"{signin.prefix}challenge")
    if decision.action is Action.STEP_UP:
        return await _step_up(request, signin, session, back)
    return None


def needs(*stages: str) -> Callable[[SessionHandler], Handler]:
    """A page for sessions at one of `stages`; any other visitor gets the "expired" page."""

    def wrap(handler: SessionHandler) -> Handler:
        @functools.wraps(handler)
        async def page_for_session(request: web.Request, signin: SignIn) -> web.StreamResponse:
            session = await signin.session(request)
            if session is None or session.stage not in stages:
                return signin.expired(request)
            request[USER] = session.user  # for the access log and the audit trail
            return await handler(request, signin, session)

        return page_for_session

    return wrap


def _page(
    request: web.Request, session: Session, template: str, title: str, **context: Any
) -> web.Response:
    """A page for a session's user: its CSRF token in the forms, the sign-out button once
    signed in."""
    return page(
        request, template, title, csrf=session.csrf, signed_in=session.stage == FULL, **context
    )


def _no_factor(request: web.Request, user: str) -> web.Response:
    """No factor this user could answer is allowed here: say so plainly (no redirect loop)."""
    audit_event(request, "challenge.no_factor", outcome="refused", user=user)
    t = translator(request)
    return page(
        request,
        "notice.html",
        t("challenge.title"),
        status=403,
        paragraphs=[t("error.no_factor.body")],
    )


# -- challenge ---------------------------------------------------------------------------------


@needs(PASSWORD, FULL)
async def challenge(request: web.Request, signin: SignIn, session: Session) -> web.StreamResponse:
    user = session.user
    facts = await signin.facts(request, user, device=False)
    who = Who(Kind.SIGNING_IN, user, verified=session.verified)
    decision = signin.decide(request, who, Asks.SIGN_IN, facts)
    settings = signin.settings(user)
    if decision.action is Action.DENY:
        return _no_factor(request, user)
    if decision.action is Action.FORWARD or decision.reason == "enrol":
        # Nothing on file to answer: an app is added first, where the policy offers one.
        if "totp" in facts.offered:
            return signin.redirect(f"{signin.prefix}enrol")
        return _no_factor(request, user)
    if decision.reason == "nothing_on_file":
        # Allowed SMS or e-mail, but nothing on file: the page says whom to ask.
        missing = list(decision.factors)
        return await _challenge_page(request, signin, session, settings, missing[0], missing)
    usable = list(decision.factors)
    allowed = list(facts.offered)
    factors = signin.factors
    if request.method == "POST":
        form = await checked_form(request, session)
        name = form.get("factor", usable[0])
        factor = factors[name if name in usable else usable[0]]
        answer = Answer(user, form.get("code", "")[:64], request[VIEW].ip, session.sid)
        verdict = await factor.check(answer)
        CHALLENGES.labels(factor.name, "passed" if verdict.ok else verdict.reason).inc()
        if verdict.ok:
            return await _passed(request, signin, session, factor, form.get("remember") == "1")
        audit_event(
            request,
            "challenge.failed",
            outcome="failed",
            user=user,
            reason=verdict.reason,
            factor=factor.name,
        )
        if verdict.reason == "locked":
            audit_event(request, "challenge.lockout", outcome="locked", user=user)
        return await _challenge_page(
            request, signin, session, settings, factor.name, usable, verdict
        )
    # A factor asked for by its link (even one that cannot work: the page says why), else the
    # one passed with last time if it still works, else the first that works (the last one
    # is looked up only when there is a choice).
    name = request.query.get("factor", "")
    if name not in allowed:
        last = await signin.durable.factor_choice(user) if len(usable) > 1 else ""
        name = last if last in usable else usable[0]
    until = await signin.regulator.locked_until(user, request[VIEW].ip)
    shown = Verdict(False, "locked", until) if until else None
    choices = [f for f in allowed if f in usable or factors[f].sends]
    return await _challenge_page(request, signin, session, settings, name, choices, shown)


async def _passed(
    request: web.Request, signin: SignIn, session: Session, factor: SecondFactor, remember: bool
) -> web.StreamResponse:
    """A right answer: the sign-in completes, or (signed in already) the session is fresh."""
    user = session.user
    audit_event(
        request, "challenge.passed", outcome="ok", user=user, reason=factor.name, factor=factor.name
    )
    if factor.preselect:
        await signin.durable.set_factor_choice(user, factor.name)
    else:  # a last resort was used (recovery codes): worth its own line in the trail
        audit_event(request, f"{factor.name}.used", outcome="ok", user=user)
        # Perhaps the phone is lost: no remembered device stands in for it any more.
        await signin.forget_other_devices(request, user, f"{factor.name}_used")
    if session.stage == PASSWORD:
        return await signin.complete(request, session, factor=factor.name, remember=remember)
    fresh = await signin.book.rotate(session, verified=signin.clock.now())
    if fresh is None:
        return signin.expired(request)
    response = signin.redirect(fresh.return_to or f"{signin.prefix}account")
    response.headers.add(*signin.session_cookie(request, fresh))
    return response


async def _challenge_page(
    request: web.Request,
    signin: SignIn,
    session: Session,
    settings: Settings,
    name: str,
    allowed: list[str],
    verdict: Verdict | None = None,
) -> web.Response:
    t = translator(request)
    factor = signin.factors[name]
    locked = ""
    error = ""
    status = 200
    if verdict is not None and verdict.reason == "locked":
        locked = locked_text(request, verdict.locked_until, "challenge.locked")
        status = 429
    elif verdict is not None:
        error = t(
            factor.wrong_answer if verdict.reason == "wrong_code" else f"challenge.{verdict.reason}"
        )
        status = 400
    remember_for = ""
    if session.stage == PASSWORD and settings.remember_device > 0:
        remember_for = duration(language(request), settings.remember_device)
    others = [(f, t(f"challenge.use_{f}")) for f in allowed if f != name]
    prompt = await factor.prompt(session.user, session.sid)
    if prompt.missing and not error:
        audit_event(request, "code.no_contact", outcome="refused", user=session.user, reason=name)
        error, status = t(f"challenge.missing_{name}"), 403
    response = _page(
        request,
        session,
        "challenge.html",
        t("challenge.title"),
        status=status,
        factor=name,
        error=error,
        locked=locked,
        remember_for=remember_for,
        others=others,
        prompt=prompt,
        problem=sent_problem(request) if factor.sends else "",
        notice=t("account.step_up") if session.stage == FULL else "",
    )
    if verdict is not None and verdict.locked_until:
        response.headers["Retry-After"] = retry_after(request, verdict.locked_until)
    return response


# -- enrolment ---------------------------------------------------------------------------------


@needs(PASSWORD, FULL)
async def enrol(request: web.Request, signin: SignIn, session: Session) -> web.StreamResponse:
    user = session.user
    decided = await _change(request, signin, session, "enrol")
    if decided is not None:
        return decided
    settings = signin.settings(user)
    if "totp" not in settings.factors:
        # Only factors this version cannot check (SMS, e-mail) are allowed.
        return _no_factor(request, user)
    t = translator(request)
    apps = len(await signin.totp.authenticators(user))
    if apps >= MAX_AUTHENTICATORS:
        # Only a signed-in user gets here: at the password stage an app on file meant the
        # challenge.
        return _page(
            request,
            session,
            "notice.html",
            t("enrol.title"),
            status=409,
            paragraphs=[t("enrol.too_many")],
            link=(f"{signin.prefix}account", t("account.title")),
        )
    secret = signin.unsealed_pending(session, "totp")
    if secret is None:
        secret = totp.new_secret()
        signin.seal_pending(session, "totp", secret)
        await signin.book.save(session)
    error = ""
    name = t("enrol.default_name")
    locked_until = await signin.regulator.locked_until(user, request[VIEW].ip)
    if request.method == "POST" and not locked_until:
        form = await checked_form(request, session)
        name = form.get("name", "").strip()[:64] or t("enrol.default_name")
        verdict = await signin.totp.check_new(
            user, secret, form.get("code", "")[:64], request[VIEW].ip
        )
        if verdict.ok:
            return await _enrolled(request, signin, session, secret, name, first=not apps)
        audit_event(request, "enrol.failed", outcome="failed", user=user, reason=verdict.reason)
        locked_until = verdict.locked_until
        # The code was right but already used (re-enrolling within a step of the last code).
        error = t("enrol.replayed" if verdict.reason == "replayed" else "enrol.wrong_code")
    status = 400 if error else 200
    if locked_until:
        error, status = locked_text(request, locked_until, "challenge.locked"), 429
    product = signin.config.branding.product_name
    uri = totp.provisioning_uri(secret, user, product)
    deadline = ""
    can_skip = False
    if settings.enforcement == "required_from" and session.stage == PASSWORD:
        deadline = t("enrol.deadline", date=settings.required_from)
        can_skip = not signin.mandatory(settings)
    response = _page(
        request,
        session,
        "enrol.html",
        t("enrol.title"),
        status=status,
        error=error,
        notice=t("enrol.intro") if not apps else "",
        qr=totp.qr_svg(uri, t("enrol.qr_label")),
        key=totp.grouped(secret),
        uri=uri,
        name=name,
        deadline=deadline,
        can_skip=can_skip,
        cancel=f"{signin.prefix}account" if session.stage == FULL else "",
    )
    if locked_until:
        response.headers["Retry-After"] = retry_after(request, locked_until)
    return response


async def _enrolled(
    request: web.Request, signin: SignIn, session: Session, secret: str, name: str, *, first: bool
) -> web.StreamResponse:
    user = session.user
    await signin.totp.add(user, secret, name)
    audit_event(request, "enrol.completed", outcome="ok", user=user, reason="totp")
    if not first:
        await signin.forget_other_devices(request, user, "factor_added")
    notify_factor_added(request, signin, user, name)
    session.pending.pop("totp", None)
    wants_codes = "recovery" in signin.settings(user).factors
    if wants_codes and (first or await signin.recovery.left(user) == 0):
        codes = await signin.recovery.new_codes(user)
        await signin.offer_codes(session, codes)
        audit_event(request, "recovery.generated", outcome="ok", user=user)
    # The new authenticator just produced a right code: that is a passed factor.
    session.verified = signin.clock.now()
    await signin.book.save(session)
    if "recovery" in session.pending:
        return signin.redirect(f"{signin.prefix}recovery-codes")
    if session.stage == PASSWORD:
        return await signin.complete(request, session, factor="totp")
    return signin.redirect(f"{signin.prefix}account?added=1")


@needs(PASSWORD)
async def skip(request: web.Request, signin: SignIn, found: Session) -> web.StreamResponse:
    await checked_form(request, found)
    decided = await _change(request, signin, found, "enrol")
    if decided is not None:
        # Postponing is for enrolment only: a user with a factor on file always answers it.
        return decided
    settings = signin.settings(found.user)
    if settings.enforcement != "required_from" or signin.mandatory(settings):
        return signin.redirect(f"{signin.prefix}enrol")
    audit_event(request, "enrol.postponed", outcome="ok", user=found.user)
    return await signin.complete(request, found, factor="")


# -- recovery codes ----------------------------------------------------------------------------


@needs(PASSWORD, FULL)
async def recovery_codes(
    request: web.Request, signin: SignIn, session: Session
) -> web.StreamResponse:
    codes = signin.unsealed_pending(session, "recovery")
    if codes is None:
        return signin.redirect(
            f"{signin.prefix}{'account' if session.stage == FULL else 'challenge'}"
        )
    t = translator(request)
    error = ""
    if request.method == "POST":
        form = await checked_form(request, session)
        if form.get("saved") == "1":
            after = signin.unsealed_pending(session, "after_codes")
            await signin.codes_saved(session)
            audit_event(request, "recovery.confirmed", outcome="ok", user=session.user)
            if session.stage == PASSWORD:
                return await signin.complete(request, session, factor="totp")
            return signin.redirect(after or f"{signin.prefix}account")
        error = t("recovery.must_confirm")
    return _page(
        request,
        session,
        "recovery.html",
        t("recovery.title"),
        status=400 if error else 200,
        codes=codes.split("\n"),
        error=error,
        printing=request.query.get("print") == "1",
    )


@needs(PASSWORD, FULL)
async def recovery_codes_file(
    request: web.Request, signin: SignIn, found: Session
) -> web.StreamResponse:
    codes = signin.unsealed_pending(found, "recovery")
    if codes is None:
        raise NotFound("no recovery codes waiting to be saved")
    t = translator(request)
    header = t(
        "recovery.file_header",
        user=found.user,
        product=signin.config.branding.product_name,
        date=when(signin.clock.now())[:10],
    )
    return web.Response(
        text=header + "\n\n" + codes + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="recovery-codes.txt"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


# -- account -----------------------------------------------------------------------------------


async def _step_up(
    request: web.Request, signin: SignIn, session: Session, back: str
) -> web.Response:
    session.return_to = f"{signin.prefix}{back}"
    await signin.book.save(session)
    return signin.redirect(f"{signin.prefix}challenge")


@needs(FULL)
async def account(request: web.Request, signin: SignIn, session: Session) -> web.StreamResponse:
    user = session.user
    t = translator(request)
    authenticators = [
        {
            "id": a.id,
            "name": a.name,
            "created": when(a.created)[:10],
            "last_used": when(a.last_used) if a.last_used else "",
        }
        for a in await signin.totp.authenticators(user)
    ]
    now = signin.clock.now()
    current = signin.device_id(request, user)  # the list holds only this user's live devices
    devices = [
        {
            "id": d.id,
            "label": d.label,
            "until": when(d.remembered_until),
            "current": d.id == current,
        }
        for d in await signin.durable.devices(user)
        if d.remembered_until > now
    ]
    notices = {
        "added": "enrol.added",
        "removed": "account.removed",
        "forgotten": "account.device_forgotten",
    }
    notice = next((t(v, name="") for k, v in notices.items() if k in request.query), "")
    error = t("account.cannot_remove_last") if "last" in request.query else ""
    return _page(
        request,
        session,
        "account.html",
        t("account.title"),
        user=user,
        authenticators=authenticators,
        recovery_left=await signin.recovery.left(user),
        devices=devices,
        notice=notice.replace("  ", " "),
        error=error,
    )


@needs(FULL)
async def account_remove(
    request: web.Request, signin: SignIn, session: Session
) -> web.StreamResponse:
    form = await checked_form(request, session)
    decided = await _change(request, signin, session, "account")
    if decided is not None:
        return decided
    user = session.user
    rows = await signin.totp.authenticators(user)
    if len(rows) <= 1 and signin.settings(user).enforcement != "optional":
        return signin.redirect(f"{signin.prefix}account?last=1")
    if await signin.totp.remove(user, form.get("id", "")):
        audit_event(request, "authenticator.removed", outcome="ok", user=user)
        await signin.forget_other_devices(request, user, "factor_removed")
        if len(rows) <= 1:
            await signin.durable.replace_recovery_codes(user, [], signin.clock.now())
    return signin.redirect(f"{signin.prefix}account?removed=1")


@needs(FULL)
async def account_regenerate(
    request: web.Request, signin: SignIn, session: Session
) -> web.StreamResponse:
    await checked_form(request, session)
    decided = await _change(request, signin, session, "account")
    if decided is not None:
        return decided
    codes = await signin.recovery.new_codes(session.user)
    await signin.offer_codes(session, codes)
    await signin.book.save(session)
    await signin.forget_other_devices(request, session.user, "recovery_regenerated")
    audit_event(request, "recovery.regenerated", outcome="ok", user=session.user)
    return signin.redirect(f"{signin.prefix}recovery-codes")


@needs(FULL)
async def account_forget_device(
    request: web.Request, signin: SignIn, found: Session
) -> web.StreamResponse:
    form = await checked_form(request, found)
    now = signin.clock.now()
    if await signin.durable.revoke_device(found.user, form.get("id", ""), now):
        audit_event(request, "device.revoked", outcome="ok", user=found.user)
    return signin.redirect(f"{signin.prefix}account?forgotten=1")


# -- login (gateway mode), logout, language ----------------------------------------------------


async def login_page(request: web.Request, signin: SignIn) -> web.StreamResponse:
    """Gateway mode. No server-side record until the password passes: the form's CSRF token
    is a signed copy of a random cookie (double submit), so a flood of page views costs no
    memory."""
    if signin.login.mode != "gateway":
        raise NotFound("the CRM's own login page signs people in")
    t = translator(request)
    nonce = request.cookies.get(signin.cookie_name(request, LOGIN_COOKIE), "")
    fresh_nonce = len(nonce) != 32
    if fresh_nonce:
        nonce = secrets.token_urlsafe(24)
    back = safe_return_path(request.query.get("next", "")) or "/"
    error = ""
    username = ""
    status = 200
    if request.method == "POST":
        form = await read_form(request)
        if fresh_nonce or not signin.book.form_token_ok(form.get("csrf", ""), nonce):
            audit_event(request, "csrf.failed", outcome="refused", reason="csrf_failed")
            raise CsrfFailed("login form token missing or wrong")
        username = canonical_user(form.get("username", ""))[:256]
        back = safe_return_path(form.get("next", "")) or "/"
        ip = request[VIEW].ip
        regulator = signin.regulator
        if username:
            # Their address rules first: from an address they may not use, nothing is said
            # of the password (nor counted).
            signin.guard.judge(request, Who(Kind.LOGIN, username))
        until = await signin.password_attempt(request, username)
        if until:
            error, status = locked_text(request, until, "login.locked"), 429
        elif username and await _verify(signin, username, form.get("password", ""), ip):
            request[USER] = username
            await regulator.password_succeeded(username, ip)
            audit_event(request, "signin.password_ok", outcome="ok", user=username)
            session = await signin.book.create(username, PASSWORD, return_to=back)
            response = await signin.after_password(request, session)
            response.headers.add(*signin.set_cookie(request, LOGIN_COOKIE, "", max_age=0))
            return response
        else:
            until = await regulator.password_failed(username, ip)
            audit_event(request, "signin.password_failed", outcome="failed", user=username)
            if until:
                error, status = locked_text(request, until, "login.locked"), 429
            else:
                error, status = t("login.wrong"), 401
    response = page(
        request,
        "login.html",
        t("login.title"),
        status=status,
        csrf=signin.book.form_token(nonce),
        error=error,
        username=username,
        next=back,
    )
    if fresh_nonce:
        response.headers.add(*signin.set_cookie(request, LOGIN_COOKIE, nonce, max_age=3600))
    return response


async def _verify(signin: SignIn, user: str, password: str, ip: str) -> bool:
    """The password checked (argon2id, off the event loop); an attempt the client gave up on
    gives its slot back."""
    try:
        return await signin.verify_password(user, password)
    except BaseException:
        await asyncio.shield(signin.regulator.password_abandoned(user, ip))
        raise


async def logout(request: web.Request, signin: SignIn) -> web.StreamResponse:
    session = await signin.session(request)
    if session is not None:
        await checked_form(request, session)
        await signin.book.end(session)
        audit_event(request, "signin.logout", outcome="ok", user=session.user)
    target = signin.login_url
    if signin.login.mode == "upstream" and signin.login.method != "GET":
        target = "/"
    response = signin.redirect(target)
    response.headers.add(*signin.clear_session_cookie(request))
    return response


async def switch_language(request: web.Request, signin: SignIn) -> web.StreamResponse:
    chosen = request.query.get("to", "")
    back = safe_return_path(request.query.get("next", "")) or f"{signin.prefix}account"
    response = signin.redirect(back)
    if chosen in LANGUAGES:
        response.headers.add(*signin.set_cookie(request, LANGUAGE_COOKIE, chosen, 365 * 86400))
    return response


async def serve_stylesheet(request: web.Request, signin: SignIn) -> web.StreamResponse:
    return web.Response(
        body=stylesheet(),
        content_type="text/css",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


GET_ROUTES: dict[str, Handler] = {
    "challenge": challenge,
    "enrol": enrol,
    "recovery-codes": recovery_codes,
    "recovery-codes.txt": recovery_codes_file,
    "account": account,
    "login": login_page,
    "lang": switch_language,
    "static/gateway.css": serve_stylesheet,
}
POST_ROUTES: dict[str, Handler] = {
    "challenge": challenge,
    "challenge/send": needs(PASSWORD, FULL)(send_code),
    "enrol": enrol,
    "skip": skip,
    "recovery-codes": recovery_codes,
    "account/remove": account_remove,
    "account/regenerate": account_regenerate,
    "account/forget-device": account_forget_device,
    "login": login_page,
    "logout": logout,
}


async def dispatch(request: web.Request, sub: str) -> web.StreamResponse | None:
    """The page for a path under the prefix, or None when sign-in has no such page."""
    signin = request.app.get(SIGNIN)
    if signin is None:
        return None
    handler = (GET_ROUTES if request.method in ("GET", "HEAD") else POST_ROUTES).get(sub)
    if handler is None:
        if sub in GET_ROUTES or sub in POST_ROUTES:
            raise MethodNotAllowed(f"{request.method} on {sub}")
        return None
    return await handler(request, signin)
