"""One contract, every durable-store backend (tests/contracts/conftest.py lists them): what the
DurableStore Protocol (gateway/stores/protocols.py) promises, held against a real store. The
second connection in some tests is another worker or another host on the same store. One
file for the whole Protocol, though long: it is a new backend's definition of done."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import StoreUnavailable
from gateway.model import AuditEvent
from gateway.stores import (
    DUPLICATE,
    STORE_MISSING,
    AuditQuery,
    Authenticator,
    Device,
    DurableStore,
    IntervalChoice,
    LedgerRow,
)
from tests.contracts.conftest import DurableBackend

T0 = 1_800_000_000.0
EXACT = T0 + 0.123456789  # a time with every bit of its fraction in use


def authenticator(auth_id: str, user: str = "alice", created: float = T0) -> Authenticator:
    return Authenticator(
        id=auth_id,
        user=user,
        kind="totp",
        name=f"Phone {auth_id}",
        sealed=b"k1\x00\xff" + auth_id.encode() * 8,
        key_id="k1",
        created=created,
    )


def device(
    dev_id: str,
    user: str = "alice",
    *,
    label: str = "Firefox on Linux",
    created: float = T0,
    verified: float = T0,
    remembered_until: float = T0 + 30 * 86400,
    revoked: float | None = None,
) -> Device:
    return Device(dev_id, user, label, created, verified, remembered_until, revoked)


def event(name: str = "challenge.passed", time: float = T0, **fields: str) -> AuditEvent:
    return AuditEvent(time, name, fields.pop("outcome", "ok"), **fields)  # type: ignore[arg-type]


def ledger(time: float, user: str = "alice", cost: str = "0.0725") -> LedgerRow:
    return LedgerRow(time, user, "staff,sales", "sms", "generic", "sent", 2, cost, "EUR")


def digest(n: int) -> bytes:
    return bytes([n]) * 32


async def names(store: DurableStore, **criteria: object) -> list[str]:
    """The request ids of the events a query finds, in the order found."""
    found = await store.audit_events(AuditQuery(**criteria))  # type: ignore[arg-type]
    return [e.request_id for _, e in found]


# -- opening, reopening, closing ----------------------------------------------------------


async def test_a_store_opened_without_create_where_there_is_none_is_missing_and_not_made(
    durable_backend: DurableBackend,
) -> None:
    with pytest.raises(StoreUnavailable) as missing:
        await durable_backend.open(create=False)

    assert missing.value.reason == STORE_MISSING
    assert not durable_backend.exists()


async def test_a_new_store_answers_and_holds_nothing(
    durable_backend: DurableBackend, durable: DurableStore
) -> None:
    await durable.ping()

    assert durable_backend.exists()
    assert await durable.tokens() == []
    assert await durable.active_tokens() == (0, [])
    assert await durable.tokens_version() == 0
    assert await durable.revocations() == (0, {})
    assert await durable.revocations_version() == 0
    assert await durable.all_authenticators() == []
    assert await durable.known_users() == []
    assert await durable.pending_requests() == []
    assert await durable.audit_events(AuditQuery()) == []
    assert await durable.messages(0, float("inf")) == []
    assert await durable.networks("alice") == []
    assert await durable.note("seal_ring") == ""
    assert await durable.factor_choice("alice") == ""
    assert await durable.interval_choice("alice") is None


async def test_everything_stored_is_there_after_reopening_without_create(
    durable_backend: DurableBackend, durable: DurableStore
) -> None:
    await durable.add_token("tok_1", "crm-sync", digest(1), "nightly", EXACT)
    await durable.add_authenticator(authenticator("a1", created=EXACT))
    await durable.replace_recovery_codes("alice", [digest(2), digest(3)], T0)
    await durable.use_recovery_code("alice", digest(2), T0 + 1)
    await durable.save_device(device("d1", verified=EXACT))
    await durable.revoke_sessions("bob", EXACT)
    await durable.record_message(ledger(EXACT))
    await durable.set_factor_choice("alice", "sms")
    await durable.set_interval_choice("alice", 3600.0, EXACT)
    request = await durable.request_action("unlock", "carol", T0)
    await durable.add_audit_events([event(time=EXACT, request_id="r1")])
    await durable.note_network("alice", "192.0.2.0/24", EXACT)
    await durable.set_note("seal_ring", '{"ids": ["k1"]}')
    await durable.close()

    again = await durable_backend.open(create=False)

    assert await again.tokens() == [("tok_1", "crm-sync", "nightly", EXACT, None)]
    assert await again.active_tokens() == (1, [("tok_1", "crm-sync", digest(1))])
    assert await again.authenticators("alice") == [authenticator("a1", created=EXACT)]
    assert await again.recovery_codes_left("alice") == 1
    assert not await again.use_recovery_code("alice", digest(2), T0 + 2)
    assert await again.device("d1") == device("d1", verified=EXACT)
    assert await again.revocations() == (1, {"bob": EXACT})
    assert await again.messages(0, float("inf")) == [ledger(EXACT)]
    assert await again.factor_choice("alice") == "sms"
    assert await again.interval_choice("alice") == IntervalChoice(3600.0, EXACT)
    assert await again.pending_requests() == [(request, "unlock", "carol")]
    [(_, stored)] = await again.audit_events(AuditQuery())
    assert stored == event(time=EXACT, request_id="r1")
    assert await again.networks("alice") == [("192.0.2.0/24", EXACT, EXACT)]
    assert await again.note("seal_ring") == '{"ids": ["k1"]}'


async def test_closing_twice_is_harmless_and_a_closed_store_is_unavailable(
    durable_backend: DurableBackend,
) -> None:
    store = await durable_backend.open()

    await store.close()
    await store.close()

    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.tokens()
    with pytest.raises(StoreUnavailable):
        await store.add_audit_events([event()])


async def test_a_change_is_seen_at_once_through_another_connection(
    durable_backend: DurableBackend, durable: DurableStore
) -> None:
    other = await durable_backend.open()

    await durable.add_token("tok_1", "crm-sync", digest(1), "", T0)
    await other.revoke_sessions("alice", T0)
    await other.add_authenticator(authenticator("a1"))

    assert await other.active_tokens() == (1, [("tok_1", "crm-sync", digest(1))])
    assert await durable.revocations() == (1, {"alice": T0})
    assert [a.id for a in await durable.authenticators("alice")] == ["a1"]


async def test_users_are_told_apart_exactly_as_given(durable: DurableStore) -> None:
    await durable.add_authenticator(authenticator("a1", user="alice"))
    await durable.replace_recovery_codes("Alice", [digest(1)], T0)

    assert await durable.authenticators("Alice") == []
    assert await durable.recovery_codes_left("alice") == 0
    assert not await durable.use_recovery_code("alice", digest(1), T0)
    assert await durable.known_users() == ["Alice", "alice"]


# -- API tokens -------------------------------------------------------------------------------


async def test_tokens_are_listed_oldest_first_with_owner_label_and_state(
    durable: DurableStore,
) -> None:
    await durable.add_token("tok_b", "crm-sync", digest(2), "nightly", T0 + 10)
    await durable.add_token("tok_a", "reports", digest(1), "", T0 + 20)
    await durable.add_token("tok_0", "reports", digest(3), "same time", T0 + 20)
    await durable.revoke_token("tok_b", T0 + 30)

    assert await durable.tokens() == [
        ("tok_b", "crm-sync", "nightly", T0 + 10, T0 + 30),
        ("tok_0", "reports", "same time", T0 + 20, None),
        ("tok_a", "reports", "", T0 + 20, None),
    ]
    _, active = await durable.active_tokens()
    assert sorted(active) == [("tok_0", "reports", digest(3)), ("tok_a", "reports", digest(1))]


@pytest.mark.parametrize("again", ["same id", "same digest", "digest of a revoked token"])
async def test_a_token_registered_before_is_refused_and_nothing_changes(
    durable: DurableStore, again: str
) -> None:
    await durable.add_token("tok_1", "crm-sync", digest(1), "", T0)
    if again == "digest of a revoked token":
        await durable.revoke_token("tok_1", T0 + 1)
    before = (await durable.tokens(), await durable.active_tokens())
    token_id, token_digest = ("tok_1", digest(9)) if again == "same id" else ("tok_2", digest(1))

    with pytest.raises(StoreUnavailable) as refused:
        await durable.add_token(token_id, "mallory", token_digest, "", T0 + 2)

    assert refused.value.reason == DUPLICATE
    assert (await durable.tokens(), await durable.active_tokens()) == before


async def test_a_token_is_revoked_once_and_stays_listed(durable: DurableStore) -> None:
    await durable.add_token("tok_1", "crm-sync", digest(1), "", T0)
    await durable.add_token("tok_2", "crm-sync", digest(2), "", T0)

    assert await durable.revoke_token("tok_1", T0 + 5) is True
    assert await durable.revoke_token("tok_1", T0 + 9) is False
    assert await durable.revoke_token("tok_unknown", T0) is False

    assert (await durable.active_tokens())[1] == [("tok_2", "crm-sync", digest(2))]
    assert [row[4] for row in await durable.tokens()] == [T0 + 5, None]


async def test_the_tokens_version_moves_on_every_change_of_tokens_and_only_then(
    durable: DurableStore,
) -> None:
    versions = [await durable.tokens_version()]
    await durable.add_token("tok_1", "crm-sync", digest(1), "", T0)
    versions.append(await durable.tokens_version())
    await durable.revoke_token("tok_1", T0)
    versions.append(await durable.tokens_version())
    assert len(set(versions)) == 3

    await durable.revoke_token("tok_1", T0)  # nothing to revoke
    with pytest.raises(StoreUnavailable):
        await durable.add_token("tok_1", "crm-sync", digest(1), "", T0)  # refused
    await durable.revoke_sessions("alice", T0)  # not a token
    await durable.add_authenticator(authenticator("a1"))

    assert await durable.tokens_version() == versions[-1]
    assert (await durable.active_tokens())[0] == versions[-1]


# -- authenticators ---------------------------------------------------------------------------


async def test_authenticators_are_listed_for_their_own_user_oldest_first(
    durable: DurableStore,
) -> None:
    await durable.add_authenticator(authenticator("b", created=T0 + 10))
    await durable.add_authenticator(authenticator("a", created=T0 + 20))
    await durable.add_authenticator(authenticator("c", created=T0 + 10))
    await durable.add_authenticator(authenticator("x", user="bob"))

    found = await durable.authenticators("alice")

    assert [a.id for a in found] == ["b", "c", "a"]
    assert found[0] == authenticator("b", created=T0 + 10)  # every field, the bytes exact
    assert await durable.authenticators("carol") == []


async def test_all_authenticators_are_listed_by_user_then_age(durable: DurableStore) -> None:
    await durable.add_authenticator(authenticator("b1", user="bob"))
    await durable.add_authenticator(authenticator("a2", created=T0 + 5))
    await durable.add_authenticator(authenticator("a1"))

    assert [a.id for a in await durable.all_authenticators()] == ["a1", "a2", "b1"]


async def test_an_authenticator_id_taken_is_refused_whoever_holds_it(
    durable: DurableStore,
) -> None:
    await durable.add_authenticator(authenticator("a1"))

    with pytest.raises(StoreUnavailable) as refused:
        await durable.add_authenticator(authenticator("a1", user="bob"))

    assert refused.value.reason == DUPLICATE
    assert await durable.all_authenticators() == [authenticator("a1")]


async def test_touching_an_authenticator_records_its_last_use(durable: DurableStore) -> None:
    await durable.add_authenticator(authenticator("a1"))
    await durable.add_authenticator(authenticator("a2"))

    await durable.touch_authenticator("a1", EXACT)
    await durable.touch_authenticator("unknown", T0)

    assert [a.last_used for a in await durable.authenticators("alice")] == [EXACT, None]


async def test_resealing_swaps_the_secret_and_key_id_only_while_it_is_as_read(
    durable: DurableStore,
) -> None:
    await durable.add_authenticator(authenticator("a1"))
    read = (await durable.authenticators("alice"))[0]

    assert await durable.reseal_authenticator("a1", b"k2\x00new", "k2", expected=read.sealed)
    assert not await durable.reseal_authenticator("a1", b"k3\x00late", "k3", expected=read.sealed)
    assert not await durable.reseal_authenticator("gone", b"k3", "k3", expected=read.sealed)

    row = (await durable.authenticators("alice"))[0]
    assert (row.sealed, row.key_id) == (b"k2\x00new", "k2")
    assert row._replace(sealed=read.sealed, key_id="k1") == read  # nothing else changed


async def test_a_user_removes_only_their_own_authenticator(durable: DurableStore) -> None:
    await durable.add_authenticator(authenticator("a1"))
    await durable.add_authenticator(authenticator("b1", user="bob"))

    assert await durable.remove_authenticator("alice", "b1") is False
    assert await durable.remove_authenticator("alice", "a1") is True
    assert await durable.remove_authenticator("alice", "a1") is False

    assert [a.id for a in await durable.all_authenticators()] == ["b1"]


async def test_removing_a_users_authenticators_counts_them_and_leaves_others(
    durable: DurableStore,
) -> None:
    for auth_id in ("a1", "a2", "a3"):
        await durable.add_authenticator(authenticator(auth_id))
    await durable.add_authenticator(authenticator("b1", user="bob"))

    assert await durable.remove_authenticators("alice") == 3
    assert await durable.remove_authenticators("alice") == 0

    assert [a.id for a in await durable.all_authenticators()] == ["b1"]


# -- recovery codes ---------------------------------------------------------------------------


async def test_a_recovery_code_works_once(durable: DurableStore) -> None:
    await durable.replace_recovery_codes("alice", [digest(n) for n in range(10)], T0)

    assert await durable.use_recovery_code("alice", digest(3), T0 + 1) is True
    assert await durable.use_recovery_code("alice", digest(3), T0 + 2) is False
    assert await durable.recovery_codes_left("alice") == 9


async def test_a_wrong_code_or_another_users_code_does_not_work(durable: DurableStore) -> None:
    await durable.replace_recovery_codes("alice", [digest(1)], T0)
    await durable.replace_recovery_codes("bob", [digest(2)], T0)

    assert await durable.use_recovery_code("alice", digest(9), T0) is False
    assert await durable.use_recovery_code("alice", digest(2), T0) is False

    assert await durable.recovery_codes_left("alice") == 1
    assert await durable.recovery_codes_left("bob") == 1


async def test_a_new_set_replaces_the_old_one_used_or_not_and_no_one_elses(
    durable: DurableStore,
) -> None:
    await durable.replace_recovery_codes("alice", [digest(1), digest(2)], T0)
    await durable.replace_recovery_codes("bob", [digest(1)], T0)
    await durable.use_recovery_code("alice", digest(1), T0)

    await durable.replace_recovery_codes("alice", [digest(1), digest(3), digest(4)], T0 + 1)

    assert await durable.recovery_codes_left("alice") == 3
    assert await durable.use_recovery_code("alice", digest(2), T0) is False
    assert await durable.use_recovery_code("alice", digest(1), T0) is True  # new, unused
    assert await durable.use_recovery_code("bob", digest(1), T0) is True


async def test_an_empty_set_leaves_the_user_without_codes(durable: DurableStore) -> None:
    await durable.replace_recovery_codes("alice", [digest(1)], T0)

    await durable.replace_recovery_codes("alice", [], T0)

    assert await durable.recovery_codes_left("alice") == 0
    assert await durable.use_recovery_code("alice", digest(1), T0) is False
    assert await durable.recovery_codes_left("nobody") == 0


async def test_of_concurrent_uses_of_one_code_on_two_connections_exactly_one_wins(
    durable_backend: DurableBackend, durable: DurableStore
) -> None:
    await durable.replace_recovery_codes("alice", [digest(1), digest(2)], T0)
    other = await durable_backend.open()

    results = await asyncio.gather(
        *(
            (durable if n % 2 else other).use_recovery_code("alice", digest(1), T0)
            for n in range(20)
        )
    )

    assert results.count(True) == 1
    assert await durable.recovery_codes_left("alice") == 1


# -- remembered devices -----------------------------------------------------------------------


async def test_a_saved_device_is_found_and_listed_for_its_user(durable: DurableStore) -> None:
    await durable.save_device(device("d1", verified=EXACT))

    assert await durable.device("d1") == device("d1", verified=EXACT)
    assert await durable.devices("alice") == [device("d1", verified=EXACT)]
    assert await durable.devices("bob") == []
    assert await durable.device("unknown") is None


async def test_saving_a_device_again_updates_it_and_keeps_when_it_was_first_saved(
    durable: DurableStore,
) -> None:
    await durable.save_device(device("d1"))

    await durable.save_device(
        device("d1", label="Chrome", created=T0 + 500, verified=T0 + 500, remembered_until=T0 + 9)
    )

    assert await durable.device("d1") == device(
        "d1", label="Chrome", verified=T0 + 500, remembered_until=T0 + 9
    )


async def test_devices_are_listed_oldest_first(durable: DurableStore) -> None:
    await durable.save_device(device("new", created=T0 + 10))
    await durable.save_device(device("old", created=T0))

    assert [d.id for d in await durable.devices("alice")] == ["old", "new"]


async def test_another_user_cannot_take_over_a_device_id(durable: DurableStore) -> None:
    await durable.save_device(device("d1"))

    await durable.save_device(
        device("d1", user="mallory", verified=T0 + 5, remembered_until=T0 + 10**9)
    )

    assert await durable.device("d1") == device("d1")
    assert await durable.devices("mallory") == []


async def test_a_revoked_device_is_no_longer_live_but_still_found_as_revoked(
    durable: DurableStore,
) -> None:
    await durable.save_device(device("d1"))
    await durable.save_device(device("d2", created=T0 + 1))

    assert await durable.revoke_device("alice", "d1", T0 + 60) is True

    assert [d.id for d in await durable.devices("alice")] == ["d2"]
    assert await durable.device("d1") == device("d1", revoked=T0 + 60)


async def test_revoking_twice_an_unknown_or_someone_elses_device_does_nothing(
    durable: DurableStore,
) -> None:
    await durable.save_device(device("d1"))
    await durable.save_device(device("b1", user="bob"))
    await durable.revoke_device("alice", "d1", T0 + 60)

    assert await durable.revoke_device("alice", "d1", T0 + 90) is False
    assert await durable.revoke_device("alice", "missing", T0) is False
    assert await durable.revoke_device("alice", "b1", T0) is False

    assert await durable.device("d1") == device("d1", revoked=T0 + 60)  # the first time stays
    assert [d.id for d in await durable.devices("bob")] == ["b1"]


async def test_saving_a_revoked_device_does_not_revive_it(durable: DurableStore) -> None:
    await durable.save_device(device("d1"))
    await durable.revoke_device("alice", "d1", T0 + 60)

    await durable.save_device(device("d1", verified=T0 + 120, remembered_until=T0 + 10**9))

    assert await durable.device("d1") == device("d1", revoked=T0 + 60)
    assert await durable.devices("alice") == []


async def test_revoking_all_of_a_users_devices_counts_the_live_ones(
    durable: DurableStore,
) -> None:
    for n in range(3):
        await durable.save_device(device(f"d{n}", created=T0 + n))
    await durable.revoke_device("alice", "d0", T0 + 10)
    await durable.save_device(device("b1", user="bob"))

    assert await durable.revoke_devices("alice", T0 + 20) == 2
    assert await durable.revoke_devices("alice", T0 + 30) == 0

    assert await durable.devices("alice") == []
    found = [await durable.device(f"d{n}") for n in range(3)]
    assert [d.revoked if d else None for d in found] == [T0 + 10, T0 + 20, T0 + 20]
    assert [d.id for d in await durable.devices("bob")] == ["b1"]


# -- session revocations and who the store knows ------------------------------------------------


async def test_revoking_sessions_keeps_the_last_time_per_user_and_moves_the_version_on(
    durable: DurableStore,
) -> None:
    await durable.revoke_sessions("alice", T0)
    first = await durable.revocations_version()
    await durable.revoke_sessions("bob", T0 + 5)
    await durable.revoke_sessions("alice", EXACT + 10)

    version, revoked = await durable.revocations()

    assert revoked == {"alice": EXACT + 10, "bob": T0 + 5}
    assert version == await durable.revocations_version()
    assert len({0, first, version}) == 3


async def test_known_users_are_those_with_authenticators_codes_or_devices(
    durable: DurableStore,
) -> None:
    await durable.add_authenticator(authenticator("a1", user="carol"))
    await durable.add_authenticator(authenticator("a2", user="carol"))
    await durable.replace_recovery_codes("alice", [digest(1)], T0)
    await durable.save_device(device("d1", user="bob"))
    await durable.revoke_devices("bob", T0)
    await durable.replace_recovery_codes("dave", [], T0)  # no codes: nothing held
    await durable.add_token("tok_1", "erin", digest(1), "", T0)  # tokens do not count
    await durable.revoke_sessions("frank", T0)

    assert await durable.known_users() == ["alice", "bob", "carol"]


# -- the ledger, factor choice, notes ------------------------------------------------------------


async def test_ledger_rows_come_back_as_recorded_by_time_from_since_until_before_until(
    durable: DurableStore,
) -> None:
    rows = [ledger(T0 + 20, "bob", "0.10"), ledger(T0), ledger(T0 + 10), ledger(EXACT + 30)]
    for row in rows:
        await durable.record_message(row)

    assert await durable.messages(T0, T0 + 20) == [ledger(T0), ledger(T0 + 10)]
    assert await durable.messages(T0 + 10, float("inf")) == [
        ledger(T0 + 10),
        ledger(T0 + 20, "bob", "0.10"),
        ledger(EXACT + 30),
    ]
    found = await durable.messages(0, float("inf"))
    assert [(type(r.attempts), type(r.cost)) for r in found] == [(int, str)] * 4


async def test_the_factor_choice_is_the_last_one_set_per_user(durable: DurableStore) -> None:
    await durable.set_factor_choice("alice", "sms")
    await durable.set_factor_choice("alice", "totp")
    await durable.set_factor_choice("bob", "email")

    assert await durable.factor_choice("alice") == "totp"
    assert await durable.factor_choice("bob") == "email"
    assert await durable.factor_choice("carol") == ""


async def test_the_interval_choice_is_the_last_one_set_per_user_until_cleared(
    durable: DurableStore,
) -> None:
    await durable.set_interval_choice("alice", 86400.0, T0)
    await durable.set_interval_choice("alice", 0.0, EXACT)  # "always": zero is a choice too
    await durable.set_interval_choice("bob", 3600.0, T0 + 1)

    assert await durable.interval_choice("alice") == IntervalChoice(0.0, EXACT)
    assert await durable.interval_choice("bob") == IntervalChoice(3600.0, T0 + 1)
    assert await durable.interval_choice("Alice") is None  # names are compared as given
    assert await durable.clear_interval_choice("alice")
    assert not await durable.clear_interval_choice("alice")
    assert not await durable.clear_interval_choice("carol")
    assert await durable.interval_choice("alice") is None
    assert await durable.interval_choice("bob") == IntervalChoice(3600.0, T0 + 1)


async def test_a_note_is_the_last_value_left_under_its_name(durable: DurableStore) -> None:
    await durable.set_note("seal_ring", "first")
    await durable.set_note("seal_ring", '{"ids": ["k2", "k1"], "stopped": 0}')
    await durable.set_note("policy_confirmed", "sha256:ab")

    assert await durable.note("seal_ring") == '{"ids": ["k2", "k1"], "stopped": 0}'
    assert await durable.note("policy_confirmed") == "sha256:ab"
    assert await durable.note("never") == ""


# -- admin requests ------------------------------------------------------------------------------


async def test_requests_wait_oldest_first_until_claimed_and_ids_only_grow(
    durable: DurableStore,
) -> None:
    first = await durable.request_action("unlock", "alice", T0)
    second = await durable.request_action("unlock", "bob", T0)
    assert second > first

    assert await durable.pending_requests() == [
        (first, "unlock", "alice"),
        (second, "unlock", "bob"),
    ]
    assert not await durable.request_done(first)

    assert await durable.claim_request(first, T0 + 1) is True
    assert await durable.claim_request(first, T0 + 2) is False
    assert await durable.claim_request(second + 1000, T0) is False

    assert await durable.request_done(first)
    assert not await durable.request_done(second + 1000)
    assert await durable.pending_requests() == [(second, "unlock", "bob")]
    assert await durable.request_action("unlock", "carol", T0) > second


async def test_of_concurrent_claimers_on_two_connections_exactly_one_claims(
    durable_backend: DurableBackend, durable: DurableStore
) -> None:
    other = await durable_backend.open()
    request = await durable.request_action("unlock", "alice", T0)

    results = await asyncio.gather(
        *((durable if n % 2 else other).claim_request(request, T0) for n in range(20))
    )

    assert results.count(True) == 1
    assert await other.request_done(request)


# -- networks users sign in from -----------------------------------------------------------------


async def test_a_network_is_new_once_per_user_and_its_last_sighting_moves_on(
    durable: DurableStore,
) -> None:
    assert await durable.note_network("alice", "192.0.2.0/24", T0) is True
    assert await durable.note_network("alice", "192.0.2.0/24", EXACT + 10) is False
    assert await durable.note_network("alice", "2001:db8::/48", T0 + 20) is True
    assert await durable.note_network("alice", "198.51.100.0/24", T0 + 20) is True
    assert await durable.note_network("bob", "192.0.2.0/24", T0 + 30) is True

    assert await durable.networks("alice") == [
        ("192.0.2.0/24", T0, EXACT + 10),
        ("198.51.100.0/24", T0 + 20, T0 + 20),
        ("2001:db8::/48", T0 + 20, T0 + 20),
    ]
    assert await durable.networks("bob") == [("192.0.2.0/24", T0 + 30, T0 + 30)]


async def test_of_concurrent_sightings_of_a_new_network_exactly_one_is_new(
    durable_backend: DurableBackend, durable: DurableStore
) -> None:
    other = await durable_backend.open()

    results = await asyncio.gather(
        *(
            (durable if n % 2 else other).note_network("alice", "192.0.2.0/24", T0 + n)
            for n in range(20)
        )
    )

    assert results.count(True) == 1
    assert [n for n, _, _ in await durable.networks("alice")] == ["192.0.2.0/24"]


# -- the audit trail ---------------------------------------------------------------------------


async def test_audit_events_come_back_as_added_in_order_with_growing_ids(
    durable: DurableStore,
) -> None:
    full = AuditEvent(
        EXACT,
        "challenge.failed",
        "failed",
        user="alice",
        ip="2001:db8::7",
        user_agent="Firefox/128 « ü 漢字 😀 »",
        path="/_gateway/challenge",
        method="POST",
        request_id="r1",
        reason="wrong_code",
        details=(("attempt", 3), ("factor", "totp"), ("wait", 1.5)),
    )
    added = [full, event(request_id="r2", time=T0 - 10), event(request_id="r3")]

    await durable.add_audit_events(added)
    await durable.add_audit_events([])  # nothing to do
    found = await durable.audit_events(AuditQuery())

    assert [e for _, e in found] == added  # added order, not time order
    assert [type(v) for _, v in found[0][1].details] == [int, str, float]
    ids = [i for i, _ in found]
    assert ids == sorted(set(ids))


async def test_a_batch_of_audit_events_is_stored_all_or_none(
    durable_backend: DurableBackend, durable: DurableStore
) -> None:
    await durable.add_audit_events([event(request_id="before")])
    await durable_backend.refuse("test.refused")
    batch = [event(request_id="r1"), event("test.refused", request_id="r2"), event(request_id="r3")]

    with pytest.raises(StoreUnavailable):
        await durable.add_audit_events(batch)

    assert await names(durable) == ["before"]
    await durable.add_audit_events([event(request_id="after")])
    assert await names(durable) == ["before", "after"]


async def test_text_utf8_cannot_hold_is_kept_as_a_replacement_character(
    durable: DurableStore,
) -> None:
    """aiohttp reads header bytes that are not UTF-8 as lone surrogates: such a User-Agent
    must not make the store refuse the event (nor the batch it is in)."""
    batch = [event(request_id="r1"), event(request_id="r2", user_agent="bad\udcff\udcfeua")]

    await durable.add_audit_events(batch)

    found = await durable.audit_events(AuditQuery())
    assert [e.user_agent for _, e in found] == ["", "bad\ufffd\ufffdua"]


async def _fill(store: DurableStore) -> None:
    rows = [
        ("signin.crm_ok", "ok", "alice", "192.0.2.1", "r1"),
        ("challenge.failed", "failed", "alice", "192.0.2.1", "r2"),
        ("challenge.passed", "ok", "alice", "192.0.2.1", "r3"),
        ("ip.denied", "denied", "", "203.0.113.9", "r4"),
        ("code_x.sent", "ok", "bob", "192.0.2.2", "r5"),
        ("codeyx.sent", "ok", "bob", "192.0.2.2", "r6"),
        ("challenge.failed", "failed", "Bob", "192.0.2.2", "r7"),
    ]
    await store.add_audit_events(
        [
            event(name, T0 + n * 3600, outcome=outcome, user=user, ip=ip, request_id=rid)
            for n, (name, outcome, user, ip, rid) in enumerate(rows)
        ]
    )


async def test_audit_events_are_found_by_each_criterion_and_all_of_them(
    durable: DurableStore,
) -> None:
    await _fill(durable)

    assert await names(durable) == ["r1", "r2", "r3", "r4", "r5", "r6", "r7"]
    assert await names(durable, user="bob") == ["r5", "r6"]
    assert await names(durable, names=("challenge.failed", "ip.denied")) == ["r2", "r4", "r7"]
    assert await names(durable, names=("challenge.*",)) == ["r2", "r3", "r7"]
    assert await names(durable, names=("challenge.*", "signin.crm_ok")) == ["r1", "r2", "r3", "r7"]
    assert await names(durable, ip="203.0.113.9") == ["r4"]
    assert await names(durable, outcome="failed") == ["r2", "r7"]
    assert await names(durable, request_id="r3") == ["r3"]
    assert await names(durable, user="alice", names=("challenge.*",), outcome="ok") == ["r3"]
    assert await names(durable, user="nobody") == []


async def test_a_name_prefix_matches_its_own_characters_only(durable: DurableStore) -> None:
    await _fill(durable)

    assert await names(durable, names=("code_x*",)) == ["r5"]  # `_` is no wildcard
    assert await names(durable, names=("%",)) == []
    assert await names(durable, names=("%*",)) == []
    assert await names(durable, names=("Challenge.*",)) == []  # case counts, as in exact names
    assert await names(durable, names=("Challenge.failed",)) == []
    assert len(await names(durable, names=("*",))) == 7  # the empty prefix


async def test_audit_times_are_from_since_until_before_until(durable: DurableStore) -> None:
    await _fill(durable)

    assert await names(durable, since=T0 + 2 * 3600, until=T0 + 4 * 3600) == ["r3", "r4"]
    assert await names(durable, since=T0 + 2 * 3600 + 0.001) == ["r4", "r5", "r6", "r7"]


async def test_audit_events_page_by_id_newest_first_and_within_a_limit(
    durable: DurableStore,
) -> None:
    await _fill(durable)

    assert await names(durable, limit=2, newest_first=True) == ["r7", "r6"]
    assert await names(durable, limit=3) == ["r1", "r2", "r3"]
    first = await durable.audit_events(AuditQuery(limit=3))
    assert await names(durable, after_id=first[-1][0]) == ["r4", "r5", "r6", "r7"]
    assert await names(durable, after_id=first[-1][0], limit=1, newest_first=True) == ["r7"]


async def test_audit_events_page_back_from_an_id_newest_first(durable: DurableStore) -> None:
    await _fill(durable)
    newest = await durable.audit_events(AuditQuery(limit=3, newest_first=True))

    before = newest[-1][0]
    assert [e.request_id for _, e in newest] == ["r7", "r6", "r5"]
    assert await names(durable, before_id=before, limit=3, newest_first=True) == ["r4", "r3", "r2"]
    assert await names(durable, before_id=before, user="alice", names=("challenge.*",)) == [
        "r2",
        "r3",
    ]


async def test_audit_counts_add_up_events_per_name_and_time_bucket(durable: DurableStore) -> None:
    await _fill(durable)  # one event an hour from T0 (a whole hour), r1 .. r7
    late = T0 + 30 * 3600 + 59.5  # the next day (T0 is 08:00 UTC), its 14:00 hour
    await durable.add_audit_events(
        [event("challenge.failed", T0 + 3599.9, request_id="r8"), event("ip.denied", late)]
    )

    hours = await durable.audit_counts(AuditQuery(names=("challenge.failed", "ip.denied")), 3600)
    assert hours == [
        (T0, "challenge.failed", 1),
        (T0 + 3600, "challenge.failed", 1),
        (T0 + 3 * 3600, "ip.denied", 1),
        (T0 + 6 * 3600, "challenge.failed", 1),
        (T0 + 30 * 3600, "ip.denied", 1),
    ]
    days = await durable.audit_counts(AuditQuery(names=("challenge.*", "ip.denied")), 86400)
    day = T0 - T0 % 86400
    assert days == [
        (day, "challenge.failed", 3),
        (day, "challenge.passed", 1),
        (day, "ip.denied", 1),
        (day + 86400, "ip.denied", 1),
    ]
    # The query's criteria hold; its limit and order do not.
    assert await durable.audit_counts(
        AuditQuery(user="alice", limit=1, newest_first=True, until=T0 + 2 * 3600), 86400
    ) == [(day, "challenge.failed", 1), (day, "signin.crm_ok", 1)]
    assert await durable.audit_counts(AuditQuery(user="nobody"), 3600) == []


async def test_pruning_removes_only_older_events_and_counts_them(durable: DurableStore) -> None:
    await _fill(durable)

    assert await durable.prune_audit(T0 + 3 * 3600) == 3
    assert await durable.prune_audit(T0 + 3 * 3600) == 0

    assert await names(durable) == ["r4", "r5", "r6", "r7"]


async def test_ids_only_grow_even_after_every_event_was_pruned(durable: DurableStore) -> None:
    await _fill(durable)
    highest = (await durable.audit_events(AuditQuery(limit=1, newest_first=True)))[0][0]

    assert await durable.prune_audit(float("inf")) == 7
    await durable.add_audit_events([event(request_id="later")])

    [(later, _)] = await durable.audit_events(AuditQuery())
    assert later > highest
