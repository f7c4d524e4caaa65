"""The charts' shapes: every bucket a column, heights in proportion, inside the view box,
few enough labels for a phone; bars as long as their amounts."""

from __future__ import annotations

from decimal import Decimal

from gateway.web.helpdesk.charts import BOTTOM, TOP, WIDTH, bars, bucket_label, buckets, columns

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC


def test_buckets_are_utc_hours_or_days_covering_the_range() -> None:
    assert buckets(T0 + 10, T0 + 3 * 3600, 3600) == [T0, T0 + 3600, T0 + 7200]
    days = buckets(T0, T0 + 2 * 86400, 86400)
    assert [bucket_label(d, 86400) for d in days] == ["2027-01-15", "2027-01-16", "2027-01-17"]
    assert bucket_label(T0, 3600) == "2027-01-15 08:00"
    assert bucket_label(T0, 3600, short=True) == "08:00"


def test_columns_are_in_proportion_inside_the_view_box() -> None:
    counts = [(T0 + n * 3600, c) for n, c in enumerate([0, 3, 7, 1] * 12)]
    chart = columns("c", "Sign-ins", "…", "s-signin", counts, 3600)
    assert len(chart.shapes) == 48
    assert [s.count for s in chart.shapes] == [c for _, c in counts]
    room = chart.height - TOP - BOTTOM
    tallest = max(chart.shapes, key=lambda s: s.height)
    assert tallest.count == 7 and tallest.height == room * 7 / 10  # the axis tops at 10
    for shape in chart.shapes:
        assert shape.x >= 0 and shape.x + shape.width <= WIDTH
        assert shape.y + shape.height <= chart.height - BOTTOM + 0.01
        assert shape.height == 0 if shape.count == 0 else shape.height > 0
    assert len(chart.labels) <= 6
    assert [text for _, text in chart.ticks] == ["0", "5", "10"]


def test_an_empty_chart_still_draws_its_axis() -> None:
    chart = columns("c", "t", "d", "s", [(T0, 0), (T0 + 3600, 0)], 3600)
    assert [s.height for s in chart.shapes] == [0, 0]
    assert [text for _, text in chart.ticks] == ["0", "1"]


def test_bars_are_as_long_as_their_amounts() -> None:
    chart = bars(
        "b",
        "Cost",
        "…",
        "s-cost",
        [("carol", Decimal("0.70"), "0.70"), ("dave", Decimal("0.35"), "0.35")],
    )
    carol, dave = chart.shapes
    assert carol.width == 2 * dave.width and carol.x + carol.width < WIDTH
    assert (carol.count, dave.count) == ("0.70", "0.35")
    assert bars("b", "Cost", "…", "s", [("x", Decimal(0), "0")]).shapes[0].width == 0
