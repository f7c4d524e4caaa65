"""The SMS bill: quarters, the lines and their total, CSV a spreadsheet cannot be fooled by."""

from __future__ import annotations

from decimal import Decimal

from gateway.admin.ledger import bill, bill_csv, quarter_bounds, quarter_of, quarters_before
from gateway.stores import LedgerRow


def row(user: str, cost: str = "0.10", status: str = "sent", groups: str = "") -> LedgerRow:
    return LedgerRow(0.0, user, groups, "sms", "quixx", status, 1, cost, "EUR")


def test_quarters() -> None:
    start, end = quarter_bounds("2026q4") or (0, 0)
    assert quarter_of(start) == "2026Q4" and quarter_of(end) == "2027Q1"
    assert quarter_of(end - 0.001) == "2026Q4"
    assert quarters_before("2027Q1", 4) == ["2026Q2", "2026Q3", "2026Q4", "2027Q1"]
    assert quarter_bounds("2026Q5") is None and quarter_bounds("1969Q1") is None


def test_the_lines_add_up_to_the_total_in_decimals() -> None:
    lines = bill([row("a")] * 3 + [row("b", "0", "failed")], "user")
    assert lines == [
        ("a", 3, 0, Decimal("0.30"), "EUR"),
        ("b", 0, 1, Decimal(0), "EUR"),
        ("TOTAL", 3, 1, Decimal("0.30"), "EUR"),
    ]
    assert bill_csv(lines, "user").splitlines()[-1] == "TOTAL,3,1,0.30,EUR"


def test_a_name_that_reads_as_a_formula_is_written_as_text() -> None:
    text = bill_csv(bill([row("=HYPERLINK(1)"), row("+1"), row("-2"), row("@x")], "user"), "user")
    assert "'=HYPERLINK(1),1,0,0.10,EUR" in text
    assert not any(line[:1] in "=+-@" for line in text.splitlines())
