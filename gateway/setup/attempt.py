"""Finding a CRM's login from a start page (a form, a two-step form, or a script's JSON
call, following redirects, a meta refresh and "log in" links), and sending one login through
it as a browser would: the page fetched afresh, its hidden fields (CSRF tokens) sent back,
the user name and password filled in."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin

from gateway.errors import DetectionFailed, SeveralForms
from gateway.setup.client import Answer, Browser, target_of
from gateway.setup.forms import csrf_fields, describe, first_steps, login_forms, login_links
from gateway.setup.forms import user_field as find_user_field
from gateway.setup.html import Form, Page, read_page
from gateway.setup.scripts import JsonLogin, api_calls, json_login, json_logout

MAX_SCRIPTS = 8  # script files read for a JSON login, on a page without a form
MAX_PAGES = 4  # pages followed from the start page (links, a meta refresh) to find a login


@dataclass(frozen=True)
class Entry:
    """Where a login starts and what it is."""

    kind: str  # "form", "two-step" (the user name first) or "json" (a script's API call)
    page: str  # the page a browser opens first
    number: int  # the form's number on that page (0 for json)
    how: str  # how it was found, for the section's comments
    by: str  # what sends the login there: "the login form on /login", "/app.js on /"
    api: JsonLogin | None = None
    logout: tuple[str, str] | None = None  # json: the script's logout (address, method)


@dataclass(frozen=True)
class Attempt:
    """One login sent, and the CRM's answer to it."""

    answer: Answer
    target: str  # the path and query the password went to
    method: str
    username_field: str
    how_user: str  # how that field was told
    encoding: str  # "form" or "json"
    held_before: frozenset[str]  # the cookies the browser had when it sent the password
    csrf: tuple[tuple[str, str], ...]  # CSRF-looking fields sent, with their values
    page: str  # the page that asked for the password
    routed: tuple[str, ...] = ()  # hidden fields that route a front controller: "action=Login"


# Hidden fields by which a front controller (index.php) routes a form: a login routed so is
# not told apart by its address, which is all login.path can match.
_ROUTES = frozenset({"action", "module", "do", "route", "task", "cmd", "op", "controller"})


def routed_by_fields(form: Form) -> tuple[str, ...]:
    return tuple(f"{f.name}={f.value}" for f in form.named("hidden") if f.name.lower() in _ROUTES)


def _usable(form: Form, where: str) -> None:
    if form.method != "POST":
        raise DetectionFailed(
            f"the login form on {where} sends the password in the address (method GET): the "
            "gateway reads the user name from a POST's body and cannot watch this login"
        )
    if form.enctype.startswith("multipart/"):
        raise DetectionFailed(
            f"the login form on {where} is sent as multipart/form-data: the gateway reads the "
            "user name from urlencoded forms and JSON only, and cannot watch this login"
        )


async def _script_login(
    browser: Browser, page: Page
) -> tuple[JsonLogin, tuple[str, str] | None, str] | None:
    """A JSON login call in the page's inline scripts or its scripts on the same site."""
    sources = [("the page's own script", text) for text in page.inline]
    for src in [s for s in page.scripts if browser.on_site(s)][:MAX_SCRIPTS]:
        answer = await browser.send("GET", src, referer=page.url)
        if answer.status == 200:
            sources.append((target_of(src), answer.body))
    for where, text in sources:
        calls = api_calls(text)
        found = json_login(calls)
        if found is not None:
            return found, json_logout(calls, found.url), where
    return None


def _pick(forms: list[Form], page: Page, choice: int | None) -> Form:
    if len(forms) == 1 and choice in (None, 1):
        return forms[0]
    choices = tuple(describe(form) for form in forms)
    if choice is None:
        listed = "; ".join(f"{n}. {text}" for n, text in enumerate(choices, start=1))
        raise SeveralForms(
            f"{target_of(page.url)} has {len(forms)} login forms: {listed}. Say which with "
            "--form N",
            choices,
        )
    if not 1 <= choice <= len(forms):
        raise DetectionFailed(f"--form {choice}: {target_of(page.url)} has {len(forms)} forms")
    return forms[choice - 1]


async def find_login(browser: Browser, start: str, choice: int | None = None) -> Entry:
    """The login a browser reaches from `start`; DetectionFailed when there is none, or
    SeveralForms when the page offers more than one and `choice` does not say which."""
    _, page = await browser.open(start)
    seen = [target_of(page.url)]
    for _ in range(MAX_PAGES):
        where = target_of(page.url)
        forms = login_forms(page) or first_steps(page)
        scripted = (
            await _script_login(browser, page) if not any(f.explicit for f in forms) else None
        )
        if scripted is not None:
            api, logout, source = scripted
            how = f"{source} on {where} posts JSON to {api.url}"
            by = f"{source} on {where}"
            return Entry("json", page.url, 0, how, by, api=api, logout=logout)
        if forms:
            form = _pick(forms, page, choice)
            _usable(form, where)
            if form.named("password"):
                by = f"the login form on {where}"
                return Entry("form", page.url, form.number, by, by)
            how = f"the form on {where} that asks for the user name alone (then a password page)"
            return Entry("two-step", page.url, form.number, how, f"the form on {where}")
        links = [link for link in login_links(page) if target_of(link) not in seen]
        following = page.refresh or (links[0] if links else "")
        if not following:
            break
        _, page = await browser.open(following)
        seen.append(target_of(page.url))
    raise DetectionFailed(
        f"no login on {', '.join(seen)}: no form with a password field, no login link, no JSON "
        "login in its scripts. Give the page that shows the login with --path"
    )


def _form_on(page: Page, number: int) -> Form:
    if number > len(page.forms):
        raise DetectionFailed(f"{target_of(page.url)} no longer shows form {number}")
    return page.forms[number - 1]


def _filled(form: Form, user_field: str, user: str, password: str) -> list[tuple[str, str]]:
    """What a browser sends for the form: its fields as the page gave them (checked boxes
    only), the user name and password typed, and its first named submit button."""
    sent: list[tuple[str, str]] = []
    for field in form.fields:
        if field.name == user_field:
            sent.append((field.name, user))
        elif field.type == "password":
            sent.append((field.name, password))
        elif field.type in ("checkbox", "radio"):
            if field.checked:
                sent.append((field.name, field.value or "on"))
        elif field.type != "select":
            sent.append((field.name, field.value))
    return sent + list(form.submits[:1])


async def password_form(browser: Browser, entry: Entry, user: str) -> tuple[Form, Page, str, str]:
    """The form that asks for the password (on a two-step login, after `user` was given on
    the first page), the page it is on, its user-name field and how that was told."""
    _, page = await browser.open(entry.page)
    form = _form_on(page, entry.number)
    if entry.kind == "two-step":
        found = find_user_field(form)
        if found is None:
            raise DetectionFailed(f"cannot tell the user-name field of {describe(form)}")
        sent = _filled(form, found[0].name, user, "")
        answer = await browser.send("POST", form.action, form=sent, referer=page.url)
        if answer.redirect:
            _, page = await browser.open(answer.url, answer)
        elif answer.status < 400:
            page = read_page(answer.body, answer.url)
        forms = login_forms(page)
        if len(forms) != 1:
            raise DetectionFailed(
                f"after the user name, {target_of(page.url)} shows no one password form "
                f"(answered {answer.status} to {target_of(answer.url)})"
            )
        form = forms[0]
        _usable(form, target_of(page.url))
        if form.named("password") and find_user_field(form, typed=user) is None:
            raise DetectionFailed(
                "the password page does not carry the user name given on the first page: the "
                "gateway would not know who signs in, and cannot watch this login"
            )
    named = find_user_field(form, typed=user if entry.kind == "two-step" else "")
    if named is None:
        raise DetectionFailed(
            f"cannot tell which field of {describe(form)} names the user: several text fields "
            "and none says so (autocomplete=username, a name with user, login or e-mail)"
        )
    return form, page, named[0].name, named[1]


async def submit(
    browser: Browser, entry: Entry, user: str, password: str, *, named: str = ""
) -> Attempt:
    """One login as a browser sends it. `named`: a name put in the user-name field instead of
    `user` (after `user` was given on a two-step login's first page)."""
    held = frozenset(browser.jar)
    if entry.kind == "json":
        assert entry.api is not None
        _, page = await browser.open(entry.page)
        held = frozenset(browser.jar)
        url = urljoin(page.url, entry.api.url)
        body = {entry.api.username_key: named or user, entry.api.password_key: password}
        answer = await browser.send(entry.api.method, url, json_body=body, referer=page.url)
        how = f"the key the script sends the user name in ({entry.api.username_key})"
        return Attempt(
            answer,
            target_of(url),
            entry.api.method,
            entry.api.username_key,
            how,
            "json",
            held,
            (),
            page.url,
        )
    form, page, field, how = await password_form(browser, entry, user)
    held = frozenset(browser.jar)
    sent = _filled(form, field, named or user, password)
    answer = await browser.send(form.method, form.action, form=sent, referer=page.url)
    csrf = tuple((f.name, f.value) for f in csrf_fields(form))
    return Attempt(
        answer,
        target_of(form.action),
        form.method,
        field,
        how,
        "form",
        held,
        csrf,
        page.url,
        routed_by_fields(form),
    )
