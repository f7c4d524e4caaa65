"""A page as detect-login reads it: its forms (action, method, fields), links, scripts and
meta refresh, every URL made absolute against the page (and its <base>). The standard
library's HTML parser, which takes broken markup as browsers do; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

# Inputs that carry no text a person types.
_NOT_TEXT = frozenset(
    {"hidden", "password", "checkbox", "radio", "submit", "button", "image", "reset", "file"}
)


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # the input's type, lower case ("text" when none); "select", "textarea"
    value: str = ""
    autocomplete: str = ""
    checked: bool = False
    readonly: bool = False

    @property
    def typed(self) -> bool:
        """A field a person types into (text, e-mail, tel, …)."""
        return self.type not in _NOT_TEXT and self.type not in ("select",)


@dataclass(frozen=True)
class Form:
    number: int  # 1, 2, … in the page's order
    action: str  # absolute; the page's own URL when the form names none
    method: str  # GET or POST
    enctype: str
    fields: tuple[Field, ...]
    submits: tuple[tuple[str, str], ...]  # named submit buttons: what a click adds
    says: str  # the text of its buttons and labels, lower case (a hint of what it is for)
    explicit: bool  # it names an action or a method (a form a script handles names neither)

    def named(self, kind: str) -> list[Field]:
        return [f for f in self.fields if f.type == kind]


@dataclass(frozen=True)
class Link:
    href: str  # absolute
    text: str


@dataclass
class Page:
    url: str
    title: str = ""
    forms: list[Form] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)  # absolute URLs of <script src>
    inline: list[str] = field(default_factory=list)  # inline scripts' text
    refresh: str = ""  # a <meta http-equiv=refresh> target, absolute
    loose_password: bool = False  # a password input outside any form (a script's login)


@dataclass
class _Open:
    """A form being read."""

    attributes: dict[str, str]
    fields: list[Field] = field(default_factory=list)
    submits: list[tuple[str, str]] = field(default_factory=list)
    says: list[str] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self, url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page(url)
        self.base = url
        self._form: _Open | None = None
        self._link: tuple[str, list[str]] | None = None
        self._in: str = ""  # "title", "script", "button" or "label" while inside one
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attributes}
        if tag == "base" and a.get("href"):
            self.base = urljoin(self.page.url, a["href"])
        elif tag == "form" and self._form is None:
            self._form = _Open(a)
        elif tag in ("input", "select", "textarea", "button"):
            self._field(tag, a)
        elif tag == "a" and a.get("href"):
            self._link = (urljoin(self.base, a["href"]), [])
        elif tag == "script":
            if a.get("src"):
                self.page.scripts.append(urljoin(self.base, a["src"]))
            self._enter("script")
        elif tag in ("title", "label"):
            self._enter(tag)
        elif tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            _, _, target = a.get("content", "").partition("=")
            if target.strip():
                self.page.refresh = urljoin(self.base, target.strip().strip("'\""))

    def _enter(self, tag: str) -> None:
        self._in, self._text = tag, []

    def _field(self, tag: str, a: dict[str, str]) -> None:
        kind = a.get("type", "").lower() or ("text" if tag == "input" else "")
        if tag == "button":
            kind = kind or "submit"
            self._enter("button")
        elif tag in ("select", "textarea"):
            kind = tag
        if kind == "password" and self._form is None:
            self.page.loose_password = True
        if self._form is None or not a.get("name"):
            if self._form is not None and kind in ("submit", "image"):
                self._says(a.get("value", ""))
            return
        if kind in ("submit", "image"):
            self._form.submits.append((a["name"], a.get("value", "")))
            self._says(a.get("value", ""))
            return
        self._form.fields.append(
            Field(
                a["name"],
                kind,
                a.get("value", ""),
                a.get("autocomplete", "").lower(),
                "checked" in a,
                "readonly" in a,
            )
        )

    def _says(self, text: str) -> None:
        if self._form is not None and text.strip():
            self._form.says.append(text.strip().lower())

    def handle_data(self, data: str) -> None:
        if self._in:
            self._text.append(data)
        if self._link is not None:
            self._link[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in or (tag == "script" and self._in == "script"):
            text = "".join(self._text)
            if tag == "title":
                self.page.title = " ".join(text.split())
            elif tag == "script" and text.strip():
                self.page.inline.append(text)
            elif tag in ("button", "label"):
                self._says(text)
            self._in, self._text = "", []
        if tag == "a" and self._link is not None:
            href, words = self._link
            self.page.links.append(Link(href, " ".join("".join(words).split())))
            self._link = None
        elif tag == "form" and self._form is not None:
            self._close_form()

    def _close_form(self) -> None:
        assert self._form is not None
        a = self._form.attributes
        method = a.get("method", "").upper()
        self.page.forms.append(
            Form(
                number=len(self.page.forms) + 1,
                action=urljoin(self.base, a["action"]) if a.get("action") else self.page.url,
                method=method if method in ("GET", "POST") else "GET",
                enctype=a.get("enctype", "application/x-www-form-urlencoded").lower(),
                fields=tuple(self._form.fields),
                submits=tuple(self._form.submits),
                says=" ".join(self._form.says),
                explicit="action" in a or "method" in a,
            )
        )
        self._form = None

    def close(self) -> None:
        super().close()
        if self._form is not None:  # a form the page never closed ends with it
            self._close_form()


def read_page(html: str, url: str) -> Page:
    reader = _Reader(url)
    reader.feed(html)
    reader.close()
    return reader.page
