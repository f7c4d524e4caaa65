"""doctor's verdicts on what was seen of the CRM: its clock, the login section against the
login detect-login found (form, success and failure, logout), and the absolute redirects
and cookie domains in its answers that the gateway must rewrite or cannot. No I/O."""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from gateway.config.model import Config
from gateway.config.signin import Login
from gateway.setup.checks import FAIL, OK, SKIP, WARN, Verdict
from gateway.setup.client import Answer, origin_of, target_of
from gateway.setup.detect import Detection
from gateway.setup.section import scalar
from gateway.signin.identity import login_succeeded, query_matches, set_cookie_names

CLOCK_OK = 5.0  # seconds: TOTP takes codes ±30 s around this host's clock
CLOCK_FAIL = 15.0


def check_clock(answers: list[Answer]) -> Verdict:
    """This host's clock against the CRM's (its Date header)."""
    item = "clock"
    for answer in answers:
        try:
            stamp = parsedate_to_datetime(answer.header("Date")).timestamp()
        except (TypeError, ValueError):
            continue
        skew = stamp + 0.5 - answer.received  # Date is whole seconds, rounded down
        said = f"this host's clock and the CRM's differ by {abs(skew):.0f} s"
        fix = (
            "keep time with NTP on both (timedatectl set-ntp true, or chrony): authenticator "
            "codes are taken within ±30 s of this host's clock, and one of the two is wrong"
        )
        if abs(skew) <= CLOCK_OK:
            return Verdict(item, OK, f"within {max(abs(skew), 1):.0f} s of the CRM's clock")
        return Verdict(item, WARN if abs(skew) <= CLOCK_FAIL else FAIL, said, fix)
    return Verdict(item, SKIP, "the CRM sends no Date header to compare with", "")


def _line(key: str, value: str) -> str:
    return f"{key}: {value}"


def check_form(login: Login, found: Detection) -> list[Verdict]:
    """login.path, method and username_field against the form (or API) that was found."""
    item = "login form"
    seen: list[Verdict] = []
    want, _, query = login.path.partition("?")
    path, _, found_query = found.path.partition("?")
    how = found.notes.get("path", found.entry.how)
    if want.rstrip("/").lower() != path.rstrip("/").lower() or not query_matches(
        query, found_query
    ):
        said = f"login.path is {login.path}, but the password is sent to {found.path} ({how})"
        seen.append(Verdict(item, FAIL, said, _line("login.path", scalar(found.path))))
    elif found_query and not query:
        said = (
            f"login.path {login.path} has no query, so every {login.method} to {want} is taken "
            f"for a login (and refused without a user name); the login is {found.path}"
        )
        seen.append(Verdict(item, FAIL, said, _line("login.path", scalar(found.path))))
    if login.method != found.method:
        said = f"login.method is {login.method}, but the login is sent with {found.method}"
        seen.append(Verdict(item, FAIL, said, _line("login.method", found.method)))
    if login.username_field != found.username_field:
        said = (
            f"login.username_field is {login.username_field!r}, but the login names the user "
            f"in {found.username_field!r} ({found.notes.get('username_field', '')})"
        )
        fix = _line("login.username_field", scalar(found.username_field))
        seen.append(Verdict(item, FAIL, said, fix))
    where = target_of(found.entry.page)
    ok = f"path, method and user-name field match the login found from {where}"
    return seen or [Verdict(item, OK, ok)]


def _passes(answer: Answer, login: Login) -> bool:
    return login_succeeded(answer.status, answer.location, answer.set_cookies, login)


def check_signals(login: Login, found: Detection) -> list[Verdict]:
    """success and crm_cookies against the CRM's answers to a right and a wrong password."""
    item = "success and failure"
    seen: list[Verdict] = []
    for problem in found.undecided:
        if not problem.startswith("logout"):
            seen.append(Verdict("login", FAIL, problem, "see docs/front-of-your-crm.md"))
    signals, right, wrong = found.signals, found.right, found.wrong
    if found.right is None:
        return [Verdict(item, SKIP, "no test account given (--user NAME): no login tried")]
    if signals is None or right is None or wrong is None:
        return seen
    r, w = right.answer, wrong.answer
    status = ", ".join(str(s) for s in signals.status)
    fix = f"login.success: {{status: [{status}], cookie: {scalar(signals.cookie)}}}"
    if signals.failure_location:
        fix = fix[:-1] + f", failure_location: {scalar(signals.failure_location)}}}"
    if not _passes(r, login):
        why = []
        if r.status not in login.success_status:
            listed = ", ".join(str(s) for s in login.success_status)
            why.append(f"it is answered {r.status}, success.status is [{listed}]")
        names = set_cookie_names(r.set_cookies)
        if not names.get(login.success_cookie):
            why.append(f"it sets {', '.join(names) or 'no cookie'}, not {login.success_cookie}")
        if not why:
            why.append(f"it is sent to {r.location}, under success.failure_location")
        said = "a right password would not be taken for a login: " + "; ".join(why)
        seen.append(Verdict(item, FAIL, said, fix))
    if _passes(w, login):
        said = (
            f"a wrong password would be taken for a login (answered {w.status}"
            + (f" to {w.location}" if w.location else "")
            + "): the gateway would hold and challenge a login the CRM refused"
        )
        seen.append(Verdict(item, FAIL, said, fix))
    missing = [c for c in signals.crm_cookies if c not in login.crm_cookies]
    if missing:
        every = ", ".join(dict.fromkeys([*login.crm_cookies, *signals.crm_cookies]))
        said = (
            f"crm_cookies lacks {', '.join(missing)}, set by a right login: a copy of it would "
            "reach the CRM without a gateway session"
        )
        seen.append(Verdict(item, FAIL, said, f"login.crm_cookies: [{every}]"))
    ok = (
        f"a right password ({r.status}, sets {signals.cookie}) is a login, a wrong one ({w.status})"
    )
    ok += " is not"
    return seen or [Verdict(item, OK, ok)]


def check_logout(login: Login, found: Detection) -> Verdict:
    item = "logout"
    detected = found.login()
    if found.logout is None or detected is None:
        return Verdict(item, SKIP, "no logout found after the login to compare with", "")
    fix = (
        f"login.logout: {{path: {scalar(detected.logout_path)}, method: {detected.logout_method}}}"
    )
    if not login.logout_path:
        said = (
            f"login.logout is not set: the CRM's logout ({found.logout.found}) would leave the "
            "gateway's session open"
        )
        return Verdict(item, WARN, said, fix)
    if (login.logout_path, login.logout_method) != (detected.logout_path, detected.logout_method):
        said = (
            f"login.logout is {login.logout_method} {login.logout_path}, but the CRM's is "
            f"{detected.logout_method} {detected.logout_path} ({found.logout.found})"
        )
        return Verdict(item, WARN, said, fix)
    return Verdict(item, OK, f"{login.logout_method} {login.logout_path}: {found.logout.found}")


def check_redirects(answers: list[Answer], config: Config) -> list[Verdict]:
    """Absolute addresses the CRM sends browsers to: its own (rewritten), or others (not)."""
    item = "absolute redirects"
    site = origin_of(config.upstream.url)
    public = origin_of(config.public_url) if config.public_url else ""
    own: list[str] = []
    away: dict[str, Answer] = {}
    for answer in answers:
        for name in ("Location", "Content-Location", "Refresh"):
            for value in answer.all(name):
                url = value.partition("url=")[2].strip("'\" ") if name == "Refresh" else value
                if not url.startswith(("http://", "https://")):
                    continue
                where = origin_of(url)
                if where == site:
                    own.append(url)
                elif where != public:
                    away.setdefault(where, answer)
    seen = []
    for where, answer in away.items():
        said = (
            f"the CRM sends browsers to {answer.location or where} (from {target_of(answer.url)}): "
            f"neither upstream.url nor public_url, so the gateway cannot rewrite it and the "
            "browser leaves the gateway"
        )
        fix = (
            f"upstream.url: {where} if that is the CRM's own address; else set the CRM's site "
            f"URL to {config.public_url or 'the address users type (public_url)'}"
        )
        seen.append(Verdict(item, FAIL, said, fix))
    posting = sorted({a.url for a in answers if f'action="{site}' in a.body.lower()})
    for url in posting:
        said = (
            f"a form on {target_of(url)} posts to {site} directly, past the gateway (it does not "
            "rewrite pages)"
        )
        fix = f"set the CRM's site URL to {config.public_url or 'the address users type'}"
        seen.append(Verdict(item, FAIL, said, fix))
    if seen:
        return seen
    if own:
        to = config.public_url or "relative addresses"
        return [Verdict(item, OK, f"to its own address ({own[0]}): rewritten to {to}")]
    return [Verdict(item, OK, "the CRM redirects with relative addresses")]


def check_cookie_domains(answers: list[Answer], config: Config) -> list[Verdict]:
    item = "cookie domains"
    upstream = (urlsplit(config.upstream.url).hostname or "").lower()
    public = urlsplit(config.public_url) if config.public_url else None
    host = (public.hostname or "").lower() if public else ""
    seen: dict[str, Verdict] = {}
    for answer in answers:
        for cookie in answer.set_cookies:
            name = cookie.split("=", 1)[0].strip()
            parts = [p.strip() for p in cookie.split(";")[1:]]
            domains = [p.split("=", 1)[1].strip().lstrip(".").lower() for p in parts
                       if p.lower().startswith("domain=")]  # fmt: skip
            if public and public.scheme == "http" and "secure" in (p.lower() for p in parts):
                said = f"{name} is Secure, and public_url is http: browsers drop it"
                seen[name] = Verdict(item, FAIL, said, "serve the gateway over https (public_url)")
            for domain in domains:
                if domain == upstream or (host and (host == domain or host.endswith("." + domain))):
                    continue
                if host:
                    said = f"{name} is set for Domain={domain}, which does not cover {host}: "
                    said += "browsers at public_url drop it"
                else:
                    said = f"{name} is set for Domain={domain}, not the CRM's host: browsers drop "
                    said += "it unless they reach the gateway under that domain (set public_url)"
                fix = (
                    f"make the CRM set it host-only (no Domain) or for {host or 'the public host'}"
                )
                seen[name] = Verdict(item, FAIL if host else WARN, said, fix)
    return list(seen.values()) or [
        Verdict(item, OK, "no cookie names a domain the gateway cannot rewrite")
    ]
