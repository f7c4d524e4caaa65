"""gateway.signin.confusable: a name typed at the CRM's login that the CRM's database may take
for a known user's is told apart from one it may not; a known user, or a user named in the
policy, is never refused for it. A real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config.model import StoreConfig
from gateway.model import canonical_user
from gateway.signin.confusable import confusable_with, readings
from gateway.stores import DurableStore, open_durable


@pytest.fixture
async def durable(tmp_path: Path) -> AsyncIterator[DurableStore]:
    store = await open_durable(StoreConfig("sqlite", str(tmp_path / "gateway.db")), create=True)
    for user in ("jessie", "bjørn", "strasse"):
        await store.replace_recovery_codes(user, [b"x" * 32], 0.0)
    yield store
    await store.close()


@pytest.mark.parametrize(
    ("typed", "other"),
    [
        ("jeßsie", "jessie"),  # utf8mb4_general_ci: ß is s
        ("JEẞSIE", "jessie"),
        ("jessıe", "jessie"),  # ı is I
        ("bjorn", "bjørn"),  # the Unicode collations: ø is o
        ("Bjorn", "bjørn"),
        ("straße", "strasse"),  # ß is ss
        ("olga", "olga"),  # the policy's user, known to it alone
    ],
)
async def test_a_name_the_crm_may_read_as_a_known_users_is_confusable(
    durable: DurableStore, typed: str, other: str
) -> None:
    listed = {"olga"} if other == "olga" else set()
    user = canonical_user(typed)
    if user == other:  # the policy's user herself: nothing to confuse
        assert await confusable_with(user, typed, durable, listed) == ""
        assert await confusable_with("olgа", "olgа", durable, listed) == ""  # Cyrillic а
        return
    assert await confusable_with(user, typed, durable, listed) == other


@pytest.mark.parametrize("typed", ["jessie", "Jessie", "JESSIE", "bjørn", "strasse", "olga"])
async def test_a_known_or_listed_user_is_never_confusable(
    durable: DurableStore, typed: str
) -> None:
    assert await confusable_with(canonical_user(typed), typed, durable, {"olga"}) == ""


@pytest.mark.parametrize("typed", ["jess", "jessica", "bjorne", "strase", "anna"])
async def test_a_new_user_no_known_name_reads_as_signs_in(
    durable: DurableStore, typed: str
) -> None:
    assert await confusable_with(canonical_user(typed), typed, durable, {"olga"}) == ""


def test_a_sharp_s_is_read_both_ways() -> None:
    assert readings("Straße") == {"strasse", "strase"}
    assert readings("ødegård") == {"odegard"}
    assert readings("alice") == {"alice"}
