"""Where a PHP CRM reads its login that the gateway does not watch: cookies, which PHP
without a php.ini (request_order unset, as in the official images) reads over the query and
the form, and methods other than login.method, since $_REQUEST runs a login whatever the
method. A request naming the login so is refused (login_named_unwatched), and a watched login
whose cookies name another user than its form (cookie_user). Plain functions; no I/O.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import unquote, unquote_plus

from multidict import MultiMapping

from gateway.config.signin import Login
from gateway.fields import may_be_read_as
from gateway.model import canonical_user
from gateway.signin.identity import (
    at_login_path,
    cookie_pairs,
    pairs_match,
    query_matches,
    query_pairs,
)


def login_named_unwatched(
    login: Login, method: str, raw_target: str, headers: MultiMapping[str]
) -> bool:
    """The login named where the gateway does not watch it: in a cookie, by another method,
    or in the query of another path (the proxy refuses it, 400 login_ambiguous; the
    forward-auth endpoint, 403)."""
    return (
        cookies_name_login(login, raw_target, headers)
        or login_by_another_method(login, method, raw_target, headers)
        or login_query_elsewhere(login, method, raw_target)
    )


def login_query_elsewhere(login: Login, method: str, raw_target: str) -> bool:
    """By login.method, the query that tells the login apart (`action=Login`) at another path
    than the login's: a PHP CRM behind a catch-all rewrite (nginx's `try_files $uri $uri/
    /index.php?$query_string`, Apache's FallbackResource) runs its login for any path that
    is not a file, `/contacts?action=Login` too, and the password would be checked there
    uncounted. Cheap for most requests: a query, and the login's, is looked for first."""
    if login.mode != "upstream" or method != login.method:
        return False
    query = login.path.partition("?")[2]
    raw_query = raw_target.partition("?")[2]
    if not query or not raw_query or not query_matches(query, raw_query):
        return False
    return not at_login_path(login, method, raw_target)


def cookies_name_login(login: Login, raw_target: str, headers: MultiMapping[str]) -> bool:
    """A request to the login's path carrying a cookie that names a pair of login.path's
    query (`action=Login`, under any name a server reads as it): PHP without a php.ini
    (request_order unset, as in the official images) puts cookies in $_REQUEST over the
    form, so any form to the path would be a login the gateway does not watch. Refused by
    the caller. Cheap for every other request: the Cookie headers are read only for a login
    told apart by its query, and the names looked for in them first."""
    query = login.path.partition("?")[2]
    if not query:
        return False
    cookie_lines = headers.getall("Cookie", [])
    if not cookie_lines:
        return False
    names = _query_names(query)
    text = "".join(cookie_lines)
    if "%" in text and any(
        "%" in pair.partition("=")[0] for line in cookie_lines for pair in line.split(";")
    ):
        text = unquote_plus(text)  # `%61ction`: PHP before 7.2.34 decoded cookie names
    text = text.casefold()
    if not any(name in text for name in names):
        return False  # most requests
    if not at_login_path(login, login.method, raw_target):
        return False
    pairs = [(name, unquote_plus(v).strip().casefold()) for name, v in cookie_pairs(cookie_lines)]
    return any(pairs_match(pair, pairs) for pair in query.split("&") if pair)


def login_by_another_method(
    login: Login, method: str, raw_target: str, headers: MultiMapping[str]
) -> bool:
    """A request to the login's path by another method than login.method (GET, HEAD) that
    names the login (login.path's query, if it has one) and the user-name field in its query
    or cookies: PHP's $_REQUEST reads them whatever the method, so the CRM would check that
    password uncounted, and log that user in past the gateway. Refused by the caller. Cheap
    for most requests: the field's name is looked for in the query and cookies first."""
    if login.mode != "upstream" or method == login.method:
        return False
    raw_query = raw_target.partition("?")[2]
    query = login.path.partition("?")[2]
    if query and not (raw_query and query_matches(query, raw_query)):
        return False  # most requests: no query, or not the login's
    if not query and not _may_be_at(login.path, raw_target.partition("?")[0]):
        return False  # most requests: another page than the login's
    cookie_lines = headers.getall("Cookie", [])
    text = (raw_query + ";" + ";".join(cookie_lines)).casefold()
    piece = _field_piece(login.username_field)
    if piece not in text and not (_names_escaped(text) and piece in unquote_plus(text)):
        return False  # most requests: the field is not named
    if not query and not at_login_path(login, login.method, raw_target):
        # A login told apart by its query is named at any path: a catch-all rewrite runs it
        # there too (login_query_elsewhere).
        return False
    field = login.username_field
    named = any(
        key.casefold() == field.casefold() or may_be_read_as(key, field)
        for key, _ in query_pairs(raw_query)
    )
    return named or bool(cookie_user(cookie_lines, login))


def _may_be_at(login_path: str, raw_path: str) -> bool:
    """Whether a raw path may be the login's, in one of the spellings _at_login_path takes
    (another case, escapes, path info, a script's folder): a cheap first look."""
    script = login_path.rstrip("/").rpartition("/")[2].casefold()
    return (
        script in raw_path.casefold()
        or "%" in raw_path
        or script.startswith(("index.", "default."))
    )


def _names_escaped(text: str) -> bool:
    """Whether a name in a query or Cookie text has an escape in it (`%75sername`): decoded
    only then, since session cookies' values are often escaped and their names never."""
    at = text.find("%")
    while at >= 0:  # a `%` with no `=` between it and the separator before it
        start = max(text.rfind(";", 0, at), text.rfind("&", 0, at)) + 1
        if text.rfind("=", start, at) < 0:
            return True
        at = text.find("%", at + 1)
    return False


@lru_cache(maxsize=4)
def _field_piece(name: str) -> str:
    """The longest piece of a field's name between `_`, case-folded: PHP reads `user.name`
    and `user name` as `user_name`, so only the pieces are sure to be in the text."""
    return max(name.casefold().split("_"), key=len)


def cookie_user(cookie_lines: list[str], login: Login) -> list[str]:
    """The canonical users the request's cookies name in a field a server may read as the
    user-name field (PHP without a php.ini reads cookies over the form: the CRM would log
    that user in, whatever the form says). A value in each way it may be decoded: PHP keeps
    a `+` in a cookie (php_raw_url_decode), a form reader takes it for a space."""
    field = login.username_field
    found: list[str] = []
    for name, value in cookie_pairs(cookie_lines):
        if name.casefold() == field.casefold() or may_be_read_as(name, field):
            found += {canonical_user(unquote(value)), canonical_user(unquote_plus(value))}
    return found


@lru_cache(maxsize=4)
def _query_names(query: str) -> tuple[str, ...]:
    """What is looked for in a Cookie header first: of each of login.path's query names,
    case-folded, its longest piece between `_` (PHP reads `do.login`, `do login` and
    `do[login` as `do_login`)."""
    names = {unquote_plus(p.partition("=")[0]).casefold() for p in query.split("&") if p}
    return tuple({max(name.split("_"), key=len) for name in names})
