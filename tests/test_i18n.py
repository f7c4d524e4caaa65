"""Language choice from Accept-Language, and complete catalogs."""

from __future__ import annotations

from string import Formatter

import pytest

from gateway.i18n import (
    CATALOG,
    DEFAULT,
    LANGUAGES,
    negotiate,
    plural_category,
    time_until,
    translate,
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("de", "de"),
        ("DE", "de"),
        ("de-DE,de;q=0.9,en;q=0.8", "de"),
        ("fr-CA", "fr"),
        ("ru-RU;q=1.0", "ru"),
        ("nl-BE, nl;q=0.9", "nl"),
    ],
)
def test_negotiate_picks_the_language_asked_for(header: str, expected: str) -> None:
    assert negotiate(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("fr;q=0.5, de;q=0.9", "de"),
        ("en;q=0.1, ru;q=0.2", "ru"),
        ("en-GB;q=0.3, nl;q=0.31", "nl"),
        ("de; q=0.4, fr ; q=0.6", "fr"),
        ("zh-CN, ja;q=0.9, de;q=0.1", "de"),
    ],
)
def test_negotiate_prefers_the_highest_q_value(header: str, expected: str) -> None:
    assert negotiate(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("nl, de", "nl"),
        ("de, nl", "de"),
        ("fr;q=0.8, de;q=0.8", "fr"),
        ("ru, en", "ru"),
    ],
)
def test_negotiate_breaks_ties_by_order(header: str, expected: str) -> None:
    assert negotiate(header) == expected


@pytest.mark.parametrize("header", ["no", "nn", "nb", "nb-NO", "nn-NO", "no-NO;q=0.8, xx"])
def test_norwegian_variants_read_bokmal(header: str) -> None:
    assert negotiate(header) == "nb"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "zh-CN",
        "ja, ko;q=0.9",
        "*",
        "de;q=0",
        "de;q=0, fr;q=0.0",
        "de;q=-1",
        "de;q=abc",
        ";;;,,,",
        "q=1",
        "\x00\xff",
        "en-US",
    ],
)
def test_unknown_refused_or_garbage_languages_give_english(header: str) -> None:
    assert negotiate(header) == "en"


def test_unreadable_q_value_skips_only_that_entry() -> None:
    assert negotiate("de;q=abc, fr;q=0.2") == "fr"


def test_refused_language_is_not_chosen_even_when_first() -> None:
    assert negotiate("de;q=0, ru;q=0.1") == "ru"


def test_english_is_the_default() -> None:
    assert DEFAULT == "en"
    assert negotiate("xx") == DEFAULT


def test_every_listed_language_has_a_catalog() -> None:
    assert sorted(LANGUAGES) == sorted(CATALOG)
    assert set(LANGUAGES) == {"en", "nl", "nb", "de", "fr", "ru"}


@pytest.mark.parametrize("language", [lang for lang in CATALOG if lang != "en"])
def test_catalog_has_exactly_the_english_keys(language: str) -> None:
    english = set(CATALOG["en"])
    keys = set(CATALOG[language])

    # CLDR plural forms English has no use for (Russian counts: one, few, many).
    extra_plurals = {k for k in keys - english if k.rsplit(".", 1)[-1] in ("few", "many")}
    assert english - keys == set(), f"{language} is missing translations"
    assert keys - english - extra_plurals == set(), f"{language} has keys English does not"


@pytest.mark.parametrize("language", list(CATALOG))
def test_translations_keep_every_placeholder(language: str) -> None:
    def names(text: str) -> set[str]:
        return {name for _, name, _, _ in Formatter().parse(text) if name}

    for key, text in CATALOG[language].items():
        english = CATALOG["en"].get(key) or CATALOG["en"][key.rsplit(".", 1)[0] + ".other"]
        assert names(text) == names(english), f"{language}:{key}"
        text.format(**dict.fromkeys(names(text), "1"))


@pytest.mark.parametrize("language", list(CATALOG))
def test_no_message_is_empty_or_left_as_its_key(language: str) -> None:
    for key, text in CATALOG[language].items():
        assert text.strip(), f"{language}:{key} is empty"
        assert text != key


@pytest.mark.parametrize("language", [lang for lang in CATALOG if lang != "en"])
def test_translations_are_not_english_copies(language: str) -> None:
    # Words that are the same in both languages: French "minutes".
    alike = {"duration.minutes.one", "duration.minutes.other"}
    same = [
        key
        for key, text in CATALOG[language].items()
        if text == CATALOG["en"].get(key) and key not in alike
    ]

    assert same == []


def test_translate_falls_back_to_english_then_to_the_key() -> None:
    assert translate("de", "error.back") == "Zur Startseite"
    assert translate("xx", "error.back") == CATALOG["en"]["error.back"]
    assert translate("de", "no.such.key") == "no.such.key"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.2, "in 1 second"),
        (1, "in 1 second"),
        (30, "in 30 seconds"),
        (59.2, "in 1 minute"),  # rounded up: never told to come back too early
        (60, "in 1 minute"),
        (61, "in 2 minutes"),
        (119.5, "in 2 minutes"),
        (3600, "in 60 minutes"),
        (5400, "in 90 minutes"),
        (5401, "in 2 hours"),
        (86400, "in 24 hours"),
    ],
)
def test_time_until_rounds_up_in_the_unit_people_would_use(seconds: float, expected: str) -> None:
    assert time_until("en", seconds) == expected


@pytest.mark.parametrize(
    ("language", "seconds", "expected"),
    [
        ("ru", 60, "через 1 минуту"),
        ("ru", 120, "через 2 минуты"),
        ("ru", 300, "через 5 минут"),
        ("ru", 11 * 60, "через 11 минут"),
        ("ru", 21 * 60, "через 21 минуту"),
        ("ru", 22 * 60, "через 22 минуты"),
        ("ru", 1, "через 1 секунду"),
        ("ru", 3, "через 3 секунды"),
        ("ru", 45, "через 45 секунд"),
        ("ru", 3 * 3600, "через 3 часа"),
        ("de", 60, "in 1 Minute"),
        ("de", 120, "in 2 Minuten"),
        ("nl", 60, "over 1 minuut"),
        ("nl", 2 * 3600, "over 2 uur"),
        ("nb", 1, "om 1 sekund"),
        ("fr", 60, "dans 1 minute"),
        ("fr", 30, "dans 30 secondes"),
    ],
)
def test_time_until_uses_each_languages_plural_forms(
    language: str, seconds: float, expected: str
) -> None:
    assert time_until(language, seconds) == expected


@pytest.mark.parametrize("language", list(CATALOG))
def test_every_count_has_its_own_plural_form(language: str) -> None:
    # A count that fell back to `.other` would read wrong ("через 1 минут").
    counted: tuple[str, ...] = ("duration.minutes", "duration.hours", "duration.days")
    counted += ("until.seconds", "until.minutes", "until.hours")
    needed = {f"{key}.{plural_category(language, n)}" for key in counted for n in range(125)}
    assert needed - set(CATALOG[language]) == set()
