"""Who may use the helpdesk console, checked on every page in this order: the listener it is
served on (admin.console.at), an address in the admin networks, no API credential (JSON
for a script, never a page), a signed-in session, an
admin role of the policy (auditor, helpdesk, admin), a second factor passed within
`admin.console.fresh` (to change anything: within `sessions.step_up_window`, the account
page's window) and the page rate of the minute. Each refusal is a page that says why and an
audit event; a factor too old is a step-up, back to the page asked for.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import NoReturn
from urllib.parse import quote

from aiohttp import web

from gateway.config.console import RANKS, Console
from gateway.config.networks import IPNetwork
from gateway.errors import AccessDenied, AmbiguousCredential
from gateway.model import Action, Decision, Step
from gateway.signin.decision import Asks, Kind, Request, Who, decide
from gateway.signin.session import FULL, Session
from gateway.web.audit import audit_event
from gateway.web.helpdesk.listener import on_admin_listener
from gateway.web.keys import CONFIG, USER, VIEW
from gateway.web.pages.frame import step_up
from gateway.web.pages.render import page, translator
from gateway.web.signin import SignIn

HOME = "admin/"  # the console's start, under the prefix


@dataclass(frozen=True)
class Admin:
    """The administrator using the console, once admitted."""

    name: str
    rank: int  # 1 auditor, 2 helpdesk, 3 admin (config.console.RANKS)
    session: Session

    @property
    def role(self) -> str:
        return RANKS[self.rank - 1]

    @property
    def may_act(self) -> bool:
        return self.rank >= 2


def console_of(request: web.Request) -> Console | None:
    """The console's settings, or None where it is not served (off, or another listener)."""
    console = request.app[CONFIG].admin.console
    if console is None:
        return None
    return console if on_admin_listener(request) == (console.at == "admin_listener") else None


def in_admin_networks(console: Console, signin: SignIn, ip: str) -> bool:
    if any(_contains(net, ip) for net in console.cidrs):
        return True
    return bool(signin.guard.view.index.match(ip) & set(console.networks))


def _contains(net: IPNetwork, ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version == net.version and address in net


def refused(
    request: web.Request,
    reason: str,
    *,
    status: int = 403,
    user: str = "",
    outcome: str = "refused",
    audit: bool = True,
    link: tuple[str, str] | None = None,
    **details: str,
) -> web.Response:
    """A console page that says why it refused (helpdesk.refused.REASON), and its audit
    event (`admin.console_refused`, the reason; the user acted on, when there is one)."""
    t = translator(request)
    if audit:
        by = request.get(USER, "")
        audit_event(
            request,
            "admin.console_refused",
            outcome=outcome,
            reason=reason,
            user=user or by,
            by=by or "-",
            **details,
        )
    return page(
        request,
        "notice.html",
        t("helpdesk.title"),
        status=status,
        paragraphs=[t(f"helpdesk.refused.{reason}")],
        link=link or (f"{request.app[CONFIG].path_prefix}{HOME}", t("helpdesk.back")),
    )


async def within_rate(signin: SignIn, console: Console, who: str, act: bool) -> bool:
    """One more page of this minute for `who` (an administrator, or an address before one
    is known); False past the minute's share. Counted in the shared store: every worker and
    instance together."""
    kind, limit = ("act", console.actions_per_minute) if act else ("read", console.reads_per_minute)
    minute = int(signin.clock.now() // 60)
    count = await signin.shared.incr(f"console-rate:{kind}:{who}:{minute}", 61.0)
    return count <= limit


async def admit(
    request: web.Request, signin: SignIn, console: Console, back: str, *, act: bool = False
) -> Admin | web.Response:
    """The administrator, or the answer for someone who may not go on: a refusal, a page
    to sign in first, or a step-up coming back to `back` (a path under the prefix)."""
    ip = request[VIEW].ip
    prefix = signin.prefix
    if not in_admin_networks(console, signin, ip):
        if not await within_rate(signin, console, f"ip:{ip}", act):
            return refused(request, "rate_limited", status=429, audit=False)
        home = ("/", translator(request)("error.back"))
        return refused(request, "network", outcome="denied", link=home)
    if carries_credential(signin, request):
        refuse_credential(request)
    session = await signin.session(request)
    if session is None or session.stage != FULL:
        t = translator(request)
        login = signin.login_url
        if signin.gateway_mode:
            login = f"{login}?next={quote(prefix + back, safe='')}"
        return page(
            request,
            "notice.html",
            t("helpdesk.title"),
            status=401,
            paragraphs=[t("helpdesk.sign_in_first")],
            link=(login, t("signin.again")),
        )
    user = session.user
    request[USER] = user
    if not await within_rate(signin, console, f"user:{user}", act):
        return refused(request, "rate_limited", status=429, audit=await _first_over(signin, user))
    rank = console.rank_of(signin.guard.user_for(user).roles)
    if rank == 0:
        return refused(request, "no_admin_role", link=("/", translator(request)("error.back")))
    facts = await signin.facts(request, user, device=False)
    if not facts.usable:
        return refused(request, "no_factor")
    window = signin.config.signin.sessions.step_up_window if act else console.fresh
    who = Who(Kind.SESSION, user, verified=session.verified)
    decision = decide(
        signin.guard.view,
        who,
        Request(Asks.CHANGE, ip),
        facts=facts,
        now=signin.clock.now(),
        rules=replace(signin.rules(), step_up_window=window),
    )
    if decision.action is Action.STEP_UP:
        return await step_up(request, signin, session, back)
    if decision.action is not Action.FORWARD:
        return refused(request, "no_factor")
    return Admin(user, rank, session)


def carries_credential(signin: SignIn, request: web.Request) -> bool:
    """The request carries an API credential (one, or two that make it read two ways)."""
    try:
        return signin.guard.credential(request) is not None
    except AmbiguousCredential:
        return True


def refuse_credential(request: web.Request) -> NoReturn:
    """An API credential at the console: a script, answered as one (JSON, never a page),
    whether or not an administrator's session comes with it. The console is a browser's,
    signed in with a second factor; a token has neither."""
    audit_event(
        request,
        "admin.console_refused",
        outcome="denied",
        reason="api_credential",
        user=request.get(USER, ""),
        by="-",
    )
    step = Step("", "the console is for a signed-in administrator, not an API credential")
    raise AccessDenied(Decision(Action.DENY, "api_credential", (step,)), api=True)


async def _first_over(signin: SignIn, user: str) -> bool:
    """Audit a rate refusal once a minute per administrator, not once per page refused."""
    minute = int(signin.clock.now() // 60)
    return await signin.shared.add(f"console-rate-told:{user}:{minute}", b"1", 61.0)
