"""The gateway's own cookies (the session, the remembered device, the language, gateway
mode's login form) and which cookies reach the CRM: ours never, the CRM's own only with a
full session, and its session cookie only with the value released to that session.

A Cookie header is read every way a server may read it (aiohttp and http.cookies split at
whitespace, PHP url-decodes names and reads them as form fields, ASP.NET Core reads names in
any case), so a cookie hidden in another spelling is removed like its plain one.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from urllib.parse import unquote

from aiohttp import web
from multidict import CIMultiDict

from gateway.bounded import remember
from gateway.config.signin import Login
from gateway.crypto import same
from gateway.fields import readings
from gateway.headers import fold
from gateway.signin.identity import clears, folded, sent_back
from gateway.signin.session import Session
from gateway.web.keys import VIEW
from gateway.web.upstream import Adjust

DEVICE_COOKIE = "crm_gateway_device"
LOGIN_COOKIE = "crm_gateway_login"  # gateway mode: the login form's double-submit nonce
LANGUAGE_COOKIE = "crm_gateway_lang"

_COOKIE_GAP = re.compile(r"[\s,]+")
_PAIR_BOUNDARY = re.compile(r"[\s;,]")  # what may come just before a cookie's name
# `name=value` (after the space of `; `) with a token name and a value of visible ASCII other
# than `,` and `;`: read one way by everyone. Most pieces of most requests look like this, so
# they skip the readings below (on every request of a signed-in user).
_PLAIN_PAIR = re.compile(r" *([A-Za-z0-9_-]+)=[\x21-\x2b\x2d-\x3a\x3c-\x7e]*")
# The values we sign (itsdangerous, URL-safe base64 and dots), up to the end of their pair.
_OUR_VALUE = re.compile(r"[A-Za-z0-9_.-]*(?=;|$)")
# A browser sends the same Cookie header with request after request: what `adjust` lets
# through to the CRM is worked out once per header, for headers up to REMEMBERED_LENGTH
# characters, at most REMEMBERED of them per worker (the oldest go first): a few MB at most.
REMEMBERED = 1024
REMEMBERED_LENGTH = 4096


class Cookies:
    def __init__(self, session_cookie: str, login: Login) -> None:
        self.session_name = session_cookie
        self.login = login
        names = {session_cookie, DEVICE_COOKIE, LANGUAGE_COOKIE, LOGIN_COOKIE}
        self.own = frozenset({*names, *(f"__Host-{c}" for c in names)})
        self.crm = frozenset(login.crm_cookies)
        # What `_keeper` drops, by names folded to one case: a server may read cookie names in
        # any case (ASP.NET Core's cookie collection is case-insensitive), so `SID=` is the
        # CRM's `sid` there (the names of a piece are folded too: _folded_names).
        self._own_folded = folded(self.own)
        self._own_and_crm_folded = folded(self.own | self.crm)
        self.crm_folded = folded(self.crm)
        self._identity = fold(login.identity_header) if login.mode == "gateway" else ""
        # crm_pairs_refused's answers (a pure function of its arguments), per worker
        # (REMEMBERED).
        self._refused: dict[tuple[tuple[str, ...], str | None, str], bool] = {}
        # What `adjust` keeps of a request's Cookie lines (also a pure function of them, who
        # is signed in and the session's binding), per worker (REMEMBERED).
        self._kept: dict[tuple[tuple[str, ...], str | None, str], str] = {}
        # What `get` found in a Cookie header (its first, as aiohttp reads it), by header and
        # cookie name: a pure function of them too (REMEMBERED).
        self._found: dict[tuple[str, str], str | None] = {}

    @staticmethod
    def secure(request: web.Request) -> bool:
        return bool(request[VIEW].proto == "https")

    def name(self, request: web.Request, base: str) -> str:
        return cookie_name(request, base)

    def get(self, request: web.Request, base: str) -> str | None:
        """One of our cookies as aiohttp reads it (`request.cookies`), found without parsing
        every cookie of the request when the header is plain: the name once, at the start of
        a pair, with a value of the characters we sign, and no quotes anywhere (a quoted
        value may hide `name=` inside it). Anything else goes to aiohttp's own reading."""
        name = self.name(request, base)
        header = request.headers.get("Cookie")
        if header is None or name not in header:
            return None  # most requests: not ours to read, whatever else they carry
        key = (header, name)
        found = self._found.get(key, _UNREAD)
        if found is _UNREAD:
            found = _read_cookie(request, header, name)
            if len(header) <= REMEMBERED_LENGTH:
                remember(self._found, key, found, REMEMBERED)
        return found

    def set(
        self, request: web.Request, base: str, value: str, max_age: float | None = None
    ) -> tuple[str, str]:
        """A Set-Cookie header for one of ours: HttpOnly, SameSite=Lax, Secure over HTTPS."""
        parts = [f"{self.name(request, base)}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
        if max_age is not None:
            parts.append(f"Max-Age={int(max_age)}")
        if self.secure(request):
            parts.append("Secure")
        return ("Set-Cookie", "; ".join(parts))

    def session(self, request: web.Request, value: str) -> tuple[str, str]:
        return self.set(request, self.session_name, value)

    def clear_session(self, request: web.Request) -> tuple[str, str]:
        return self.set(request, self.session_name, "", max_age=0)

    def adjust(self, signed_in: str | None, binding: str = "") -> Adjust:
        """Our cookies never reach the CRM; the CRM's own only with a full session, and its
        session cookie only with the value released to this session (`binding`: a copy of
        another user's CRM cookie is no use inside one's own gateway session); the identity
        header (gateway mode) only as we set it."""
        identity = self._identity
        header = self.login.identity_header

        def adjust(headers: CIMultiDict[str]) -> None:
            if identity:
                for name in [n for n in headers if fold(n) == identity]:
                    headers.popall(name, None)
                if signed_in:
                    headers[header] = signed_in
            cookies = headers.getall("Cookie", None)
            if cookies:
                kept = self.kept_cookies(tuple(cookies), signed_in, binding)
                headers.popall("Cookie", None)
                if kept:
                    headers["Cookie"] = kept

        return adjust

    def kept_cookies(self, lines: tuple[str, ...], signed_in: str | None, binding: str) -> str:
        """The one Cookie header the CRM gets for these Cookie lines ("": none), the pieces
        `_keeper` lets through joined with `; `; remembered per worker (REMEMBERED)."""
        key = (lines, signed_in, binding)
        found = self._kept.get(key)
        if found is None:
            keep = self._keeper(signed_in, binding)
            found = "; ".join(
                [pair.strip() for line in lines for pair in line.split(";") if keep(pair)]
            )
            if sum(map(len, lines)) <= REMEMBERED_LENGTH:
                remember(self._kept, key, found, REMEMBERED)
        return found

    def _keeper(self, signed_in: str | None, binding: str) -> Callable[[str], bool]:
        """Whether one `;`-separated piece of a Cookie header may reach the CRM: none that
        some server reads as one of ours, or (anonymous) as one of the CRM's; the CRM's
        session cookie only as its own name spells it, with the value bound to the session."""
        drop = self._own_folded if signed_in else self._own_and_crm_folded
        bound = self.login.success_cookie if signed_in and self.login.mode == "upstream" else ""
        bound_folded = bound.casefold()

        def keep(pair: str) -> bool:
            names = _folded_names(pair)
            if not pair.strip() or names & drop:
                return False
            if bound and bound_folded in names:
                name, _, value = pair.strip().partition("=")
                return name == bound and binding != "" and same(cookie_binding(value), binding)
            return True

        return keep

    def crm_pairs_refused(
        self, cookie_lines: list[str], signed_in: str | None, binding: str = ""
    ) -> bool:
        """The forward-auth endpoint, which cannot remove a cookie: does a piece of these
        Cookie lines name one of the CRM's cookies that `adjust` would have removed?"""
        if not self.crm or not cookie_lines:
            return False
        key = (tuple(cookie_lines), signed_in, binding)
        found = self._refused.get(key)
        if found is None:
            keep = self._keeper(signed_in, binding)
            found = any(
                _folded_names(pair) & self.crm_folded and not keep(pair)
                for line in cookie_lines
                for pair in line.split(";")
            )
            if sum(map(len, cookie_lines)) <= REMEMBERED_LENGTH:
                remember(self._refused, key, found, REMEMBERED)
        return found

    def new_crm_sessions(
        self, set_cookies: list[str], session: Session
    ) -> frozenset[tuple[str, str]]:
        """The CRM session cookie's values these Set-Cookie headers set other than the one
        bound to `session` (nor a deletion), with their names as written ("" for a nameless
        `=sid=x`, which browsers send back as `sid=x`). Every header of the name counts, in
        any case (a CRM reading names so takes `SID` for `sid`), not only the last a browser
        keeps: `sid=NEW; Path=/` then the current id at `Path=/x` leaves the browser both."""
        wanted = self.login.success_cookie.casefold()
        return frozenset(
            (found if named else "", value)
            for found, value, named in map(sent_back, set_cookies)
            if found.casefold() == wanted
            and not clears(value)
            and cookie_binding(value) != session.crm_binding  # else the same session again
        )

    def nameless_crm(self, set_cookie: str) -> bool:
        """A Set-Cookie with no name that a browser sends back as one of the CRM's cookies
        (`=crm_session=x` comes back as `crm_session=x`)."""
        name, _, named = sent_back(set_cookie)
        return not named and name.casefold() in self.crm_folded

    def crm_names_sent(self, cookie_lines: list[str]) -> frozenset[str]:
        """The names, as the browser spells them, of the pieces of these Cookie lines that
        some server reads as one of the CRM's cookies (`SID` for `sid`, `s%69d`), and the
        CRM's own names: what a browser must be told to forget (forward auth's clear)."""
        sent = [
            pair.split("=", 1)[0].strip()
            for line in cookie_lines
            for pair in line.split(";")
            if _folded_names(pair) & self.crm_folded
        ]
        return self.crm | {name for name in sent if name}


_UNREAD = "\x00unread"  # Cookies.get: a header not read yet (compared by identity)


def _read_cookie(request: web.Request, header: str, name: str) -> str | None:
    """Cookies.get's answer, worked out: the fast way when it is sure, else aiohttp's."""
    if '"' not in header:
        pairs = [m for m in _named(name).finditer(header) if _starts_pair(header, m.start())]
        if len(pairs) == 1 and pairs[0].group().endswith(name + "="):
            found = _OUR_VALUE.match(header, pairs[0].end())
            if found is not None:
                return found.group(0)
    return request.cookies.get(name)


@functools.lru_cache(maxsize=16)
def _named(name: str) -> re.Pattern[str]:
    """`name` then `=`, white space allowed between: a pair named `name` where _starts_pair
    agrees. The name leads the pattern, so the regex engine looks for it as a literal (a
    pattern that starts with the separators tries every character of the header)."""
    return re.compile(re.escape(name) + r"\s*=")


def _starts_pair(header: str, at: int) -> bool:
    """Whether a name at `at` starts a pair as any reader splits a Cookie header: at the
    start, or after a separator or white space (white space may come before the name)."""
    return at == 0 or _PAIR_BOUNDARY.match(header, at - 1) is not None


def cookie_name(request: web.Request, base: str) -> str:
    """One of our cookies' names as this request has it: `__Host-` over HTTPS, for this host
    and path / only, so a sibling subdomain cannot plant or overwrite it (session fixation
    through a cookie jar)."""
    return f"__Host-{base}" if request[VIEW].proto == "https" else base


def _names_read(pair: str) -> set[str]:
    """The cookie names some server may read in one `;`-separated piece of a Cookie header.
    aiohttp and http.cookies also split at whitespace (`a=1 crm=x`, `a=1, crm=x`); PHP
    url-decodes a name and reads `.` and ` ` in it as `_` and `name[..]` as `name`."""
    plain = _PLAIN_PAIR.fullmatch(pair)  # most pairs: one name every reader agrees on
    return {plain.group(1)} if plain is not None else names_read_every_way(pair)


def _folded_names(pair: str) -> set[str]:
    """_names_read in one case (folded): what a server reading names in any case may take
    for each of them."""
    return {name.casefold() for name in _names_read(pair)}


def names_read_every_way(pair: str) -> set[str]:
    """_names_read without its shortcut: each reader's way of finding names, in full."""
    names = [pair.split("=", 1)[0]]
    names += [token.split("=", 1)[0] for token in _COOKIE_GAP.split(pair) if "=" in token]
    found = {name.strip() for name in names}
    for name in names:
        # PHP url-decodes a cookie's name and reads it as it reads a form field's.
        whole, arrays = readings(unquote(name).strip())
        found |= whole | arrays
    return found


def cookie_binding(value: str) -> str:
    """What a session remembers of the CRM cookie released to it: a digest, not the value."""
    return hashlib.sha256(value.encode()).hexdigest()
