"""Reading single policy values: an interval ("always", "daily", "7d"), a list of factors, an
enforcement date, a phone number in E.164; and filling a level's unset settings from the one
below it. gateway.policy.load uses these for every section.
"""

from __future__ import annotations

import datetime
import math
import re

from gateway.config.yaml_reader import Value
from gateway.model import FACTOR_NAMES
from gateway.policy.model import Level

_PHONE = re.compile(r"^\+?[0-9 ()\-.]{6,24}$")


EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def e164(text: str) -> str:
    """A phone number in E.164 (`+31612345678`), or `!` and the problem."""
    if not _PHONE.match(text) or not text.strip().startswith("+"):
        example = "+31 6 1234 5678"
        return f"!must be a phone number with its country code such as {example} but it's {text!r}"
    import phonenumbers  # here: about 1 MB of memory that a gateway without SMS never needs

    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return f"!must be a phone number such as +31 6 1234 5678 but it's {text!r}"
    if not phonenumbers.is_possible_number(number):
        return f"!is not a possible phone number: {text!r}"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def fill_defaults(said: Level, base: Level) -> Level:
    return Level(
        said.kind,
        said.name,
        said.where,
        interval=said.interval if said.interval is not None else base.interval,
        factors=said.factors if said.factors is not None else base.factors,
        enforcement=said.enforcement if said.enforcement is not None else base.enforcement,
        required_from=said.required_from if said.enforcement is not None else base.required_from,
        remember_device=said.remember_device
        if said.remember_device is not None
        else base.remember_device,
        reverify=said.reverify if said.reverify is not None else base.reverify,
        phishing_resistant=said.phishing_resistant
        if said.phishing_resistant is not None
        else base.phishing_resistant,
        setting_lines=said.setting_lines,
    )


def interval_value(value: Value, word: str = "always") -> float | None:
    if value.node.tag.endswith(":str") and value.node.value == word:
        return 0.0
    if value.node.tag.endswith(":bool") and word == "off":
        # YAML 1.1 reads off/Off/OFF/no/false as a boolean.
        if str(value.node.value).lower() in ("off", "false", "no"):
            return 0.0
        value.fail(f"must be off or a duration such as 30d but it's {value.node.value!r}")
        return None
    return value.duration()


def reverify_value(value: Value) -> float | None:
    """`reverify`: `never` (math.inf) or a duration of at least a minute."""
    if value.node.tag.endswith(":str") and value.node.value == "never":
        return math.inf
    seconds = value.duration()
    if seconds is not None and seconds < 60:
        value.fail(f"must be never or a duration of at least 1m but it's {value.node.value!r}")
        return None
    return seconds


def factors_value(value: Value) -> tuple[str, ...] | None:
    items = value.sequence()
    if items is None:
        return None
    found = [item.choice(FACTOR_NAMES) for item in items]
    if not items:
        value.fail(f"must list at least one factor ({', '.join(FACTOR_NAMES)})")
        return None
    return tuple(f for f in found if f is not None)


def enforcement_value(value: Value) -> tuple[str | None, str]:
    if not value.node.tag.endswith(":map"):
        return value.choice(("required", "optional")), ""
    keys = value.mapping({"required_from"})
    if keys is None or "required_from" not in keys:
        value.fail("must be required, optional or {required_from: YYYY-MM-DD}")
        return None, ""
    raw = str(keys["required_from"].node.value)
    try:
        day = datetime.date.fromisoformat(raw)
    except ValueError:
        keys["required_from"].fail(f"must be a date such as 2026-12-01 but it's {raw!r}")
        return None, ""
    return "required_from", day.isoformat()
