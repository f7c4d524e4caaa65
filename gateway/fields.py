"""How servers read the names of form fields, query parameters and headers: the names
another reader may take for a given one. Shared by the login form (whose user is
challenged), API credentials (whose token is judged) and method overrides (whose method
is judged), so each refuses what reads two ways."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote_plus

from gateway.headers import METHOD_OVERRIDE_PARAM, METHOD_OVERRIDES


class AmbiguousField(ValueError):
    """A field some server reads differently from us; the message is for the operator."""


def may_be_read_as(name: str, field: str) -> bool:
    """`username[]`, `username[0]`, ` username`, `user.name`: some reader takes this name
    for `field` although it is not spelled so. PHP makes an array of any `name[...]`, drops
    leading spaces, and reads `.` and ` ` in a name as `_` (so `user.name` is `user_name`)."""
    if name == field:
        return False
    stripped = name.strip()
    php = name.lstrip(" ").split("[", 1)[0].replace(".", "_").replace(" ", "_")
    candidates = (stripped.split("[", 1)[0], php, stripped.rstrip("[]").strip())
    return field in candidates or stripped.startswith(field + "[")


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
