"""A name typed at the CRM's login that the CRM's database may take for another user's.

canonical_user (gateway.model) unifies case, compatibility forms and accents, as MySQL's and
MariaDB's case- and accent-blind collations do. Some letters no decomposition takes apart are
read more loosely still: `utf8mb4_general_ci` (MariaDB's default) reads `ß` as `s` and `ı`
as `I`; the Unicode collations (`utf8mb4_unicode_ci`, `utf8mb4_0900_ai_ci`, SQL Server's
`_CI_AI`) read `ß` as `ss`, `æ` as `ae`, `ø` as `o`, `đ` as `d`, `ł` as `l`. Someone with
jessie's password who types `jeßsie` is then logged in as jessie by the CRM, while the
gateway would ask for the factors of `jesssie`, who has none, and let them enrol one.

So a login whose user the gateway knows nothing of (no factor, code or device on file, not
named in the policy) is refused when one of its readings is the reading of a user it does
know: the CRM may log that user in. A user it knows signs in as before, and so does anyone
whose name no known user's reads as. Merging readings is the safe direction: at worst a new
user whose name a known user's reads as (`bjorn` beside `bjørn`, on a CRM that tells them
apart) is refused until an administrator enrols them under their own name.
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.model import canonical_user
from gateway.stores import DurableStore

# Letters canonical_user keeps that a collation reads as others (after its case fold: `ß` is
# `ss` then, and its `s` reading is taken from the name as typed).
_LOOSE = str.maketrans(
    {
        "ı": "i",
        "ø": "o",
        "æ": "ae",
        "œ": "oe",
        "đ": "d",
        "ð": "d",
        "ł": "l",
        "ŀ": "l",
        "ħ": "h",
        "ŧ": "t",
        "þ": "th",
        "ŋ": "n",
        "ĸ": "k",
    }
)


def loose(user: str) -> str:
    """A canonical user name as the loosest collation reads it."""
    return user.translate(_LOOSE)


def readings(typed: str) -> frozenset[str]:
    """Each loose reading of a name as typed: `ß` as `ss` and as `s`."""
    found = {loose(canonical_user(typed))}
    if "ß" in typed or "ẞ" in typed:
        found.add(loose(canonical_user(typed.replace("ß", "s").replace("ẞ", "S"))))
    return frozenset(found)


async def confusable_with(
    user: str, typed: str, durable: DurableStore, listed: Collection[str]
) -> str:
    """The known user the CRM may log in for `typed` (canonical `user`), "" when none: only
    asked of a user the gateway knows nothing of (`listed`: the policy's users, canonical)."""
    if user in listed:
        return ""
    known = await durable.known_users()
    if user in known:
        return ""
    wanted = readings(typed)
    for other in (*listed, *known):
        if other != user and loose(other) in wanted:
            return other
    return ""
