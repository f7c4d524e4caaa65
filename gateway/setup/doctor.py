"""doctor: a deployment checked end to end, a Verdict per item with the fix for each
failure. The CRM as the gateway reaches it (reachable, how fast, its clock); the login
section against the login found there (and, with a test account, against its answers); a
gateway of this config on a loopback port (gateway.setup.trial) taking the CRM's login form
with the browser's Origin, and holding the test account's login for the second factor;
whether the CRM ignores case in paths as the rules are told it does; the redirects and
cookie domains seen; public_url, TLS and trusted_proxies; the secret files; the stores."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from string import ascii_letters, ascii_lowercase, ascii_uppercase

from gateway.clock import Clock
from gateway.config.model import Config
from gateway.config.signin import Login
from gateway.errors import DetectionFailed
from gateway.policy.model import Policy
from gateway.setup.attempt import Entry, submit
from gateway.setup.checks import (
    FAIL,
    OK,
    SKIP,
    WARN,
    Verdict,
    check_public_side,
    check_secret_files,
    check_stores,
)
from gateway.setup.client import Answer, Browser, origin_of, target_of
from gateway.setup.compare import (
    check_clock,
    check_cookie_domains,
    check_form,
    check_logout,
    check_redirects,
    check_signals,
)
from gateway.setup.detect import Detection, detect
from gateway.setup.section import scalar
from gateway.setup.trial import REFUSALS, Trial, probe, refused_as_forgery, trial_gateway
from gateway.signin.identity import set_cookie_names

SLOW = 1.0  # seconds: a CRM page slower than this makes every page slow
# What the gateway answers a login with before the CRM sees it (its audit trail says which).
_GATEWAY_REFUSALS = ("signin.refused", "ip.denied", "path.denied", "signin.locked")


@dataclass(frozen=True)
class Account:
    user: str = ""
    password: str = ""
    client_ip: str = "127.0.0.1"  # where the test login comes from, as the policy sees it


async def run_doctor(
    config: Config, policy: Policy | None, account: Account, *, wait: float, clock: Clock,
    folder: Path,
) -> list[Verdict]:  # fmt: skip
    verdicts: list[Verdict] = []
    answers: list[Answer] = []
    if await _reachable(config, wait, clock, answers, verdicts):
        verdicts.append(check_clock(answers))
        login = config.signin.login
        if login is None or login.mode != "upstream":
            said = "no login section: nobody signs in" if login is None else "login mode gateway"
            verdicts.append(Verdict("login form", SKIP, said))
        else:
            found = await _found(config, login, account, wait, clock, answers, verdicts)
            if found is not None:
                verdicts += check_form(login, found)
                verdicts += check_signals(login, found)
                if account.user:
                    verdicts.append(check_logout(login, found))
                verdicts += await _through_a_gateway(
                    config, policy, login, found, account, wait, clock, folder
                )
        verdicts.append(await _paths_case(config, policy, wait, clock))
        verdicts += check_redirects(answers, config)
        verdicts += check_cookie_domains(answers, config)
    verdicts += check_public_side(config)
    verdicts += check_secret_files(config.source)
    verdicts += await check_stores(config, clock)
    return verdicts


async def _reachable(
    config: Config, wait: float, clock: Clock, answers: list[Answer], verdicts: list[Verdict]
) -> bool:
    item = "CRM reachable"
    site = origin_of(config.upstream.url)
    try:
        async with Browser(site, wait, clock, answers=answers) as browser:
            for _ in range(3):
                await browser.send("GET", site + "/")
    except DetectionFailed as exc:
        fix = f"check upstream.url ({site}), that the CRM runs, and that this host may reach it"
        verdicts.append(Verdict(item, FAIL, str(exc), fix))
        skipped = "the CRM did not answer"
        verdicts += [Verdict(name, SKIP, skipped) for name in ("clock", "login form")]
        return False
    first, times = answers[0], [a.elapsed * 1000 for a in answers]
    said = (
        f"GET / answered {first.status} {first.reason} in {statistics.median(times):.0f} ms "
        f"(3 tries, slowest {max(times):.0f} ms)"
    )
    if first.status >= 500:
        verdicts.append(Verdict(item, FAIL, said, "the CRM fails: see its own logs"))
    elif max(times) > SLOW * 1000:
        fix = "every page through the gateway is at least as slow: look at the CRM's host"
        verdicts.append(Verdict(item, WARN, said, fix))
    else:
        verdicts.append(Verdict(item, OK, said))
    return True


_SWAP_ASCII = str.maketrans(ascii_letters, ascii_uppercase + ascii_lowercase)


async def _paths_case(config: Config, policy: Policy | None, wait: float, clock: Clock) -> Verdict:
    """Whether the CRM serves a path in another case as the same page (IIS and other Windows
    servers do), against upstream.case_insensitive_paths: the login page asked as written,
    in swapped case, and under a made-up name (a CRM that answers every path alike tells
    nothing)."""
    item = "paths and case"
    login = config.signin.login
    path = login.path.partition("?")[0] if login is not None and login.mode == "upstream" else ""
    other = path.translate(_SWAP_ASCII)  # not str.swapcase: `ß` would be `SS`, another name
    if other == path:
        return Verdict(item, SKIP, "no CRM login path with letters to ask in another case")
    site = origin_of(config.upstream.url)
    try:
        async with Browser(site, wait, clock) as browser:
            asked = [await browser.send("GET", site + p) for p in (path, other)]
            made_up = await browser.send("GET", f"{site}{path.rstrip('/')}-crm-gateway-probe")
    except DetectionFailed as exc:
        return Verdict(item, SKIP, str(exc))
    written, swapped = (a.status for a in asked)
    if (written >= 400 and written != 405) or made_up.status == written:  # 405: a POST route
        said = f"GET {path} answered {written}, a made-up path {made_up.status}: nothing to tell"
        return Verdict(item, SKIP, said)
    folded = config.upstream.case_insensitive_paths
    key = f"upstream.case_insensitive_paths: {'false' if folded else 'true'}"
    if swapped == written:
        said = f"the CRM serves {other} as {path} ({written}): it ignores case in paths (IIS?)"
        if folded:
            return Verdict(item, OK, f"{said}, and so do the rules")
        if policy is not None and policy.paths:
            fix = f"{key}: else a rule on /admin does not hold for /ADMIN"
            return Verdict(item, FAIL, f"{said}, but the rules do not", fix)
        return Verdict(item, WARN, f"{said}; no path rules yet", f"{key}, before any")
    if swapped == made_up.status:
        said = f"the CRM tells {other} ({swapped}) from {path} ({written})"
        if not folded:
            return Verdict(item, OK, said)
        fix = f"{key}: else an `anyone` rule for /public/** also admits /PUBLIC/…"
        return Verdict(item, WARN, f"{said}, but the rules fold case", fix)
    said = f"GET {path} {written}, {other} {swapped}, a made-up path {made_up.status}"
    return Verdict(item, SKIP, f"{said}: nothing to tell")


async def _found(
    config: Config,
    login: Login,
    account: Account,
    wait: float,
    clock: Clock,
    answers: list[Answer],
    verdicts: list[Verdict],
) -> Detection | None:
    """The login as detect-login finds it: from the CRM's start page, else from the page at
    login.path (many CRMs show their form where it posts)."""
    site = origin_of(config.upstream.url)
    starts = [site + "/", site + login.path]
    failed: list[str] = []
    for start in starts:
        try:
            return await detect(
                site, start, clock=clock, wait=wait, user=account.user,
                password=account.password, answers=answers,
            )  # fmt: skip
        except DetectionFailed as exc:
            failed.append(str(exc))
    said = failed[-1] if "no login on" in failed[0] else failed[0]
    fix = "see what crm-gateway detect-login says about this CRM"
    verdicts.append(Verdict("login form", FAIL, said, fix))
    return None


async def _through_a_gateway(
    config: Config,
    policy: Policy | None,
    login: Login,
    found: Detection,
    account: Account,
    wait: float,
    clock: Clock,
    folder: Path,
) -> list[Verdict]:
    try:
        async with trial_gateway(config, policy, folder, account.client_ip) as trial:
            verdicts = [await _origin_taken(config, trial, found.entry, wait, clock)]
            if not account.user:
                said = "no test account given (--user NAME)"
                verdicts.append(Verdict("login through the gateway", SKIP, said))
            else:
                verdicts.append(await _held(config, trial, login, found, account, wait, clock))
            return verdicts
    except DetectionFailed as exc:
        return [Verdict("gateway start", FAIL, str(exc), "crm-gateway check-config, then run")]


async def _origin_taken(
    config: Config, trial: Trial, entry: Entry, wait: float, clock: Clock
) -> Verdict:
    """The CRM's CSRF check and the browser's Origin as the gateway forwards it: a made-up
    login through the gateway against one sent straight to the CRM."""
    item = "CSRF and Origin"
    try:
        async with Browser(origin_of(config.upstream.url), wait, clock) as straight:
            direct = (await probe(straight, entry)).answer
        before = len(trial.events())
        async with trial.browser(wait, clock) as browser:
            through = (await probe(browser, entry)).answer
    except DetectionFailed as exc:
        return Verdict(item, FAIL, f"a login form through the gateway: {exc}", "")
    refused = [e for e in trial.events()[before:] if e.get("event") in _GATEWAY_REFUSALS]
    if refused:
        said = (
            f"not tried: the gateway itself refused the test form ({refused[0]['event']}, "
            f"{refused[0].get('reason', '')}); see the other verdicts"
        )
        return Verdict(item, SKIP, said)
    words = refused_as_forgery(through)
    if through.status in (403, 419, 422) and direct.status not in REFUSALS:
        words = words or f"{through.status} {through.reason}"
    if not words:
        host = "its own Host" if config.upstream.host_header == "upstream" else "the browser's Host"
        said = f"the CRM takes a login form with Origin {trial.site} and {host}"
        return Verdict(item, OK, said)
    if refused_as_forgery(direct):
        said = f"the CRM refused a made-up login even when sent to it directly ({direct.status})"
        return Verdict(item, WARN, said, "try the login in a browser through the gateway")
    said = (
        f"the CRM refuses the login form coming through the gateway ({through.status}: "
        f'"{words}"); sent to it directly, it answered {direct.status}'
    )
    if config.upstream.host_header == "upstream":
        fix = (
            "upstream.host_header: client (the default): the CRM compares the browser's Origin "
            "with the Host it receives, and gets its own host instead of the browser's"
        )
    else:
        fix = (
            f"add {trial.site} to the CRM's trusted origins (Django: CSRF_TRUSTED_ORIGINS; or "
            "have it trust X-Forwarded-Proto and X-Forwarded-Host from the gateway)"
        )
    return Verdict(item, FAIL, said, fix)


async def _held(
    config: Config,
    trial: Trial,
    login: Login,
    found: Detection,
    account: Account,
    wait: float,
    clock: Clock,
) -> Verdict:
    """The test account's login through the gateway: held for the second factor."""
    item = "login through the gateway"
    try:
        async with trial.browser(wait, clock) as browser:
            attempt = await submit(browser, found.entry, account.user, account.password)
    except DetectionFailed as exc:
        return Verdict(item, FAIL, str(exc), "")
    answer = attempt.answer
    cookies = set_cookie_names(answer.set_cookies)
    leaked = sorted(set(cookies) & {*login.crm_cookies, login.success_cookie})
    if found.signals is not None:
        leaked = sorted({*leaked, *(set(cookies) & set(found.signals.crm_cookies))})
    ours = config.signin.sessions.cookie_name
    session = ours in cookies or f"__Host-{ours}" in cookies
    where = target_of(answer.location) if answer.location else ""
    if leaked:
        said = f"the CRM's {', '.join(leaked)} reached the browser before a second factor"
        return Verdict(
            item, FAIL, said, "login.crm_cookies: list every cookie of the CRM's session"
        )
    if answer.status == 303 and session and where.startswith(config.path_prefix):
        said = (
            f"{account.user}'s password passed at the CRM; the gateway held the CRM's cookies "
            f"and sent the browser to {where} for the second factor"
        )
        return Verdict(item, OK, said)
    if session and answer.status in (302, 303):
        said = f"{account.user} was let in without a second factor (the policy asks none of them)"
        return Verdict(item, WARN, said, "see the policy's enforcement for this user")
    return _why_not_held(trial, login, found, account, attempt.target, answer)


def _why_not_held(
    trial: Trial, login: Login, found: Detection, account: Account, target: str, answer: Answer
) -> Verdict:
    """What the trial gateway's audit trail says happened to the login."""
    item = "login through the gateway"
    said = f"the login was answered {answer.status} {answer.reason}"
    for event in reversed(trial.events()):
        name, reason = event.get("event", ""), event.get("reason", "")
        if name in ("ip.denied", "path.denied"):
            said = f"the policy refuses {account.user} from {account.client_ip} ({reason})"
            fix = "--client-ip ADDRESS: an address this user signs in from"
            return Verdict(item, WARN, said, fix)
        if name == "signin.refused":
            said = f"the gateway refused the login ({reason}): it could not read one user name"
            fix = f"login.username_field: {scalar(found.username_field)}"
            return Verdict(item, FAIL, said, fix)
        if name == "signin.crm_failed":
            refused = refused_as_forgery(answer)
            if refused:
                said = f'the CRM refused it as a cross-site form: "{refused}"'
                return Verdict(item, FAIL, said, "see the verdict on CSRF and Origin")
            said = (
                f"the CRM answered {answer.status}, which login.success does not take for success"
            )
            return Verdict(item, FAIL, said, "see the verdict on success and failure above")
        if name == "signin.locked":
            return Verdict(item, WARN, f"the test login was locked out ({reason})", "")
    fix = f"login.path: {scalar(found.path)} and login.method: {found.method}"
    said += f"; the gateway did not take {target} for the login ({login.method} {login.path})"
    return Verdict(item, FAIL, said, fix)


def worst(verdicts: list[Verdict]) -> str:
    states = {v.state for v in verdicts}
    return FAIL if FAIL in states else WARN if WARN in states else OK
