"""The passkey factor (gateway/factors/webauthn.py) on answers recorded from real Chromium with a
virtual authenticator (webauthn_recorded.json, made by webauthn_record.py): the fido2 library's
own verification, and ours around it (one challenge per sign-in, used once; the exact origin;
user verification; whose credential; the counter of a cloned key), on a real SQLite store.
Every refusal has its reason, and no answer, however mangled, raises."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fido2.utils import websafe_decode, websafe_encode

from gateway.clock import FakeClock
from gateway.config.signin import Limits
from gateway.config.webauthn import WebAuthn
from gateway.crypto import KeyRing, Sealer, new_key_line, parse_keys
from gateway.factors.protocol import Answer
from gateway.factors.webauthn import (
    KIND,
    MAX_ANSWER,
    Stored,
    WebAuthnFactor,
    row_id,
    webauthn_purpose,
)
from gateway.signin.regulation import Regulator
from gateway.stores.memory import MemorySharedStore
from gateway.stores.sqlite import SqliteDurableStore

RECORDED = json.loads(Path(__file__).with_name("webauthn_recorded.json").read_text())
ORIGIN = RECORDED["origin"]
SIGNINS = {s["label"]: s for s in RECORDED["signins"]}
LIMITS = Limits(user_failures=1000, ip_failures=1000, daily_failures=1000)


def response(label: str) -> dict[str, Any]:
    return copy.deepcopy(SIGNINS[label]["response"])


def text(data: dict[str, Any]) -> str:
    return json.dumps(data)


class Kit:
    """A factor on a real SQLite store whose challenges are the recording's, issued in turn."""

    def __init__(self, durable: SqliteDurableStore, party: WebAuthn, sealer: Sealer) -> None:
        self.durable = durable
        self.clock = FakeClock(1_800_000_000.0)
        self.shared = MemorySharedStore(self.clock)
        self.sealer = sealer
        self.next: list[bytes] = []
        self.factor = self.make(party)

    def make(self, party: WebAuthn) -> WebAuthnFactor:
        regulator = Regulator(self.shared, self.clock, LIMITS)
        return WebAuthnFactor(
            self.durable,
            self.shared,
            regulator,
            self.sealer,
            self.clock,
            party,
            new_challenge=lambda: self.next.pop(0),
        )

    async def register(self, user: str, *, as_user: str = "", sid: str = "s0") -> Any:
        recorded = RECORDED[f"register_{as_user or user}"]
        self.next.append(websafe_decode(recorded["challenge"]))
        await self.factor.registration(user, sid)
        return await self.factor.register(user, sid, text(recorded["response"]), "Key")

    async def sign_in(self, user: str, label: str, answer: str | None = None, **kw: str) -> Any:
        """A challenge page for `user` issuing `label`'s challenge, then `answer` to it."""
        sid = kw.get("sid", "s1")
        self.next.append(websafe_decode(SIGNINS[label]["challenge"]))
        prompt = await self.factor.prompt(user, sid)
        assert prompt.options
        return await self.answer(user, answer if answer is not None else text(response(label)), sid)

    async def answer(self, user: str, answer: str, sid: str = "s1") -> Any:
        return await self.factor.check(Answer(user, answer, "192.0.2.1", sid))


PARTY = WebAuthn(rp_id="localhost", origin=ORIGIN, name="CRM Gateway", unavailable="")


@pytest.fixture
async def durable(tmp_path: Path) -> AsyncIterator[SqliteDurableStore]:
    store = SqliteDurableStore(str(tmp_path / "gateway.db"))
    await store.open()
    yield store
    await store.close()


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(parse_keys(new_key_line("k1")))


@pytest.fixture
def kit(durable: SqliteDurableStore, sealer: Sealer) -> Kit:
    return Kit(durable, PARTY, sealer)


@pytest.fixture
async def alice(kit: Kit) -> Kit:
    """alice has registered her key (its counter at 1)."""
    registered = await kit.register("alice")
    assert (registered.ok, registered.reason) == (True, "ok")
    return kit


async def test_a_recorded_registration_is_verified_and_kept_sealed(kit: Kit) -> None:
    registered = await kit.register("alice")

    assert registered.ok
    rows = await kit.durable.authenticators("alice")
    assert [(r.kind, r.name, r.id) for r in rows] == [(KIND, "Key", registered.row.id)]
    raw_id = websafe_decode(RECORDED["register_alice"]["response"]["rawId"])
    assert rows[0].id == row_id(raw_id)
    stored = Stored.from_bytes(
        kit.sealer.unseal(rows[0].sealed, webauthn_purpose("alice", rows[0].id))
    )
    assert stored.credential.credential_id == raw_id
    assert stored.count == 1
    assert stored.transports == ("usb",)
    assert raw_id not in rows[0].sealed  # sealed, not merely stored


async def test_a_recorded_sign_in_passes_and_moves_the_counter(alice: Kit) -> None:
    verdict = await alice.sign_in("alice", "alice 1")

    assert (verdict.ok, verdict.reason) == (True, "ok")
    row = (await alice.durable.authenticators("alice"))[0]
    assert row.last_used == alice.clock.now()
    assert (
        Stored.from_bytes(alice.sealer.unseal(row.sealed, webauthn_purpose("alice", row.id))).count
        == 2
    )


async def test_the_same_answer_again_finds_no_challenge_waiting(alice: Kit) -> None:
    assert (await alice.sign_in("alice", "alice 1")).ok

    replayed = await alice.answer("alice", text(response("alice 1")))

    assert replayed.reason == "expired"


async def test_a_replay_whose_challenge_came_round_again_is_stopped_by_the_counter(
    alice: Kit,
) -> None:
    assert (await alice.sign_in("alice", "alice 1")).ok

    assert (await alice.sign_in("alice", "alice 1")).reason == "cloned"


async def test_a_cloned_key_counting_behind_the_original_is_refused(alice: Kit) -> None:
    assert (await alice.sign_in("alice", "alice 2")).ok  # the original, at 3

    verdict = await alice.sign_in("alice", "alice 1")  # a copy made earlier, at 2

    assert verdict.reason == "cloned"
    assert "counter 2, last seen 3" in verdict.detail
    # The refusal wrote nothing: the original still signs in.
    assert (
        Stored.from_bytes(
            alice.sealer.unseal(
                (await alice.durable.authenticators("alice"))[0].sealed,
                webauthn_purpose("alice", row_id(websafe_decode(response("alice 1")["rawId"]))),
            )
        ).count
        == 3
    )


async def test_an_answer_to_another_challenge_is_refused(alice: Kit) -> None:
    alice.next.append(b"x" * 32)
    await alice.factor.prompt("alice", "s1")

    assert (await alice.answer("alice", text(response("alice 1")))).reason == "wrong_challenge"


async def test_an_answer_for_another_sign_in_finds_no_challenge(alice: Kit) -> None:
    alice.next.append(websafe_decode(SIGNINS["alice 1"]["challenge"]))
    await alice.factor.prompt("alice", "browser-a")

    verdict = await alice.answer("alice", text(response("alice 1")), sid="browser-b")

    assert verdict.reason == "expired"


async def test_an_answer_made_on_another_origin_is_refused(alice: Kit) -> None:
    alice.factor = alice.make(WebAuthn("localhost", "http://localhost:1", "CRM", unavailable=""))

    verdict = await alice.sign_in("alice", "alice 1")

    assert verdict.reason == "wrong_origin"
    assert ORIGIN in verdict.detail  # the operator sees which page asked


async def test_an_answer_signed_for_another_relying_party_is_refused(
    durable: SqliteDurableStore, sealer: Sealer
) -> None:
    kit = Kit(durable, WebAuthn("localhost", ORIGIN, "CRM", unavailable=""), sealer)
    assert (await kit.register("alice")).ok
    kit.factor = kit.make(WebAuthn("example.com", ORIGIN, "CRM", unavailable=""))

    assert (await kit.sign_in("alice", "alice 1")).reason == "wrong_origin"


async def test_another_users_credential_is_not_taken_for_alice(alice: Kit) -> None:
    assert (await alice.register("bob")).ok

    verdict = await alice.sign_in("alice", "bob 1", text(response("bob 1")))

    assert verdict.reason == "unknown_credential"
    assert (await alice.sign_in("bob", "bob 1")).ok  # bob's own, for bob


async def test_a_credential_row_copied_to_another_user_does_not_open(alice: Kit) -> None:
    row = (await alice.durable.authenticators("alice"))[0]
    await alice.durable.remove_authenticator("alice", row.id)
    await alice.durable.add_authenticator(row._replace(user="mallory"))

    # The browser would sign for mallory with alice's key: the row's seal names alice.
    assert (await alice.sign_in("mallory", "alice 1")).reason == "unknown_credential"


async def test_one_credential_cannot_be_registered_to_two_users(alice: Kit) -> None:
    registered = await alice.register("bob", as_user="alice")

    assert (registered.ok, registered.reason) == (False, "credential_taken")
    assert await alice.durable.authenticators("bob") == []


async def test_missing_user_verification_is_refused_when_required(
    durable: SqliteDurableStore, sealer: Sealer
) -> None:
    required = WebAuthn("localhost", ORIGIN, "CRM", user_verification="required", unavailable="")
    kit = Kit(durable, required, sealer)
    assert (await kit.register("alice")).ok  # its registration was user-verified

    assert (await kit.sign_in("alice", "alice unverified")).reason == "no_user_verification"
    assert (await kit.sign_in("alice", "alice 2")).ok


async def test_missing_user_verification_passes_when_only_preferred(alice: Kit) -> None:
    assert (await alice.sign_in("alice", "alice unverified")).ok


async def test_a_registration_without_its_challenge_is_refused(kit: Kit) -> None:
    recorded = RECORDED["register_alice"]["response"]

    registered = await kit.factor.register("alice", "s0", text(recorded), "Key")

    assert registered.reason == "expired"
    assert await kit.durable.authenticators("alice") == []


async def test_a_registration_to_another_challenge_is_refused(kit: Kit) -> None:
    kit.next.append(b"y" * 32)
    await kit.factor.registration("alice", "s0")

    registered = await kit.factor.register(
        "alice", "s0", text(RECORDED["register_alice"]["response"]), "Key"
    )

    assert registered.reason == "wrong_challenge"


async def test_a_registration_from_another_origin_is_refused(kit: Kit) -> None:
    kit.factor = kit.make(WebAuthn("localhost", "https://crm.localhost", "CRM", unavailable=""))

    assert (await kit.register("alice")).reason == "wrong_origin"


def _client_data(answer: dict[str, Any], **changes: Any) -> dict[str, Any]:
    data = json.loads(websafe_decode(answer["response"]["clientDataJSON"]))
    data.update(changes)
    answer["response"]["clientDataJSON"] = websafe_encode(json.dumps(data).encode())
    return answer


def _flip(answer: dict[str, Any], field: str) -> dict[str, Any]:
    raw = bytearray(websafe_decode(answer["response"][field]))
    raw[-1] ^= 0x01
    answer["response"][field] = websafe_encode(bytes(raw))
    return answer


MANGLED: list[tuple[str, Callable[[], str], str]] = [
    ("not json", lambda: "{not json", "malformed"),
    ("a list", lambda: "[1, 2]", "malformed"),
    ("empty", lambda: "", "malformed"),
    ("a TOTP code", lambda: "123456", "malformed"),
    ("no response", lambda: text({**response("alice 1"), "response": None}), "malformed"),
    (
        "client data not base64",
        lambda: text(
            {
                **response("alice 1"),
                "response": {**response("alice 1")["response"], "clientDataJSON": "!!!"},
            }
        ),
        "malformed",
    ),
    (
        "client data not JSON",
        lambda: text(
            {
                **response("alice 1"),
                "response": {
                    **response("alice 1")["response"],
                    "clientDataJSON": websafe_encode(b"\xff\xfe"),
                },
            }
        ),
        "malformed",
    ),
    (
        "authenticator data cut short",
        lambda: text(
            {
                **response("alice 1"),
                "response": {
                    **response("alice 1")["response"],
                    "authenticatorData": websafe_encode(b"\x00" * 20),
                },
            }
        ),
        "malformed",
    ),
    (
        "a registration's type",
        lambda: text(_client_data(response("alice 1"), type="webauthn.create")),
        "malformed",
    ),
    (
        "the origin rewritten",
        lambda: text(_client_data(response("alice 1"), origin="http://localhost:1")),
        "wrong_origin",
    ),
    (
        "client data changed after signing",
        lambda: text(_client_data(response("alice 1"), extra="1")),
        "bad_signature",
    ),
    ("signature flipped", lambda: text(_flip(response("alice 1"), "signature")), "bad_signature"),
    (
        "counter byte flipped",
        lambda: text(_flip(response("alice 1"), "authenticatorData")),
        "bad_signature",
    ),
    (
        "another user's handle",
        lambda: text(
            {
                **response("alice 1"),
                "response": {
                    **response("alice 1")["response"],
                    "userHandle": response("bob 1")["response"]["userHandle"],
                },
            }
        ),
        "unknown_credential",
    ),
    ("id and rawId differ", lambda: text({**response("alice 1"), "id": "AAAA"}), "malformed"),
    (
        "unknown credential id",
        lambda: text({**response("alice 1"), "id": "AAAA", "rawId": "AAAA"}),
        "unknown_credential",
    ),
    ("oversized", lambda: text({**response("alice 1"), "padding": "A" * MAX_ANSWER}), "oversized"),
]


@pytest.mark.parametrize(("case", "made", "reason"), MANGLED, ids=[m[0] for m in MANGLED])
async def test_a_mangled_answer_is_refused_with_its_reason(
    alice: Kit, case: str, made: Callable[[], str], reason: str
) -> None:
    verdict = await alice.sign_in("alice", "alice 1", made())

    assert (verdict.ok, verdict.reason) == (False, reason)
    assert (await alice.sign_in("alice", "alice 1")).ok  # and the right one still works


async def test_no_mangling_of_a_recorded_answer_raises(alice: Kit) -> None:
    """Random damage to every field of the recorded answers: always a refusal, never an
    exception (the library parses bytes an attacker chose)."""
    rng = random.Random(17)
    originals = [response("alice 1"), RECORDED["register_alice"]["response"]]
    for _ in range(300):
        answer = copy.deepcopy(rng.choice(originals))
        field = rng.choice(sorted(answer["response"]))
        value = answer["response"][field]
        if isinstance(value, str) and value:
            raw = bytearray(value.encode())
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(32, 127)
            answer["response"][field] = raw.decode()
        else:
            answer["response"][field] = rng.choice([None, 0, [], {}, "A" * 40])
        verdict = await alice.sign_in("alice", "alice 1", text(answer))
        assert not verdict.ok or answer == response("alice 1")
        registered = await alice.factor.register("alice", "s9", text(answer), "x")
        assert not registered.ok


async def test_failures_count_towards_the_lockout(
    durable: SqliteDurableStore, sealer: Sealer
) -> None:
    kit = Kit(durable, PARTY, sealer)
    assert (await kit.register("alice")).ok
    kit.factor = WebAuthnFactor(
        durable,
        kit.shared,
        Regulator(kit.shared, kit.clock, Limits(user_failures=3)),
        sealer,
        kit.clock,
        PARTY,
        new_challenge=lambda: kit.next.pop(0),
    )
    for _ in range(3):
        await kit.sign_in("alice", "alice 1", "{}")

    verdict = await kit.sign_in("alice", "alice 1")

    assert verdict.reason == "locked"
    assert verdict.locked_until > kit.clock.now()


async def test_a_resealed_passkey_still_signs_in(alice: Kit) -> None:
    """`keys rotate` re-seals passkey rows (gateway.factors.registry.SEALED) like apps'."""
    from gateway.cli.keys import rotate

    newer = Sealer(KeyRing((*parse_keys(new_key_line("k2")).keys, *alice.sealer.ring.keys)))
    rotation = await rotate(
        alice.durable, newer, await alice.durable.all_authenticators(), dry_run=False
    )

    assert (rotation.resealed, rotation.unopened) == (1, [])
    alice.sealer = newer
    alice.factor = alice.make(PARTY)
    assert (await alice.durable.authenticators("alice"))[0].key_id == "k2"
    assert (await alice.sign_in("alice", "alice 1")).ok


async def test_no_relying_party_no_passkeys(durable: SqliteDurableStore, sealer: Sealer) -> None:
    kit = Kit(durable, WebAuthn(), sealer)  # public_url not set

    assert not kit.factor.offerable()
    assert not await kit.factor.on_file("alice")
    assert (await kit.factor.prompt("alice", "s1")).missing
