"""detect-login: from a CRM's start page to a `login:` section. The login is found and read;
with a test account, one right and one wrong password are sent (the wrong one as the gateway
would forward it: without the cookies it holds back), the answers compared, the logout found
on the page the right one leads to, and every session opened ended again. A CRM that needs
its session cookie before the login, and a two-step login that signs in whoever its first
page named, are found out and said plainly: no gateway can sit in front of those."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin

from gateway.clock import Clock
from gateway.config.signin import Login
from gateway.errors import DetectionFailed
from gateway.setup.attempt import (
    Attempt,
    Entry,
    find_login,
    password_form,
    routed_by_fields,
    submit,
)
from gateway.setup.client import Answer, Browser, origin_of, target_of
from gateway.setup.forms import Logout, find_logout
from gateway.setup.html import read_page
from gateway.setup.signals import (
    Signals,
    decide,
    login_path,
    query_of,
    session_cookies,
    target_path,
)
from gateway.signin.identity import login_succeeded, set_cookie_names

PROBE_USER = "crm-gateway-probe"  # given to a two-step login's first page; no password sent
Make = Callable[[frozenset[str]], Browser]


@dataclass
class Detection:
    upstream: str  # the CRM's origin
    entry: Entry
    path: str = ""
    method: str = "POST"
    username_field: str = ""
    notes: dict[str, str] = field(default_factory=dict)  # key → how it was found
    signals: Signals | None = None
    logout: Logout | None = None
    findings: list[str] = field(default_factory=list)  # what an operator should know
    undecided: list[str] = field(default_factory=list)
    right: Attempt | None = None  # the test account's login, and a wrong password's
    wrong: Attempt | None = None

    @property
    def complete(self) -> bool:
        return self.signals is not None and not self.undecided

    def login(self) -> Login | None:
        """The section as the gateway would read it (None before the signals are known)."""
        s = self.signals
        if s is None:
            return None
        logout = target_of(self.logout.url) if self.logout else ""
        return Login(
            "upstream",
            self.path,
            self.method,
            self.username_field,
            s.status,
            s.cookie,
            s.failure_location,
            s.crm_cookies,
            login_path(logout)[0] if logout else "",
            self.logout.method if self.logout else "POST",
        )


async def detect(
    upstream: str,
    start: str,
    *,
    clock: Clock,
    wait: float,
    user: str = "",
    password: str = "",
    choice: int | None = None,
    answers: list[Answer] | None = None,
) -> Detection:
    """Everything detect-login learns; DetectionFailed when it cannot go on at all.
    `wait`: seconds each request may take. `answers`: every answer seen is added there, also
    when it fails (doctor reads them)."""
    site = origin_of(upstream)
    seen: list[Answer] = [] if answers is None else answers

    def make(withheld: frozenset[str] = frozenset()) -> Browser:
        return Browser(site, wait, clock, withheld=withheld, answers=seen)

    async with make() as first:
        found = Detection(site, await find_login(first, start, choice))
        if not user:
            await _read_form(found, first)
            found.undecided.append(
                "success, crm_cookies and logout: learnt from a real login (give --user NAME)"
            )
        else:
            right = await submit(first, found.entry, user, password)
            _describe(found, right)
            async with make(frozenset(session_cookies(right, clock.now()))) as other:
                wrong = await submit(other, found.entry, user, "wrong-" + secrets.token_urlsafe(9))
            found.right, found.wrong = right, wrong
            found.signals = decide(right, wrong, found.path, clock.now())
            found.notes.update(found.signals.notes)
            found.logout = await _logout_of(first, right, found)
            await _without_held_cookies(found, right, user, password, make)
            if found.entry.kind == "two-step":
                await _first_step_wins(found, user, password, make)
            await _end(first, found, right, say=True)
    found.findings[:0] = _findings(seen, site, found)
    return found


async def _read_form(found: Detection, browser: Browser) -> None:
    """Without a test account: the form alone (a two-step login's password page is reached
    by giving a made-up name to its first page; no password is sent)."""
    entry = found.entry
    if entry.kind == "json":
        assert entry.api is not None
        found.path, said = login_path(target_of(urljoin(entry.page, entry.api.url)))
        found.method, found.username_field = entry.api.method, entry.api.username_key
        found.notes["path"] = _path_note(entry, entry.page, said)
        found.notes["method"] = "the script's method"
        found.notes["username_field"] = "the key the script sends the user name in"
        return
    form, page, name, how = await password_form(browser, entry, PROBE_USER)
    found.path, said = login_path(target_of(form.action))
    said += _routed(found, routed_by_fields(form))
    found.notes["path"] = _path_note(entry, page.url, said)
    found.method, found.username_field = form.method, name
    found.notes["method"] = "the form's method"
    found.notes["username_field"] = how


def _routed(found: Detection, fields: tuple[str, ...]) -> str:
    """A form routed by hidden fields (SuiteCRM: module=Users and action=Authenticate, posted
    to plain index.php): they go in login.path's query, which tells the login apart from the
    CRM's other forms to that path; the gateway finds them in the form as well as in the
    query (docs/sign-in.md). What is said of it in the path's note ("" for none)."""
    if not fields or "?" in found.path:
        return ""
    pairs = [(name, value) for name, _, value in (f.partition("=") for f in fields)]
    found.path = f"{found.path}?{query_of(pairs)}"
    return f"; the form's hidden {', '.join(fields)} tell it from other forms posted there"


def _path_note(entry: Entry, page: str, said: str) -> str:
    if entry.kind == "json":
        return f"{entry.by} posts JSON here{said}"
    if entry.kind == "two-step":
        return f"the password page {target_of(page)} posts here ({entry.by} asks the name){said}"
    return f"{entry.by} posts here{said}"


def _describe(found: Detection, right: Attempt) -> None:
    found.path, said = login_path(right.target)
    said += _routed(found, right.routed)
    found.notes["path"] = _path_note(found.entry, right.page, said)
    found.method, found.username_field = right.method, right.username_field
    found.notes["method"] = (
        "the script's method" if found.entry.kind == "json" else "the form's method"
    )
    found.notes["username_field"] = right.how_user


def _signed_in(found: Detection, attempt: Attempt) -> bool:
    login = found.login()
    assert login is not None
    answer = attempt.answer
    return login_succeeded(answer.status, answer.location, answer.set_cookies, login)


async def _logout_of(browser: Browser, right: Attempt, found: Detection) -> Logout | None:
    """The logout: the script's call (JSON), or a link or form on the page the login led to."""
    entry = found.entry
    if entry.kind == "json":
        if entry.logout is None:
            found.undecided.append("logout: the script shows no logout call")
            return None
        url, method = entry.logout
        return Logout(urljoin(entry.page, url), method, (), f"the script's call on {url}")
    try:
        answer = right.answer
        if answer.redirect:
            _, page = await browser.open(answer.url, answer)
        else:
            page = read_page(answer.body, answer.url)
    except DetectionFailed as exc:
        found.undecided.append(f"logout: the page after the login could not be read: {exc}")
        return None
    logout = find_logout(page)
    if logout is None:
        found.undecided.append(f"logout: no log-out link or form on {target_of(page.url)}")
    return logout


async def _end(browser: Browser, found: Detection, attempt: Attempt, *, say: bool = False) -> None:
    """Log out the session `attempt` opened (a form's token read afresh in this browser)."""
    logout = found.logout
    if logout is None or not _signed_in(found, attempt):
        return
    if logout.fields:  # a form: its CSRF token is this browser's own
        fresh = await _logout_of(browser, attempt, found)
        logout = fresh or logout
    form = list(logout.fields) if logout.method != "GET" else None
    if found.entry.kind == "json":
        answer = await browser.send(logout.method, logout.url, json_body={})
    else:
        answer = await browser.send(logout.method, logout.url, form=form)
    if say and found.signals is not None:
        cookie = found.signals.cookie
        ended = any(name == cookie for name in set_cookie_names(answer.set_cookies))
        tried = f"tried: it cleared {cookie}" if ended else f"tried: answered {answer.status}"
        found.notes["logout"] = f"{logout.found} ({tried})"


async def _without_held_cookies(
    found: Detection, right: Attempt, user: str, password: str, make: Make
) -> None:
    """The session cookie was set before the password (on the login page): the gateway
    removes it from requests until the second factor, so try the login without it."""
    assert found.signals is not None
    held = frozenset(found.signals.crm_cookies) & right.held_before
    if not held:
        return
    async with make(frozenset(found.signals.crm_cookies)) as browser:
        again = await submit(browser, found.entry, user, password)
        if not _signed_in(found, again):
            found.undecided.append(
                f"the CRM signs in only with the cookie it set before the login "
                f"({', '.join(sorted(held))}, which likely holds its CSRF token): the gateway "
                "removes that cookie from requests until the second factor, so this login "
                "fails behind it (login mode gateway, if the CRM takes a trusted header)"
            )
            return
        await _end(browser, found, again)
    found.findings.append(
        f"{', '.join(sorted(held))} is set before the login too; the gateway holds it back, so "
        "the login was tried again without it, as the CRM will get it: it signs in"
    )


async def _first_step_wins(found: Detection, user: str, password: str, make: Make) -> None:
    """A two-step login is safe behind the gateway only when the CRM signs in the user the
    password page names (the gateway challenges that one), not whoever the first page named."""
    other = f"{user}-{secrets.token_hex(3)}"
    async with make(frozenset()) as browser:
        swapped = await submit(browser, found.entry, user, password, named=other)
        if not _signed_in(found, swapped):
            found.findings.append(
                f"the password page's {found.username_field} decides who signs in: "
                f"naming another user there ({other}) with {user}'s password was refused"
            )
            return
        await _end(browser, found, swapped)
    found.undecided.append(
        f"the CRM signed in {user} although the password page named {other}: it trusts its "
        "first page, so the user the gateway challenges need not be the one signed in; no "
        "gateway can watch this login safely (login mode gateway, if the CRM takes a header)"
    )


def _findings(answers: list[Answer], site: str, found: Detection) -> list[str]:
    """What the answers show that the deployment must handle."""
    said: list[str] = []
    absolute = sorted({a.location for a in answers if origin_of(a.location) == site})
    if absolute:
        said.append(
            f"the CRM redirects to absolute addresses on its own origin ({absolute[0]}): the "
            "gateway rewrites them (to public_url when set, else to relative ones)"
        )
    away = sorted(
        {
            a.location
            for a in answers
            if a.location.startswith(("http://", "https://")) and origin_of(a.location) != site
        }
    )
    if away:
        said.append(
            f"the CRM sends browsers to {away[0]}, which is not {site}: the gateway cannot "
            "rewrite that; set the CRM's own address (its site URL) to the one users type"
        )
    domains = sorted(
        {
            f"{c.split('=', 1)[0].strip()} (Domain={part.split('=', 1)[1].strip()})"
            for a in answers
            for c in a.set_cookies
            for part in c.split(";")[1:]
            if part.strip().lower().startswith("domain=")
        }
    )
    if domains:
        said.append(
            f"cookies set for a domain: {', '.join(domains)}: the gateway rewrites a Domain "
            "naming the CRM's host; any other must cover the address users type (doctor checks)"
        )
    if found.right is not None and found.right.csrf:
        names = ", ".join(name for name, _ in found.right.csrf)
        said.append(
            f"the form carries a CSRF token ({names}): browsers send it back through the "
            "gateway as they got it; nothing to configure"
        )
    if found.entry.kind == "json":
        said.append(
            "the login is a script's JSON request: after a right password the gateway answers "
            "it with 303 to its challenge page; check in a browser that the CRM's page follows"
        )
    if found.signals is not None and found.signals.failure_location:
        where = target_path(found.signals.failure_location)
        said.append(f"a wrong password is sent back to {where}")
    return said
