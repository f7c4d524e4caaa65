"""How servers read the names of form fields and query parameters: the names another reader
may take for a given one. Shared by the login form (whose user is challenged) and API
credentials in the query (whose token is judged), so both refuse what reads two ways."""

from __future__ import annotations


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
