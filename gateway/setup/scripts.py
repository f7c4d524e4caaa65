"""A JSON login API found in a page's scripts, for CRMs whose page has no login form: the
address a script sends the user name and password to (`fetch`, `axios`, jQuery, an XHR), its
method, and the keys of the JSON object it sends; its logout call too. Read from the text
around each address, as a person skimming the script would; no I/O, nothing run."""

from __future__ import annotations

import re
from dataclasses import dataclass

_LITERAL = re.compile(r"""(["'`])((?:/|https?://)[^"'`\s<>]{0,200})\1""")
_LOGIN_URL = re.compile(r"log-?in|sign-?in|sign_in|auth|session|token", re.IGNORECASE)
_LOGOUT_URL = re.compile(r"log-?out|sign-?out|sign_out|log-?off", re.IGNORECASE)
_METHOD = re.compile(r"""\b(?:method|type)\s*:\s*["'](\w+)["']""", re.IGNORECASE)
_VERB_BEFORE = re.compile(r"""(?:axios|\$|http|api|client)\.(post|put|patch|delete|get)\s*\(\s*$""")
_OPEN_BEFORE = re.compile(r"""\.open\s*\(\s*["'](\w+)["']\s*,\s*$""")
_STRINGIFY = re.compile(r"JSON\.stringify\s*\(\s*\{")
_KEY = re.compile(r"""^\s*(?:["']([^"']+)["']|([A-Za-z_$][\w$]*))\s*(?::|$)""")
_PASSWORD_KEY = re.compile(r"pass|pwd|secret", re.IGNORECASE)
_USER_KEY = re.compile(r"user|login|e-?mail|name|account|ident", re.IGNORECASE)
_WINDOW = 700  # characters after an address that belong to its call


@dataclass(frozen=True)
class ApiCall:
    url: str  # as written: a path or an absolute URL
    method: str  # "" when the script does not say (fetch's default is GET)
    keys: tuple[str, ...]  # the JSON object's keys, when it sends one


def _object_keys(text: str, start: int) -> tuple[str, ...]:
    """The top-level keys of the object literal whose `{` is at `start`."""
    depth = 0
    pieces: list[str] = []
    piece: list[str] = []
    for char in text[start:]:
        if char in "{[(":
            depth += 1
            if depth == 1:
                continue
        elif char in "}])":
            depth -= 1
            if depth == 0:
                break
        if depth == 1 and char == ",":
            pieces.append("".join(piece))
            piece = []
        elif depth >= 1:
            piece.append(char)
    pieces.append("".join(piece))
    keys = []
    for item in pieces:
        found = _KEY.match(item.strip().removeprefix("..."))
        if found and not item.strip().startswith("..."):
            keys.append(found.group(1) or found.group(2))
    return tuple(keys)


def api_calls(script: str) -> list[ApiCall]:
    """Every address in the script that a login or logout could be sent to, with the method
    and JSON keys written next to it."""
    found = []
    for match in _LITERAL.finditer(script):
        url = match.group(2)
        if not (_LOGIN_URL.search(url) or _LOGOUT_URL.search(url)):
            continue
        before = script[max(0, match.start() - 80) : match.start()]
        window = script[match.end() : match.end() + _WINDOW]
        nxt = _LITERAL.search(window)
        if nxt and (_LOGIN_URL.search(nxt.group(2)) or _LOGOUT_URL.search(nxt.group(2))):
            window = window[: nxt.start()]  # the next address's call is not this one's
        method = ""
        said = _METHOD.search(window)
        verb = _VERB_BEFORE.search(before) or _OPEN_BEFORE.search(before)
        if said:
            method = said.group(1).upper()
        elif verb:
            method = verb.group(1).upper()
        keys: tuple[str, ...] = ()
        body = _STRINGIFY.search(window)
        if body:
            keys = _object_keys(window, body.end() - 1)
        elif verb and window.lstrip().startswith(","):
            brace = window.find("{")
            if brace >= 0 and not window[:brace].strip(", \n\t"):
                keys = _object_keys(window, brace)
        found.append(ApiCall(url, method, keys))
    return found


@dataclass(frozen=True)
class JsonLogin:
    url: str
    method: str
    username_key: str
    password_key: str


def json_login(calls: list[ApiCall]) -> JsonLogin | None:
    """The call that sends a user name and a password as JSON."""
    for call in calls:
        if not _LOGIN_URL.search(call.url) or _LOGOUT_URL.search(call.url):
            continue
        secret = [k for k in call.keys if _PASSWORD_KEY.search(k)]
        others = [k for k in call.keys if k not in secret]
        named = [k for k in others if _USER_KEY.search(k)] or (others if len(others) == 1 else [])
        if len(secret) == 1 and len(named) == 1:
            return JsonLogin(call.url, call.method or "POST", named[0], secret[0])
    return None


def json_logout(calls: list[ApiCall], login_url: str) -> tuple[str, str] | None:
    """(address, method) of the script's logout: a logout address, or the login's own
    address with DELETE (`DELETE /api/session`)."""
    for call in calls:
        if _LOGOUT_URL.search(call.url):
            return call.url, call.method or "GET"
    for call in calls:
        if call.url == login_url and call.method == "DELETE":
            return call.url, "DELETE"
    return None
