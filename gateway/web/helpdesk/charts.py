"""Charts as numbers and shapes, for templates/helpdesk/chart.html to draw as inline SVG: no
script, no image request, readable on a phone (a 400-unit-wide view box that scales to the
page). Columns over time (events per UTC hour or day) and bars per row (a cost per user).
Plain functions over values; the template escapes every text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

WIDTH = 400  # view-box units; the page scales the chart to its column
LEFT = 36  # room for the value axis
BOTTOM = 22  # room for the time labels
TOP = 8


@dataclass(frozen=True)
class Shape:
    """One column or bar: where it is, and what it stands for (read by people and tests)."""

    x: float
    y: float
    width: float
    height: float
    label: str  # the bucket or row
    value: str  # as shown: "3", "€0.40"
    count: int | str  # the number itself, for data-count


@dataclass(frozen=True)
class Chart:
    id: str  # unique on the page: the ids of its title and description
    title: str
    description: str  # what a screen reader hears in place of the picture
    series: str  # css class of its colour
    height: float
    shapes: tuple[Shape, ...]
    ticks: tuple[tuple[float, str], ...]  # (y, value) lines of the value axis
    labels: tuple[tuple[float, str], ...]  # (x, text) under the columns, or beside bars
    width: int = WIDTH
    horizontal: bool = False


def buckets(since: float, until: float, size: float) -> list[float]:
    """The starts of every bucket of `size` seconds (UTC-aligned) from `since` to `until`."""
    first = since - since % size
    return [first + n * size for n in range(max(0, math.ceil((until - first) / size)))]


def bucket_label(start: float, size: float, *, short: bool = False) -> str:
    moment = datetime.fromtimestamp(start, UTC)
    if size >= 86400:
        return moment.strftime("%m-%d" if short else "%Y-%m-%d")
    return moment.strftime("%H:%M" if short else "%Y-%m-%d %H:%M")


def _nice_top(top: float) -> float:
    """A round top for the value axis, at least `top` (1, 2, 5, 10, 20, 50 …)."""
    if top <= 0:
        return 1.0
    step = 10 ** math.floor(math.log10(top))
    for factor in (1, 2, 5, 10):
        if factor * step >= top:
            return float(factor * step)
    return float(10 * step)


def columns(
    chart_id: str,
    title: str,
    description: str,
    series: str,
    counts: list[tuple[float, int]],
    size: float,
    *,
    height: float = 170,
) -> Chart:
    """Columns over time: `counts` is (bucket start, events) for every bucket, in order."""
    top = _nice_top(max((c for _, c in counts), default=0))
    room = height - TOP - BOTTOM
    slot = (WIDTH - LEFT) / max(1, len(counts))
    gap = min(2.0, slot * 0.2)
    shapes = []
    for n, (start, count) in enumerate(counts):
        tall = room * count / top
        shapes.append(
            Shape(
                x=round(LEFT + n * slot + gap / 2, 2),
                y=round(TOP + room - tall, 2),
                width=round(max(0.5, slot - gap), 2),
                height=round(tall, 2),
                label=bucket_label(start, size),
                value=str(count),
                count=count,
            )
        )
    every = max(1, math.ceil(len(counts) / 6))  # at most 6 time labels: legible on a phone
    labels = tuple(
        (round(LEFT + n * slot + slot / 2, 2), bucket_label(start, size, short=True))
        for n, (start, _) in enumerate(counts)
        if n % every == 0
    )
    parts = (0.0, 0.5, 1.0) if top % 2 == 0 else (0.0, 1.0)  # whole numbers of events only
    ticks = tuple((round(TOP + room - room * part, 2), _number(top * part)) for part in parts)
    return Chart(chart_id, title, description, series, height, tuple(shapes), ticks, labels)


def bars(
    chart_id: str,
    title: str,
    description: str,
    series: str,
    rows: list[tuple[str, Decimal, str]],
) -> Chart:
    """One bar per row, longest the largest: `rows` is (label, amount, amount as shown)."""
    row_height, name_room = 22.0, 120.0
    top = max((amount for _, amount, _ in rows), default=Decimal(0))
    room = WIDTH - name_room - 60
    shapes = []
    for n, (label, amount, shown) in enumerate(rows):
        wide = room * float(amount / top) if top > 0 else 0.0
        shapes.append(
            Shape(
                x=name_room,
                y=TOP + n * row_height,
                width=round(wide, 2),
                height=row_height - 6,
                label=label,
                value=shown,
                count=str(amount),
            )
        )
    height = TOP * 2 + row_height * max(1, len(rows))
    labels = tuple(
        (TOP + n * row_height + row_height / 2, label) for n, (label, _, _) in enumerate(rows)
    )
    return Chart(
        chart_id, title, description, series, height, tuple(shapes), (), labels, horizontal=True
    )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
