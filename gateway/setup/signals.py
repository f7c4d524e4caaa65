"""What tells the gateway that the CRM accepted a password, decided from the CRM's answers to
a right and a wrong one: the success status, the session cookie (set by the right answer,
not a CSRF cookie), the cookies to withhold, and a failure redirect where only the address
differs. Every choice is checked with the gateway's own reading (identity.login_succeeded):
the right answer must pass, the wrong one must not. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_plus, urljoin, urlsplit

from gateway.config.signin import Login
from gateway.errors import DetectionFailed
from gateway.setup.attempt import Attempt
from gateway.setup.client import cleared
from gateway.signin.identity import login_succeeded, set_cookie_names

# Query parameters that route a front controller (index.php?action=Login, ?module=Users&…,
# ?r=site/login): kept in login.path. Others (next=, lang=) would narrow it wrongly.
ROUTING = frozenset(
    {"action", "module", "do", "route", "r", "controller", "task", "cmd", "op", "act", "page",
     "view", "m", "a", "c", "mod", "entrypoint", "func", "p"}
)  # fmt: skip
_SESSION_NAMES = re.compile(r"sess|sid|auth|token|login|ident|jwt|remember|user", re.IGNORECASE)
_CSRF_NAMES = re.compile(r"csrf|xsrf|antiforgery|requestverification", re.IGNORECASE)
_SAFE = "/._~!$'()*+,:@-"


def query_of(pairs: list[tuple[str, str]]) -> str:
    """`name=value&…` as login.path writes a query, escaped where a query must be."""
    return "&".join(f"{quote(name, _SAFE)}={quote(value, _SAFE)}" for name, value in pairs)


def login_path(target: str) -> tuple[str, str]:
    """login.path for a form posting to `target`, and what was done with its query."""
    path, _, query = target.partition("?")
    kept, dropped = [], []
    for pair in [p for p in query.split("&") if p]:
        name, _, value = pair.partition("=")
        if unquote_plus(name).lower() in ROUTING and value:
            kept.append(query_of([(unquote_plus(name), unquote_plus(value))]))
        else:
            dropped.append(unquote_plus(name))
    said = ""
    if kept:
        said = f"; {'&'.join(kept)} tells it from other forms to {path}"
    if dropped:
        said += f"; {', '.join(dropped)} left out (not a route)"
    return path + ("?" + "&".join(kept) if kept else ""), said


def _set(attempt: Attempt, now: float) -> dict[str, str]:
    """The cookies an answer set to a value (not the ones it removed)."""
    kept: dict[str, str] = {}
    for header in attempt.answer.set_cookies:
        for name, value in set_cookie_names([header]).items():
            if cleared(header, now):
                kept.pop(name, None)
            else:
                kept[name] = value
    return kept


def session_cookies(attempt: Attempt, now: float) -> list[str]:
    """The cookies an answer set that may carry a session: set to a value, and not a CSRF
    cookie (by its name, or its value being a CSRF field's). The gateway holds these back."""
    csrf_values = {value for _, value in attempt.csrf}
    return [
        name
        for name, value in _set(attempt, now).items()
        if not _CSRF_NAMES.search(name) and value not in csrf_values
    ]


@dataclass(frozen=True)
class Signals:
    status: tuple[int, ...]
    cookie: str
    crm_cookies: tuple[str, ...]
    failure_location: str = ""
    notes: dict[str, str] = field(default_factory=dict)  # key → how it was decided


def decide(right: Attempt, wrong: Attempt, path: str, now: float) -> Signals:
    """The success signals, or DetectionFailed saying plainly what could not be decided."""
    r, w = right.answer, wrong.answer
    if r.status >= 400 or r.status < 200:
        raise DetectionFailed(
            f"the right password was answered {r.status} {r.reason}: is the account right, and "
            "does it sign in in a browser? (nothing could be learned from this login)"
        )
    set_right, set_wrong = _set(right, now), _set(wrong, now)
    candidates = session_cookies(right, now)
    alike = (r.status, target_path(r.location)) == (w.status, target_path(w.location))
    if alike and not set(candidates) - set(set_wrong):
        raise DetectionFailed(
            f"the test account's password was answered just as a wrong one ({r.status}"
            + (f" to {target_path(r.location)}" if r.location else "")
            + ", no new cookie): is it right, and does it sign in in a browser?"
        )
    if not candidates:
        raise DetectionFailed(
            f"the right password's answer ({r.status}) set no cookie: the CRM keeps its session "
            "some other way (a token in the page or in the address), and the gateway, which holds "
            "the CRM's session cookie back until the second factor, cannot be put in front of "
            "it in login mode upstream"
        )
    fresh = [name for name in candidates if name not in set_wrong]
    pool = fresh or candidates
    cookie = sorted(pool, key=lambda n: not _SESSION_NAMES.search(n))[0]
    statuses = (r.status,)
    failure = ""
    login = Login("upstream", path, right.method, right.username_field, statuses, cookie)

    def passes(attempt: Attempt, login: Login) -> bool:
        answer = attempt.answer
        return login_succeeded(answer.status, answer.location, answer.set_cookies, login)

    if passes(wrong, login) and r.redirect and w.redirect:
        there = urlsplit(urljoin(r.url, r.location)).path
        back = urlsplit(urljoin(w.url, w.location)).path
        if back and not there.startswith(back):
            failure = back
            login = Login(
                "upstream",
                path,
                right.method,
                right.username_field,
                statuses,
                cookie,
                failure_location=failure,
            )
    if passes(wrong, login):
        where = f" to {w.location}" if w.location else ""
        raise DetectionFailed(
            f"a wrong password is answered like the right one ({w.status}{where}, setting "
            f"{cookie} as the right one does): the gateway could not tell a right password from "
            "a wrong one, so no section is written. Does the CRM show an error for the wrong one?"
        )
    if not passes(right, login):
        raise DetectionFailed(f"the right password's answer ({r.status}) is not read as success")
    wrong_said = f"{w.status}" + (f" to {target_path(w.location)}" if w.location else "")
    if cookie in fresh:
        cookie_said = "set by the right password's answer only"
    else:
        told = "by the address" if failure else "by the status"
        cookie_said = f"set by both answers: told apart {told}"
    csrf_cookies = [name for name in set_right if name not in candidates]
    kept_said = "what the right password's answer set"
    if csrf_cookies:
        kept_said += f" (not the CSRF cookie {', '.join(csrf_cookies)})"
    notes = {
        "status": f"a right password got {r.status}, a wrong one {wrong_said}",
        "cookie": cookie_said,
        "crm_cookies": kept_said,
    }
    if failure:
        notes["failure_location"] = f"a wrong password is sent back here ({w.location})"
    ordered = tuple(sorted(candidates, key=lambda name: name != cookie))
    return Signals(statuses, cookie, ordered, failure, notes)


def target_path(location: str) -> str:
    parts = urlsplit(location)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
