"""Learning who signs in from the CRM's own login: the user name in the form, and whether the
CRM's answer means success. Plain functions over bytes and header lists; no I/O.

The user the gateway challenges must be the user the CRM logs in, so anything a CRM could read
differently from us (the field twice, `;` separators, bad UTF-8, an unknown body type) is
refused rather than guessed.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import unquote_plus, unquote_to_bytes, urljoin, urlsplit

from multidict import MultiMapping

from gateway.config.signin import Login
from gateway.errors import AmbiguousField, AmbiguousLogin, BadRequest
from gateway.fields import body_fields, may_be_read_as, query_values
from gateway.model import canonical_user
from gateway.paths import fold_case, match_form, normalize_path, script_paths

__all__ = [
    "canonical_user",
    "clears",
    "folded",
    "json_names_login",
    "login_may_be_in_body",
    "login_name",
    "login_succeeded",
    "login_user",
    "names_login",
    "names_logout",
    "query_matches",
    "sent_back",
    "set_cookie_names",
    "user_of",
]

MAX_NAME = 256


def _urlencoded(body: bytes, field: str) -> list[str]:
    if b";" in body:
        # Some frameworks also split on `;`: `username=a;username=b` reads two ways.
        raise AmbiguousLogin("a ';' in a form body (some servers split fields on it)")
    found: list[str] = []
    for pair in body.split(b"&"):
        if not pair:
            continue
        name_raw, _, value_raw = pair.partition(b"=")
        try:
            name = unquote_to_bytes(name_raw.replace(b"+", b" ")).decode("utf-8")
            value = unquote_to_bytes(value_raw.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise AmbiguousLogin("a form field that is not UTF-8") from None
        if name == field:
            found.append(value)
        elif _in_any_case(name, field) or may_be_read_as(name, field):
            raise AmbiguousLogin(f"a field {name!r} that may be read as {field!r}")
    return found


def _in_any_case(name: str, field: str) -> bool:
    """`Username` for `username`: ASP.NET Core reads form fields and JSON properties in any
    case (its form collection and System.Text.Json's web defaults), binding another value
    than the one spelled as configured."""
    return name != field and name.casefold() == field.casefold()


def _json(body: bytes, field: str) -> list[str]:
    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        keys = [key for key, _ in items]
        if len(keys) != len(set(keys)):
            raise AmbiguousLogin("a JSON key that appears twice")
        if any(_in_any_case(key, field) for key in keys):
            raise AmbiguousLogin(f"a JSON key that may be read as {field!r}")
        return dict(items)

    try:
        data = json.loads(body.decode("utf-8"), object_pairs_hook=pairs)
    except AmbiguousLogin:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AmbiguousLogin("a JSON body that does not parse") from None
    if not isinstance(data, dict) or field not in data:
        return []
    value = data[field]
    if not isinstance(value, str):
        raise AmbiguousLogin(f"{field!r} is not a string")
    return [value]


def login_user(body: bytes, content_type: str, login: Login, raw_query: str = "") -> str:
    """The canonical user name a login request names (login_name's, canonical_user's)."""
    return user_of(login_name(body, content_type, login, raw_query))


# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): characters a collation
# gives no weight (`jessie` followed by U+034F is `jessie` to ICU, MySQL's Unicode collations
# and SQL Server), beyond those of category C that user_of refuses already.
_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
    "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


def user_of(typed: str) -> str:
    """The canonical user of a name as typed at the login, or AmbiguousLogin: also for a
    name with a character a collation ignores (the CRM would find the name without it)."""
    name = canonical_user(typed)
    if not name or len(name) > MAX_NAME or any(unicodedata.category(c)[0] == "C" for c in name):
        raise AmbiguousLogin("an empty, over-long or control-character user name")
    if _IGNORABLE.search(name):
        raise AmbiguousLogin("a user name with a character a collation ignores")
    return name


def login_name(body: bytes, content_type: str, login: Login, raw_query: str = "") -> str:
    """The user name a login request names, as typed, or AmbiguousLogin: also when its query
    holds a name any server may read as the user-name field (ASP.NET's `Request[...]` and
    Flask's `request.values` look in the query first: the CRM would log in that user while
    the gateway asks for the body's user's code)."""
    field = login.username_field
    for piece in raw_query.replace(";", "&").split("&") if raw_query else ():
        key = unquote_plus(piece.partition("=")[0])
        if key.casefold() == field.casefold() or may_be_read_as(key, field):
            raise AmbiguousLogin(f"the field {field!r} in the query of a login")
    kind, _, params = content_type.partition(";")
    kind = kind.strip().lower()
    as_json = kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )
    if not as_json and "json" in content_type.lower():
        # Laravel reads the body as JSON when its Content-Type holds `/json` or `+json`
        # anywhere (`application/x-www-form-urlencoded; x=/json`): we would read a form.
        raise AmbiguousLogin("a Content-Type that names JSON outside its media type")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            # The CRM would decode the name in that charset, we in UTF-8: two users.
            raise AmbiguousLogin(f"a login body in charset {charset!r}")
    if kind == "application/x-www-form-urlencoded":
        values = _urlencoded(body, login.username_field)
    elif as_json:  # JSON:API's application/vnd.api+json too, which frameworks read as JSON
        values = _json(body, login.username_field)
    else:
        raise AmbiguousLogin(f"a login body of type {kind or 'none'!r} is not read")
    if len(values) != 1:
        raise AmbiguousLogin(f"the field {login.username_field!r} appears {len(values)} times")
    return values[0]


def set_cookie_names(set_cookies: list[str]) -> dict[str, str]:
    """name → value of each Set-Cookie header that names its cookie (the last wins, as in
    a browser; a nameless one is not one of them: sent_back).

    Read as RFC 6265 §5.2 reads it: the pair before the first `;`, split at the first `=`.
    (http.cookies drops a whole header over an attribute it does not know, such as
    `Partitioned`, and takes attributes such as `Priority=High` for cookies.)"""
    return {name: value for name, value, named in map(sent_back, set_cookies) if named}


def sent_back(set_cookie: str) -> tuple[str, str, bool]:
    """The pair a browser sends back for one Set-Cookie header: its name, its value and
    whether the header names it so. A header whose name is empty (`=sid=x`, or no `=` at
    all) is kept as a nameless cookie and sent back as its value alone (RFC 6265bis), which
    a server reads as the pair `sid=x`: that pair, not named so (False)."""
    name, sep, value = set_cookie.split(";", 1)[0].partition("=")
    name, value = name.strip(), value.strip()
    if name and sep:
        return name, value, True
    if not sep:  # `sid`: sent back as `sid`, a name without a value
        return name, "", False
    inner, _, inner_value = value.partition("=")
    return inner.strip(), inner_value.strip(), False


def clears(value: str) -> bool:
    """A Set-Cookie value that removes its cookie rather than setting one: empty, `""` or
    PHP's `deleted`."""
    return value in ("", '""', "deleted")


def folded(names: frozenset[str]) -> frozenset[str]:
    """Cookie names in one case, as a server that reads them in any case sees them
    (ASP.NET Core's cookie collection: `SID` is `sid`)."""
    return frozenset(name.casefold() for name in names)


def login_succeeded(status: int, location: str, set_cookies: list[str], login: Login) -> bool:
    """The CRM accepted the password: a success status, its session cookie set to a value,
    and (when configured) not sent back to the login form."""
    if status not in login.success_status:
        return False
    if clears(set_cookie_names(set_cookies).get(login.success_cookie, "")):
        return False
    if login.failure_location and location.strip():
        # Resolved as a browser would: `login.php?error=1` and `//crm/login` are relative.
        path = urlsplit(urljoin(login.path, location.strip())).path
        # In any case: an IIS CRM may send its form back as /Login.aspx to a config that
        # says /login.aspx. Taken for a failure when in doubt: a password the CRM refused
        # must be counted as refused (a right one taken for wrong is only tried again).
        if fold_case(path).startswith(fold_case(login.failure_location)):
            return False
    return True


def names_login(login: Login, method: str, raw_target: str) -> bool:
    """A request (its method, raw path and query) to the CRM's own login form (login mode
    upstream), in any spelling a router may take for it: a trailing slash, another case
    (Rails and IIS do). BadRequest (gateway.paths) for a path that reads two ways."""
    if not at_login_path(login, method, raw_target):
        return False
    query = login.path.partition("?")[2]
    return not query or query_matches(query, raw_target.partition("?")[2])


def login_may_be_in_body(login: Login, method: str, raw_target: str) -> bool:
    """A request to the login's path by the login's method that its query does not name as
    the login, while login.path tells the login apart by its query (`index.php?action=Login`):
    a CRM reading the form too (PHP's `$_REQUEST`, vtiger's and SugarCRM's hidden `action`
    fields) takes it for its login when its form names the pair (form_names_login)."""
    query = login.path.partition("?")[2]
    return (
        bool(query)
        and at_login_path(login, method, raw_target)
        and not query_matches(query, raw_target.partition("?")[2])
    )


def json_names_login(login: Login, raw_target: str, body: bytes, content_type: str) -> bool:
    """Each `name=value` of login.path's query is in the request's query or its JSON body's
    top-level keys (a framework that merges JSON into its parameters reads them), read as
    generously as query_matches reads the query. Forms: gateway.signin.formscan."""
    query = login.path.partition("?")[2]
    fields = [(name, value.casefold()) for name, value in body_fields(body, content_type)]
    return pairs_match(query, query_pairs(raw_target.partition("?")[2]) + fields)


def cookie_pairs(cookie_lines: Sequence[str]) -> list[tuple[str, str]]:
    """(name, value) of each cookie in the Cookie headers, split at `;` only (as PHP and
    ASP.NET split them): the name url-decoded, both stripped, the value left encoded."""
    return [
        (unquote_plus(name).strip(), value.strip())
        for line in cookie_lines
        for name, _, value in (pair.partition("=") for pair in line.split(";"))
    ]


def at_login_path(login: Login, method: str, raw_target: str) -> bool:
    if login.mode != "upstream" or method != login.method:
        return False
    want = login.path.partition("?")[0]
    # Generous: compared as Windows compares names (case folded one to one, `ſ` as `S`),
    # escapes decoded, whatever server the CRM runs on. Another form taken for the login is
    # only counted and held; a login not taken for it would reach the CRM unwatched.
    path = match_form(normalize_path(raw_target.partition("?")[0]), fold=True).rstrip("/")
    configured = _configured(want, fold=True).rstrip("/")
    if path == configured:
        return True
    folder, _, script = configured.rpartition("/")
    if path == folder and script.lower().startswith(("index.", "default.")):
        return True  # a directory index: Apache's DirectoryIndex, nginx's `index`, IIS's
    # A script's path info: PHP (and any CGI) runs /index.php for /index.php/anything.
    if "." in script and path.startswith(configured + "/"):
        return True
    return _behind_front_controller(path, configured)


def _behind_front_controller(path: str, configured: str) -> bool:
    """`/index.php/login` for a login at `/login` (folded paths): a front controller (Laravel,
    Symfony, Slim, CodeIgniter) routes its script's path info, from the script's folder or
    from the script itself (`/public/index.php/login`, where the project folder is the web
    root, is `/login` to Symfony), and Laravel trims the slashes around it
    (`/index.php//login` is `/login` too)."""
    if "." not in path:
        return False  # most requests
    for script in script_paths(path):
        folder = script.rpartition("/")[0]
        route = re.sub("/+", "/", path[len(script) :]).rstrip("/")
        if route and configured in (route, folder + route):
            return True
    return False


def names_logout(
    login: Login,
    method: str,
    target: str,
    *,
    fold: bool = False,
    body: bool = False,
    headers: MultiMapping[str] | None = None,
) -> bool:
    """A request (its method and judged target: normalised path, raw query) to the CRM's
    logout (login.logout); in any case when `fold` (a CRM on IIS ignores it). One that
    carries a `body` is not a logout told apart by its query: PHP's `$_REQUEST` takes a
    form's `action` over the query's, so `?action=Logout` with `action=Export` exports.
    Nor one whose Cookie `headers` name a name of that query: PHP without a php.ini reads
    cookies over both."""
    if method != login.logout_method or not login.logout_path:
        return False  # most requests: asked on every signed-in one
    logout, _, logout_query = login.logout_path.partition("?")
    if body and logout_query:
        return False
    path, _, query = target.partition("?")
    configured = _configured(logout, fold)
    if "%" not in path and len(path) != len(configured):
        return False  # fold_case keeps the length: not the logout in any case
    if fold or "%" in path:  # `/log%21out` is `/log!out` to the CRM, as to the rules
        path = match_form(path, fold)
    if configured != path or not _query_is(logout_query, query):
        return False
    cookies = headers.getall("Cookie", []) if logout_query and headers is not None else []
    return not (cookies and _cookies_name(logout_query, cookies))


def _cookies_name(query: str, cookie_lines: Sequence[str]) -> bool:
    """A cookie under a name of `query` (`action=Logout`), as any server may read it."""
    names = [unquote_plus(pair.partition("=")[0]) for pair in query.split("&") if pair]
    return any(
        key.casefold() == n.casefold() or may_be_read_as(key, n)
        for key, _ in cookie_pairs(cookie_lines)
        for n in names
    )


def _query_is(wanted: str, raw_query: str) -> bool:
    """Every `name=value` of `wanted` (the query written in logout.path) is in a request's raw
    query once, as written, and nothing any server may read as that name besides: another
    case (ASP.NET), `action[]` or `act.ion` (PHP), a `;` beside it, a second value (PHP reads
    the last, others the first). Strict where query_matches is generous: the logout lets a
    request past a verification that is due, so only what every server reads as the logout
    is taken for it."""
    if not wanted:
        return True
    keys = [unquote_plus(p.partition("=")[0]) for p in raw_query.replace(";", "&").split("&")]
    for pair in wanted.split("&"):
        name, _, value = pair.partition("=")
        name, value = unquote_plus(name), unquote_plus(value)
        try:
            if query_values(raw_query, name) != [value]:
                return False
        except AmbiguousField:
            return False
        if any(key != name and key.casefold() == name.casefold() for key in keys):
            return False
    return True


@lru_cache(maxsize=16)
def _configured(configured: str, fold: bool) -> str:
    """A path from gateway.yaml (login.path, logout.path) in the form a request's is compared
    in: normalised (`%c3%bc` as `%C3%BC`, `%7e` as `~`), then its match_form (escapes
    decoded; folded when `fold`). Worked out once per path, not on every request. As written
    when it reads two ways (the config accepts `/login%C3`, which no request then matches):
    match_form only decodes what normalize_path has checked."""
    try:
        path = normalize_path(configured)
    except BadRequest:
        return fold_case(configured) if fold else configured
    return match_form(path, fold)


def query_matches(wanted: str, raw_query: str) -> bool:
    """Every `name=value` of `wanted` (the query written in login.path or logout.path, e.g.
    `action=Login`) is in a request's raw query. Read generously, so that whatever a CRM may
    take for its login is taken for it by the gateway too (judged and counted, never let
    past as another form): names as any server reads them (`action[]`, PHP's `act.ion`, any
    case), values percent-decoded and case-folded, `;` splitting like `&`, any position."""
    return not wanted or pairs_match(wanted, query_pairs(raw_query))


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """(name, case-folded value) of each piece of a raw query, `;` splitting like `&`."""
    given = []
    for piece in raw_query.replace(";", "&").split("&"):
        name, _, value = piece.partition("=")
        given.append((unquote_plus(name), unquote_plus(value).casefold()))
    return given


def pairs_match(wanted: str, given: list[tuple[str, str]]) -> bool:
    """Every `name=value` of `wanted` is among the `given` (name, case-folded value) pairs,
    under any name a server reads as it."""
    for pair in wanted.split("&"):
        name, _, value = pair.partition("=")
        name, value = unquote_plus(name), unquote_plus(value).casefold()
        if not any(
            seen == value and (key.casefold() == name.casefold() or may_be_read_as(key, name))
            for key, seen in given
        ):
            return False
    return True
