"""What a console page reads: its own fields once each, short, without control characters."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.web.helpdesk.inputs import fields, page_number, query_fields

ALLOWED = frozenset({"u", "ip"})


def reason(call: object) -> str:
    with pytest.raises(BadRequest) as raised:
        call()  # type: ignore[operator]
    return raised.value.reason


def test_known_fields_once_each_are_read() -> None:
    assert fields([("u", "carol"), ("ip", "")], ALLOWED) == {"u": "carol", "ip": ""}


def test_anything_else_is_refused_with_its_reason() -> None:
    assert reason(lambda: fields([("u", "a"), ("u", "b")], ALLOWED)) == "bulk"
    assert reason(lambda: fields([("ip", "a"), ("ip", "b")], ALLOWED)) == "tampered"
    assert reason(lambda: fields([("x", "1")], ALLOWED)) == "tampered"
    assert reason(lambda: fields([("u", "a" * 257)], ALLOWED)) == "tampered"
    assert reason(lambda: fields([("u", "ca\x00rol")], ALLOWED)) == "tampered"
    assert reason(lambda: query_fields("q=" + "a" * 3000, [], ALLOWED, 2048)) == "query_too_long"


def test_page_numbers() -> None:
    assert page_number("") == 1
    assert page_number("7") == 7
    for bad in ("0", "-1", "1e3", "10001", "٣"):
        assert reason(lambda bad=bad: page_number(bad)) == "tampered"
