"""What a console page reads from its query string or form, before it reads anything else:
only the page's own field names, each at most once (two users in one request would be a bulk
action), short values with no control characters, and a query string of bounded length.
Anything else is refused with BadRequest and a reason code the dispatcher turns into a page
and an audit event (gateway.web.helpdesk.routes)."""

from __future__ import annotations

from collections.abc import Iterable

from gateway.errors import BadRequest

MAX_VALUE = 256  # characters of one field: a user name, an address, a path to explain
USER_FIELDS = ("u", "user")  # several of these in one request: a bulk action


def fields(
    pairs: Iterable[tuple[str, str]], allowed: frozenset[str], *, max_value: int = MAX_VALUE
) -> dict[str, str]:
    """The fields as a dict, when every one is allowed and given once; else BadRequest
    (reason `bulk` for a user named twice, `tampered` for anything else)."""
    found: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            raise BadRequest(f"a field the page does not have: {key[:40]!r}", reason="tampered")
        if key in found:
            reason = "bulk" if key in USER_FIELDS else "tampered"
            raise BadRequest(f"field {key!r} given twice", reason=reason)
        if len(value) > max_value:
            raise BadRequest(f"field {key!r}: {len(value)} characters", reason="tampered")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise BadRequest(f"field {key!r}: a control character", reason="tampered")
        found[key] = value
    return found


def query_fields(
    raw_query: str, pairs: Iterable[tuple[str, str]], allowed: frozenset[str], limit: int
) -> dict[str, str]:
    """A page's query string: refused whole (reason `query_too_long`) past `limit` bytes."""
    if len(raw_query) > limit:
        raise BadRequest(f"a query string of {len(raw_query)} bytes", reason="query_too_long")
    return fields(pairs, allowed)


def page_number(text: str) -> int:
    """A page of results, 1 to 10000; BadRequest (tampered) for anything else."""
    if not text:
        return 1
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 10_000:
        raise BadRequest(f"page {text[:20]!r}", reason="tampered")
    return int(text)
