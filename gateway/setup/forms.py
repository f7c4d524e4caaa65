"""Which form of a page is a login, which of its fields names the user, which hidden fields
are CSRF tokens, and where logout is: judged from types, names and words, as a person reading
the page would. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.setup.html import Field, Form, Page

# Words (in the languages the gateway's pages speak) that name a user-name field, a login
# and a logout, in field names, link texts, button texts and URLs.
_USER_WORDS = re.compile(
    r"user|login|e-?mail|account|ident|benutzer|gebruiker|bruker|utilisateur|логин|почт|uid",
    re.IGNORECASE,
)
_SEARCH_NAMES = frozenset({"q", "s", "search", "query", "term", "keyword", "keywords"})
_LOGIN_WORDS = re.compile(
    r"log ?in|sign ?in|anmelden|inloggen|aanmelden|logg inn|connexion|se connecter|войти|вход",
    re.IGNORECASE,
)
_LOGOUT_WORDS = re.compile(
    r"log ?-?out|log ?off|sign ?-?out|abmelden|uitloggen|afmelden|logg ut|déconnexion|"
    r"se déconnecter|выход|выйти",
    re.IGNORECASE,
)
_CSRF_NAMES = re.compile(r"csrf|xsrf|token|nonce|authenticity|verification", re.IGNORECASE)
_RANDOM_VALUE = re.compile(r"^[A-Za-z0-9+/=_.:-]{16,}$")


def login_forms(page: Page) -> list[Form]:
    """Forms with exactly one password field (two are a sign-up or a password change)."""
    return [form for form in page.forms if len(form.named("password")) == 1]


def first_steps(page: Page) -> list[Form]:
    """Forms that ask for a user name alone and post it: a two-step login's first page."""
    found = []
    for form in page.forms:
        typed = [f for f in form.fields if f.typed]
        if form.named("password") or form.method != "POST" or len(typed) != 1:
            continue
        one = typed[0]
        if one.type == "search" or one.name.lower() in _SEARCH_NAMES:
            continue
        if one.autocomplete in ("username", "email") or _USER_WORDS.search(one.name):
            found.append(form)
    return found


def user_field(form: Form, typed: str = "") -> tuple[Field, str] | None:
    """The field that names the user, and how it was told; None when it cannot be told.

    `typed`: the name given on a first page, which a two-step login's password page carries
    in a hidden or read-only field."""
    if typed:
        for field in form.fields:
            carried = field.type == "hidden" or field.readonly
            if carried and field.value.strip().casefold() == typed.strip().casefold():
                return field, "the hidden field that carries the name given on the first page"
    candidates = [f for f in form.fields if f.typed]
    if len(candidates) == 1:
        return candidates[0], "its one text field"

    def score(field: Field) -> int:
        if field.autocomplete in ("username", "email"):
            return 3
        return 2 if field.type == "email" or _USER_WORDS.search(field.name) else 0

    ranked = sorted(candidates, key=score, reverse=True)
    if (
        ranked
        and score(ranked[0]) > 0
        and (len(ranked) == 1 or score(ranked[1]) < score(ranked[0]))
    ):
        why = "autocomplete=" + ranked[0].autocomplete if score(ranked[0]) == 3 else "its name"
        return ranked[0], f"the text field that names the user ({why})"
    return None


def csrf_fields(form: Form) -> list[Field]:
    """Hidden fields that look like a CSRF token: by name, or by a long random value."""
    return [
        f
        for f in form.named("hidden")
        if _CSRF_NAMES.search(f.name) or (_RANDOM_VALUE.match(f.value) and len(f.value) >= 20)
    ]


def login_links(page: Page) -> list[str]:
    """Links on the page's own site whose text or address says "log in"."""
    site = _origin(page.url)
    found = []
    for link in page.links:
        said = f"{link.text} {urlsplit(link.href).path}"
        if (
            _origin(link.href) == site
            and _LOGIN_WORDS.search(said)
            and not _LOGOUT_WORDS.search(said)
        ):
            found.append(link.href)
    return found


@dataclass(frozen=True)
class Logout:
    url: str  # absolute
    method: str
    fields: tuple[tuple[str, str], ...]  # what its form sends (a CSRF token among them)
    found: str  # how it was found, for the section's comment


def find_logout(page: Page) -> Logout | None:
    """A form or a link of the page's own site that says "log out"."""
    site = _origin(page.url)
    for form in page.forms:
        said = f"{form.says} {urlsplit(form.action).path}"
        if _origin(form.action) == site and _LOGOUT_WORDS.search(said):
            fields = tuple((f.name, f.value) for f in form.fields if f.type == "hidden")
            where = _where(page.url)
            return Logout(form.action, form.method, fields, f"the log-out form on {where}")
    for link in page.links:
        said = f"{link.text} {urlsplit(link.href).path}?{urlsplit(link.href).query}"
        if _origin(link.href) == site and _LOGOUT_WORDS.search(said):
            text = f'"{link.text}" ' if link.text else ""
            return Logout(link.href, "GET", (), f"the {text}link on {_where(page.url)}")
    return None


def describe(form: Form) -> str:
    """`POST /staff/login (username, password)`: a form as an operator tells it from others."""
    names = ", ".join(f.name for f in form.fields if f.type != "hidden")
    return f"{form.method} {_where(form.action)} ({names})"


def _where(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "") or "/"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
