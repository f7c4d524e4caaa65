"""The console's users: a search by name, role or group, and one user's page (roles, groups,
networks and settings as the policy resolves them with the rules that decided, what a
request of theirs would get, their factors and devices with nothing secret shown, open
sessions, lockouts and last sign-ins, and what this administrator may do about them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.admin import accounts, trail
from gateway.admin.explain import explain_request, fresh_line, networks_of, settings_lines
from gateway.config.console import RANKS, Console
from gateway.errors import BadArgument, BadRequest
from gateway.factors.contact import mask_email, mask_phone
from gateway.model import canonical_user
from gateway.stores import AuditQuery
from gateway.web.audit import audit_event
from gateway.web.helpdesk.access import Admin
from gateway.web.helpdesk.inputs import page_number, query_fields
from gateway.web.pages.account import interval_name
from gateway.web.pages.frame import session_page
from gateway.web.pages.render import translator, when
from gateway.web.signin import SignIn

PER_PAGE = 50
# What a user's page lists as their last sign-ins: the password step and how it ended.
SIGN_IN_EVENTS = (
    "signin.*",
    "challenge.failed",
    "challenge.lockout",
    "challenge.passed",
)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
# policy explain's settings, as the console names them (one it does not know: as explain does)
SETTINGS = {
    "interval": "helpdesk.setting.interval",
    "factors": "helpdesk.setting.factors",
    "phishing-resistant only": "helpdesk.setting.phishing_resistant",
    "enforcement": "helpdesk.setting.enforcement",
    "remember device": "helpdesk.setting.remember_device",
    "verify again within a session": "helpdesk.setting.verify_again_within_a_session",
}


def console_page(
    request: web.Request, admin: Admin, template: str, title: str, section: str, **context: Any
) -> web.Response:
    """A console page: the administrator's session (CSRF token, sign-out) and the nav."""
    return session_page(
        request,
        admin.session,
        f"helpdesk/{template}",
        title,
        section=section,
        admin_name=admin.name,
        admin_role=admin.role,
        **context,
    )


def _chosen(interval: accounts.IntervalState, t: Callable[..., str]) -> str:
    """The interval the user chose, when, and whether it counts; "" when none."""
    if interval.chosen is None:
        return ""
    said = t(
        "helpdesk.user.interval_chosen_on",
        interval=interval_name(t, interval.chosen),
        when=when(interval.chosen_at),
    )
    return f"{said} {t('helpdesk.user.interval_overruled')}" if interval.overruled else said


def _rank_name(console: Console, roles: tuple[str, ...]) -> str:
    rank = console.rank_of(roles)
    return RANKS[rank - 1] if rank else ""


async def search(
    request: web.Request, signin: SignIn, console: Console, admin: Admin
) -> web.StreamResponse:
    q = query_fields(
        request.rel_url.raw_query_string,
        request.query.items(),
        frozenset({"q", "role", "group", "page"}),
        console.max_query,
    )
    view = signin.guard.view
    policy = view.policy
    role, group = q.get("role", ""), q.get("group", "")
    t = translator(request)
    error = ""
    if (role and role not in policy.roles) or (group and group not in policy.groups):
        error, role, group = t("helpdesk.bad.filter"), "", ""
    number = page_number(q.get("page", ""))
    wanted = canonical_user(q.get("q", ""))
    names = await accounts.known_users(signin.durable, policy.users)
    matches = [
        name
        for name in names
        if wanted in name
        and (not role or role in view.user_for(name).roles)
        and (not group or group in view.user_for(name).groups)
    ]
    shown = matches[(number - 1) * PER_PAGE : number * PER_PAGE]
    rows = []
    for name in shown:
        user = view.user_for(name)
        rows.append(
            {
                "name": name,
                "roles": ", ".join(user.roles),
                "groups": ", ".join(user.groups),
                "rank": _rank_name(console, user.roles),
                "in_policy": name in view.users,
                "factors": len(await signin.durable.authenticators(name)),
            }
        )
    return console_page(
        request,
        admin,
        "users.html",
        t("helpdesk.users.title"),
        "users",
        error=error,
        rows=rows,
        found=len(matches),
        number=number,
        more=len(matches) > number * PER_PAGE,
        q=q.get("q", ""),
        role=role,
        group=group,
        roles=sorted(policy.roles),
        groups=sorted(policy.groups),
    )


async def user_page(
    request: web.Request, signin: SignIn, console: Console, admin: Admin
) -> web.StreamResponse:
    q = query_fields(
        request.rel_url.raw_query_string,
        request.query.items(),
        frozenset({"u", "ip", "method", "path", "done"}),
        console.max_query,
    )
    t = translator(request)
    name = canonical_user(q.get("u", ""))
    view = signin.guard.view
    store = signin.durable
    now = signin.clock.now()
    if not name or (name not in view.users and name not in await accounts.known_users(store, ())):
        raise BadRequest(f"no user {q.get('u', '')[:80]!r}", reason="unknown_user")
    audit_event(request, "admin.user_viewed", outcome="ok", user=name, by=admin.name)
    user = view.user_for(name)
    state = await accounts.user_state(store, name, now)
    interval = await accounts.interval_state(store, name, view.settings(name))
    recent = await store.audit_events(
        AuditQuery(user=name, names=SIGN_IN_EVENTS, limit=10, newest_first=True)
    )
    last_ip = next((e.ip for _, e in recent if e.ip), "")
    asked, error = _explained(view, name, q, last_ip, t)
    code_lock = await signin.regulator.locked_until(name, "")
    paused = await signin.regulator.account_paused_until(name)
    sessions = await signin.book.sessions_of(name)
    target_rank = console.rank_of(user.roles)
    return console_page(
        request,
        admin,
        "user.html",
        t("helpdesk.user.title", user=name),
        "users",
        error=error,
        notice=t(f"helpdesk.done.{q['done']}") if q.get("done") in DONE else "",
        user=name,
        in_policy=name in view.users,
        roles=user.roles,
        groups=user.groups,
        rank=_rank_name(console, user.roles),
        phone=mask_phone(user.phone) if user.phone else "",
        email=mask_email(user.email) if user.email else "",
        settings=[
            (t(SETTINGS[what]) if what in SETTINGS else what, value)
            for what, value in settings_lines(view.settings(name))
        ],
        steps=[str(step) for step in view.settings(name).steps],
        networks=networks_of(view.policy, user),
        asked=asked,
        methods=METHODS,
        authenticators=[
            {
                "name": a.name,
                "kind": a.kind,
                "added": when(a.created),
                "last_used": when(a.last_used) if a.last_used else "",
            }
            for a in state.authenticators
        ],
        recovery_left=state.recovery_codes_left,
        interval_in_force=interval_name(t, interval.effective),
        interval_chosen=_chosen(interval, t),
        interval_reset=interval.chosen is not None,
        last_verified=when(state.last_verified) if state.last_verified else "",
        devices=[
            {
                "id": d.id,
                "label": d.label,
                "verified": when(d.verified),
                "until": when(d.remembered_until) if d.remembered_until > now else "",
            }
            for d in state.devices
        ],
        sessions=[
            {
                "created": when(s.created),
                "last_seen": when(s.last_seen),
                "verified": when(s.verified) if s.verified else "",
                "by": ", ".join(sorted(s.verified_by)),
            }
            for s in sessions
        ],
        code_lock=when(code_lock) if code_lock else "",
        paused=when(paused) if paused else "",
        recent=[
            {
                "when": when(e.time),
                "event": e.name,
                "outcome": e.outcome,
                "ip": e.ip,
                "reason": e.reason,
            }
            for _, e in recent
        ],
        may_act=admin.may_act and name != admin.name and target_rank <= admin.rank,
        why_not=_why_not(admin, name, target_rank, t),
        can_send=bool(user.email and "email" in signin.senders)
        or bool(user.phone and "sms" in signin.senders),
    )


DONE = ("unlocked", "revoked", "reset", "forgotten", "sent", "interval_reset")


def _why_not(admin: Admin, name: str, target_rank: int, t: Any) -> str:
    if not admin.may_act:
        return str(t("helpdesk.refused.read_only"))
    if name == admin.name:
        return str(t("helpdesk.refused.self"))
    if target_rank > admin.rank:
        return str(t("helpdesk.refused.higher_role"))
    return ""


def _explained(
    view: Any, name: str, q: dict[str, str], last_ip: str, t: Any
) -> tuple[dict[str, Any], str]:
    """`policy explain` for the request the form asks about (by default GET / from the
    user's last sign-in address): its decision and rules, or the field that was wrong."""
    method = q.get("method", "GET").upper()
    if method not in METHODS:
        raise BadRequest(f"method {method[:20]!r}", reason="tampered")
    path = q.get("path", "/") or "/"
    ip_text = q.get("ip", "") or last_ip
    asked: dict[str, Any] = {"ip": q.get("ip", "") or last_ip, "method": method, "path": path}
    if not ip_text:
        return asked, ""
    try:
        ip = trail.address(ip_text)
    except BadArgument:
        return asked, str(t("helpdesk.bad.ip"))
    if not path.startswith("/"):
        return asked, str(t("helpdesk.bad.path"))
    try:
        found = explain_request(view, name, ip, method, path)
    except BadRequest:
        return asked, str(t("helpdesk.bad.path"))
    decision = found.decision
    asked.update(
        action=decision.action.value,
        reason=decision.reason,
        steps=[str(step) for step in decision.steps],
        fresh=fresh_line(decision),
    )
    return asked, ""
