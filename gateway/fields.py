"""How servers read the names of form fields, query parameters and headers: the names
another reader may take for a given one. Shared by the login form (whose user is
challenged), API credentials (whose token is judged) and method overrides (whose method
is judged), so each refuses what reads two ways."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

from gateway.errors import AmbiguousField
from gateway.headers import METHOD_OVERRIDE_PARAM, METHOD_OVERRIDES

_RACK_NAME = re.compile(r"\A[\[\]]*([^\[\]]+)\]*")


def _php(name: str) -> tuple[str, str]:
    """(the whole name, the array's name) as PHP 8 reads a form or query name
    (main/php_variables.c): leading spaces dropped, cut at a NUL (the name is a C string),
    `.` and ` ` in the name read as `_`, an unclosed `[` read as `_` too; `name[...]` makes
    an array of `name` ("" when it is none)."""
    name = name.lstrip(" ").split("\x00", 1)[0]
    head, bracket, rest = name.partition("[")
    head = head.replace(" ", "_").replace(".", "_")
    if bracket and "]" in rest:
        return f"{head}[{rest}", head
    if bracket:
        return head + "_" + rest.replace(" ", "_").replace(".", "_").replace("[", "_"), ""
    return head, ""


def _rack(name: str) -> tuple[str, str]:
    """(the whole name, the array's name) as Rack 2 reads it (Rails 5 and 6): its first run
    of characters that are not brackets, whatever brackets stand before it (`[username]` is
    `username`); brackets after it make a nested or array parameter of that name."""
    match = _RACK_NAME.match(name)
    if match is None:
        return name, ""
    base = match.group(1)
    if match.end() == len(name):
        return base, ""
    return base + name[match.end() :], base


def readings(name: str) -> tuple[frozenset[str], frozenset[str]]:
    """Every name some server reads `name` as (as written, by PHP, by Rack), and the names
    of which it makes an array or a nested parameter."""
    php, php_array = _php(name)
    rack, rack_array = _rack(name)
    whole = frozenset({name, name.strip(), php, rack}) - {""}
    arrays = frozenset({php_array, rack_array}) - {""}
    return whole, arrays


def may_be_read_as(name: str, field: str) -> bool:
    """`username[]`, ` username`, `user.name`, `username%00x`, `[username]`: some server takes
    this name for `field` (or makes `field` an array of it) although it is not spelled so.
    A name with a NUL in it is never trusted: C-based readers cut it there."""
    if name == field:
        return False
    if "\x00" in name:
        return True
    whole, arrays = readings(name)
    field_whole, _ = readings(field)
    nested = any(w.startswith(f + "[") for w in whole for f in field_whole)
    return bool(whole & field_whole) or field in arrays or nested


def query_values(raw_query: str, name: str) -> list[str]:
    """Every value of `name` in a raw query string, or AmbiguousField when a name some server
    reads as `name` (`name[]`, `na.me` or `na%6De` in PHP) or a `;` beside it (Rack and old
    frameworks split on it) makes the query read two ways."""
    found: list[str] = []
    for piece in raw_query.split("&"):
        parts = piece.split(";")
        for part in parts:
            key_raw, _, value = part.partition("=")
            key = unquote_plus(key_raw)
            if key != name and not may_be_read_as(key, name):
                continue
            if key != name:
                raise AmbiguousField(f"a query key {key[:32]!r} that may be read as {name!r}")
            if len(parts) > 1:
                raise AmbiguousField(f"a ';' beside {name!r} in the query")
            found.append(unquote_plus(value))
    return found


def method_override(header_names: Iterable[str], method: str, raw_query: str) -> str:
    """The way this request asks the CRM to run another method than it has ("" for none):
    an override header in any spelling, or `_method` in the query of a POST (which Rails,
    Laravel and Symfony honour)."""
    for name in header_names:
        if "ethod" in name.lower() and name.lower().replace("_", "-") in METHOD_OVERRIDES:
            return name
    lowered = raw_query.lower()
    if method == "POST" and ("method" in lowered or "%" in lowered):
        try:
            if query_values(raw_query, METHOD_OVERRIDE_PARAM):
                return METHOD_OVERRIDE_PARAM
        except AmbiguousField:
            return METHOD_OVERRIDE_PARAM
    return ""


# A `name` parameter anywhere in a multipart body, quoted with `"` or `'`, or bare.
_PART_NAME = re.compile(rb"""(?i)\bname\s*=\s*(?:"([^"\r\n]*)"|'([^'\r\n]*)'|([^\s;"']*))""")


_FORM = "application/x-www-form-urlencoded"


def media_type(content_type: str) -> str:
    """A Content-Type's media type as PHP (main/SAPI.c) and Rack read it: lowercased, cut at
    the first `;`, `,` or space (`application/x-www-form-urlencoded, text/plain` is a form)."""
    return re.split("[;, ]", content_type.strip(), maxsplit=1)[0].lower()


def body_fields(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """(name, value) of each field a form or JSON body carries, as a CRM's framework would
    find them: urlencoded pairs (url-decoded, `;` splitting too), multipart parts' names
    (read generously, no values: _multipart), a JSON object's top-level keys (a value that
    is not a string as JSON writes it). Other bodies carry none a framework reads as one."""
    kind = media_type(content_type)
    if kind == "application/x-www-form-urlencoded":
        text = body.decode("utf-8", "replace")
        return [
            (unquote_plus(name), unquote_plus(value))
            for name, _, value in (pair.partition("=") for pair in re.split("[&;]", text) if pair)
        ]
    if kind.startswith("multipart/"):
        return _multipart(body)
    if kind == "application/json" or kind.endswith("+json"):
        try:
            found = json.loads(body.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            return []
        if not isinstance(found, dict):
            return []
        return [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in found.items()]
    return []


def _multipart(body: bytes) -> list[tuple[str, str]]:
    """Every `name=` parameter in the body (quoted with `"` or `'`, or bare; in a folded
    header line too), as written and url-decoded, with no value: read without the boundary,
    since servers find it each their own way, a name a server may read is never missed.
    (Only names are asked of a multipart body here; the login in one is FormScan's.)"""
    found: list[tuple[str, str]] = []
    for match in _PART_NAME.finditer(body):
        name = (match.group(1) or match.group(2) or match.group(3) or b"").decode(
            "utf-8", "replace"
        )
        found.append((name, ""))
        if unquote_plus(name) != name:
            found.append((unquote_plus(name), ""))
    return found


def overrides_method(body: bytes, content_type: str) -> bool:
    """The body asks the CRM to run another method (`_method`, in any spelling a framework
    reads so: Rails reads it from the form body only, Laravel and Symfony body first), read
    as each framework may read it (field_readings)."""
    return any(
        name == METHOD_OVERRIDE_PARAM or may_be_read_as(name, METHOD_OVERRIDE_PARAM)
        for reading in field_readings(content_type)
        for name, _ in body_fields(body, reading)
    )


def field_readings(content_type: str) -> list[str]:
    """The types a framework may read a body of this Content-Type as, for its fields: as
    typed; a form when it has no media type (Rack reads an untyped POST as a form); JSON
    when `/json` or `+json` stands anywhere in it (Laravel's isJson)."""
    readings = [content_type if media_type(content_type) else _FORM]
    lowered = content_type.lower()
    if "/json" in lowered or "+json" in lowered:
        readings.append("application/json")
    return readings


def carries_fields(content_type: str) -> bool:
    """Whether a framework may read fields (`_method`) from a body of this Content-Type,
    for a caller that cannot read the body (the forward-auth endpoint): a form, multipart,
    JSON, in any of field_readings."""
    return any(
        kind in (_FORM, "application/json") or kind.startswith("multipart/")
        for kind in map(media_type, field_readings(content_type))
    )
