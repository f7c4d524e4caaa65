"""The verification interval a user chooses for themselves (the account page, issue 16 item 5):
which named intervals are open to them under their policy, and the settings that hold with
their choice. Plain functions over values: no I/O; the choice is read at sign-in and travels
on the session.

The policy's `interval` is the cap, the least strict a user may have; a user may only be
stricter. A choice at or above the cap (the policy tightened since, or a forged form) changes
nothing: the policy holds.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.model import Settings, format_interval

HOUR = 3600.0
DAY = 86400.0
# The intervals a user may pick, strictest first: at every sign-in ("Immer" in the seeds),
# hourly, a working day, daily ("Täglich"), weekly ("Wöchentlich").
NAMED = (0.0, HOUR, 8 * HOUR, DAY, 7 * DAY)


def open_to(cap: float) -> tuple[float, ...]:
    """The named intervals stricter than the policy's `cap` (its interval): what the user may
    choose besides the policy's own. Empty when the cap is `always` (0): nothing to choose."""
    return tuple(seconds for seconds in NAMED if seconds < cap)


def parse_choice(value: str) -> float | None:
    """A named interval as the account page's form sends it (`always`, `1h`, `8h`, `1d`, `7d`);
    None for anything else."""
    return next((seconds for seconds in NAMED if format_interval(seconds) == value), None)


def applies(cap: float, chosen: float | None) -> bool:
    """The choice counts: one was made, and it is stricter than the policy's interval."""
    return chosen is not None and 0.0 <= chosen < cap


def with_choice(settings: Settings, chosen: float | None) -> Settings:
    """The settings with the user's choice: the chosen interval where it is stricter than the
    policy's, and a chosen duration also caps `reverify` (a user who asks to be verified
    hourly is asked hourly inside a session too, as `max_interval` caps both). `always` (0)
    leaves `reverify` as the policy says: a code at every request would be no verification
    interval at all. The same object when the choice does not count."""
    if not applies(settings.interval, chosen):
        return settings
    assert chosen is not None
    reverify = min(settings.reverify, chosen) if chosen > 0 else settings.reverify
    return replace(settings, interval=chosen, reverify=reverify)


def loosens(settings: Settings, before: float | None, after: float | None) -> bool:
    """Going from the choice `before` to `after` (None: the policy's) asks less of the user in
    some way: a longer interval at sign-in, or a longer `reverify` inside a session. From
    hourly to `always` is one: stricter at sign-in, but `always` leaves `reverify` to the
    policy, so an open session would no longer be asked every hour."""
    was, will = with_choice(settings, before), with_choice(settings, after)
    return will.interval > was.interval or will.reverify > was.reverify
