"""The challenge page: the second factor asked for after the password (or again before a
change, a step-up), each factor's part of the form drawn by the factor itself, an answer
checked by it, and the sign-in finished (gateway.web.signin) once it passes. What is asked,
and why, is gateway.signin.decision's Decision; this module turns it into a page."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from aiohttp import web

from gateway.factors.protocol import Answer, SecondFactor, Verdict
from gateway.i18n import duration
from gateway.metrics import CHALLENGES
from gateway.model import PHISHING_RESISTANT, Action, Settings
from gateway.signin.decision import Asks, Kind, Who
from gateway.signin.session import FULL, PASSWORD, Session
from gateway.web import kept
from gateway.web.audit import audit_event
from gateway.web.keys import VIEW
from gateway.web.pages.code_sending import sent_problem
from gateway.web.pages.forms import checked_form
from gateway.web.pages.frame import needs, no_factor, session_page
from gateway.web.pages.notices import notify
from gateway.web.pages.render import language, locked_text, retry_after, translator
from gateway.web.signin import SignIn
from gateway.web.urls import safe_return_path


@needs(PASSWORD, FULL)
async def challenge(request: web.Request, signin: SignIn, session: Session) -> web.StreamResponse:
    user = session.user
    if session.stage == FULL and request.method == "GET" and "next" in request.query:
        # Sent here by a script of the CRM's page (a JSON 401): back to that page after.
        session.return_to = safe_return_path(request.query["next"]) or "/"
        await signin.book.save(session)
    facts = await signin.facts(request, user, device=False)
    if session.stage == FULL and session.due:
        # A path that counts only some factors (`fresh` with `factors`): only those here.
        facts = replace(facts, usable=tuple(f for f in facts.usable if f in session.due))
        if not facts.usable:
            return no_factor(request, user)  # none of them on file: whom to ask
    who = Who(Kind.SIGNING_IN, user, verified=session.verified)
    decision = signin.decide(request, who, Asks.SIGN_IN, facts)
    settings = signin.settings(user)
    if decision.action is Action.DENY:
        return no_factor(request, user)
    if decision.action is Action.FORWARD or decision.reason == "enrol":
        # Nothing on file to answer: a factor the user adds themselves comes first, where
        # the policy offers one (its own page: an app's, a security key's).
        if facts.enrollable:
            return signin.redirect(
                f"{signin.prefix}{signin.factors[facts.enrollable[0]].enrol_page}"
            )
        return no_factor(request, user)
    if decision.reason == "nothing_on_file":
        # Allowed SMS or e-mail, but nothing on file: the page says whom to ask.
        missing = list(decision.factors)
        return await _challenge_page(request, signin, session, settings, missing[0], missing)
    # A passkey on file comes first: offering a code first teaches typing codes into pages.
    usable = sorted(decision.factors, key=lambda f: f not in PHISHING_RESISTANT)
    allowed = list(facts.offered)
    factors = signin.factors
    if request.method == "POST":
        form = await checked_form(request, session)
        name = form.get("factor", usable[0])
        factor = factors[name if name in usable else usable[0]]
        # Whole: each factor judges its answer's shape (a passkey's is JSON of a few KB; the
        # form itself is capped by forms.read_form).
        answer = Answer(user, form.get("code", ""), request[VIEW].ip, session.sid)
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
            **({"detail": verdict.detail} if verdict.detail else {}),
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
        choose = len(usable) > 1 and usable[0] not in PHISHING_RESISTANT
        last = await signin.durable.factor_choice(user) if choose else ""
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
        notify(request, signin, user, f"{factor.name}_used")
        # Perhaps the phone is lost: no remembered device stands in for it any more.
        await signin.devices.forget_others(request, user, f"{factor.name}_used")
    if session.stage == PASSWORD:
        return await signin.complete(request, session, factor=factor.name, remember=remember)
    # Signed in already: a verification that was due, or a step-up before a change. A new
    # session id, the factor's time, and back where the user was, or what they were sending
    # sent now (taken under the old id, so it goes once at most).
    entry, held = await kept.take(signin, session)
    now = signin.clock.now()
    fresh = await signin.book.rotate(
        session,
        verified=now,
        verified_by={**session.verified_by, factor.name: now},
        due_reason="",
        due=[],
        pending={},
    )
    if fresh is None:
        return signin.expired(request)
    audit_event(request, "signin.verified_again", outcome="ok", user=user, reason=factor.name)
    cookie = signin.session_cookie(request, fresh)
    if held is not None:
        return await kept.send(request, signin, fresh, held, cookie)
    response = (
        kept.gone(request, signin, fresh)
        if entry
        else signin.redirect(fresh.return_to or f"{signin.prefix}account")
    )
    response.headers.add(*cookie)
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
    response = session_page(
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
        script="webauthn.js" if prompt.options else "",
        notice=_notice(t, session),
    )
    if verdict is not None and verdict.locked_until:
        response.headers["Retry-After"] = retry_after(request, verdict.locked_until)
    return response


def _notice(t: Callable[..., str], session: Session) -> str:
    """Why a signed-in user is asked: a verification that came due, or a change to make."""
    if session.stage != FULL:
        return ""
    return t("challenge.reverify") if session.due_reason else t("account.step_up")
