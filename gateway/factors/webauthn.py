"""Passkeys and security keys (WebAuthn), the phishing-resistant factor, on Yubico's fido2
library: the browser signs a fresh challenge with a key that never leaves the user's device,
and writes into what it signs the origin of the page that asked. A fake page on any other
address gets an answer this gateway refuses; a code typed into it would have worked.

Parsing the browser's answer and checking the signature are the library's (no CBOR or COSE
here). Ours: a challenge kept for one sign-in and taken on first use (a replayed answer finds
none), the exact origin of public_url (the library alone would take any subdomain), user
verification when required, whose credential it is, and the signature counter (a cloned key
counts behind the original). Each refusal has a reason code for the page, the audit trail and
the metrics. Credentials are Authenticator rows of kind "webauthn" (public key, counter,
transports) sealed like an app's key, so the durable stores need nothing new.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.clock import Clock
from gateway.config.webauthn import WebAuthn
from gateway.crypto import Sealer
from gateway.errors import PasskeyRefused, SealBroken, StoreUnavailable
from gateway.factors.protocol import Answer, Prompt, Verdict
from gateway.lazy import lazy_module
from gateway.signin.regulation import Regulator
from gateway.stores import Authenticator, DurableStore, SharedStore
from gateway.stores.protocols import DUPLICATE

if TYPE_CHECKING:
    import fido2.server as fido_server
    import fido2.utils as fido_utils
    import fido2.webauthn as fido
    from fido2.webauthn import (
        AttestedCredentialData,
        AuthenticatorData,
        CollectedClientData,
        PublicKeyCredentialDescriptor,
        UserVerificationRequirement,
    )
else:
    # Loaded at the first passkey: fido2 with its OpenSSL bindings, 2 MB in every worker.
    fido_server = lazy_module("fido2.server")
    fido_utils = lazy_module("fido2.utils")
    fido = lazy_module("fido2.webauthn")

KIND = "webauthn"
MAX_PASSKEYS = 10
# The browser's answer as posted (JSON): a real one is 1 to 6 KB (a credential id may be
# 1023 bytes and appears three times); the form around it is capped at 16 KiB.
MAX_ANSWER = 10_000
TRANSPORTS = frozenset({"usb", "nfc", "ble", "hybrid", "internal", "smart-card"})
_CREATE, _GET = "create", "get"


def webauthn_purpose(user: str, auth_id: str) -> str:
    # Bound into the seal, as an app's key: a credential copied to another user's row (or
    # another row) in the database does not open, so it cannot sign anyone else in.
    return f"webauthn\x00{user}\x00{auth_id}"


def row_id(credential_id: bytes) -> str:
    """The Authenticator row id of a credential: derived from its id, so one credential is
    one row whoever registers it (a second registration is refused as a duplicate)."""
    return "wa-" + hashlib.sha256(credential_id).hexdigest()[:32]


def user_handle(user: str) -> bytes:
    """The opaque WebAuthn user id: the same for every passkey of a user (an authenticator
    replaces its own older passkey for the user rather than keeping two)."""
    return hashlib.sha256(b"crm-gateway user\x00" + user.encode()).digest()


@dataclass(frozen=True)
class Stored:
    """What a passkey row keeps (sealed): the credential (id and public key), its counter."""

    credential: AttestedCredentialData
    count: int
    transports: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        data = {
            "c": fido_utils.websafe_encode(self.credential),
            "n": self.count,
            "t": self.transports,
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Stored:
        raw = json.loads(data)
        credential = fido.AttestedCredentialData(fido_utils.websafe_decode(raw["c"]))
        return cls(credential, int(raw["n"]), tuple(str(t) for t in raw.get("t", ())))


@dataclass(frozen=True)
class Registered:
    """The outcome of adding a passkey: the new row, or why not."""

    ok: bool
    reason: str  # "ok", or one of the refusals (see WebAuthnFactor.register)
    row: Authenticator | None = None
    detail: str = ""  # for the operator: what the browser sent that did not fit


class WebAuthnFactor:
    """A passkey or security key the user registered on the passkey page."""

    name = KIND
    enrol_page = "passkey"
    sends = False
    wrong_answer = "challenge.bad_signature"
    preselect = True

    def __init__(
        self,
        durable: DurableStore,
        shared: SharedStore | None,
        regulator: Regulator,
        sealer: Sealer,
        clock: Clock,
        party: WebAuthn | None,
        *,
        new_challenge: Callable[[], bytes] = lambda: os.urandom(32),
    ) -> None:
        self._durable = durable
        self._shared = shared
        self._regulator = regulator
        self._sealer = sealer
        self._clock = clock
        self.party = party if party is not None and party.available else None
        self._new_challenge = new_challenge
        self._server: fido_server.Fido2Server | None = None
        if self.party is not None:
            entity = fido.PublicKeyCredentialRpEntity(name=self.party.name, id=self.party.rp_id)
            origin = self.party.origin
            # The exact origin: the library's default takes any subdomain of the rp id.
            self._server = fido_server.Fido2Server(
                entity, fido.AttestationConveyancePreference.NONE, verify_origin=origin.__eq__
            )
            # Milliseconds in the options (the library declares the attribute None only).
            self._server.timeout = int(self.party.timeout * 1000)  # type: ignore[assignment]

    def offerable(self) -> bool:
        return self._server is not None and self._shared is not None

    async def on_file(self, user: str) -> bool:
        return self.offerable() and bool(await self.passkeys(user))

    async def passkeys(self, user: str) -> list[Authenticator]:
        return [a for a in await self._durable.authenticators(user) if a.kind == KIND]

    # -- signing in ------------------------------------------------------------------------

    async def prompt(self, user: str, sign_in: str) -> Prompt:
        """A new challenge for this sign-in (the one before it stops counting), and the
        options the page's script hands the browser."""
        rows = await self.passkeys(user)
        if self._server is None or not rows:
            return Prompt(missing=True)
        descriptors = []
        for row in rows:
            stored = self._opened(row)
            if stored is not None:
                descriptors.append(_descriptor(stored))
        options, state = self._server.authenticate_begin(
            descriptors, self._uv, challenge=self._new_challenge()
        )
        await self._keep(_GET, sign_in, state)
        return Prompt(options=json.dumps(dict(options)["publicKey"], separators=(",", ":")))

    async def check(self, answer: Answer) -> Verdict:
        user, ip = answer.user, answer.ip
        rows = await self.passkeys(user)
        if self._server is None or not rows:
            return Verdict(False, "no_authenticator")
        until = await self._regulator.attempt(user, ip)
        if until:
            return Verdict(False, "locked", until)
        state = await self._take(_GET, answer.sign_in)  # used up, whatever comes next
        try:
            await self._verify(state, user, rows, answer.code)
        except PasskeyRefused as refused:
            until = await self._regulator.failed(user, ip)
            return Verdict(False, refused.reason, until, refused.detail)
        await self._regulator.succeeded(user, ip)
        return Verdict(True, "ok")

    async def _verify(self, state: Any, user: str, rows: list[Authenticator], text: str) -> None:
        response = _parse(fido.AuthenticationResponse, text)
        data = response.response
        self._check_client(state, data.client_data, fido.CollectedClientData.TYPE.GET)
        self._check_flags(state, data.authenticator_data)
        found = {row.id: row for row in rows}.get(row_id(response.raw_id))
        handle = data.user_handle
        if handle is not None and not hmac.compare_digest(handle, user_handle(user)):
            # The key says whose it is (not signed over, but the spec's step 6 asks it): another
            # user's passkey, even one whose row could be found, is not this user's.
            raise PasskeyRefused("unknown_credential", "the key names another user")
        if found is None:
            raise PasskeyRefused("unknown_credential")  # none of this user's: another's, or made up
        for _ in range(3):  # the counter is written compare-and-swap: a race reads it again
            stored = self._opened(found)
            if stored is None:
                raise PasskeyRefused("unknown_credential", "its sealed row does not open")
            assert self._server is not None
            try:
                self._server.authenticate_complete(state, [stored.credential], response)
            except ValueError as exc:  # every other check passed above: the signature
                raise PasskeyRefused("bad_signature", str(exc)[:200]) from None
            count = data.authenticator_data.counter
            if (count or stored.count) and count <= stored.count:
                # A copy of the key signs with a counter behind the original's (WebAuthn §6.1.1).
                raise PasskeyRefused("cloned", f"counter {count}, last seen {stored.count}")
            if await self._save_count(found, Stored(stored.credential, count, stored.transports)):
                return
            again = {r.id: r for r in await self.passkeys(user)}.get(found.id)
            if again is None:
                raise PasskeyRefused("unknown_credential", "removed while it was being used")
            found = again
        raise PasskeyRefused("cloned", "its counter kept changing while it was checked")

    async def _save_count(self, row: Authenticator, stored: Stored) -> bool:
        now = self._clock.now()
        if stored.count:
            sealed = self._sealer.seal(stored.to_bytes(), webauthn_purpose(row.user, row.id))
            key_id = self._sealer.key_id(sealed)
            if not await self._durable.reseal_authenticator(
                row.id, sealed, key_id, expected=row.sealed
            ):
                return False
        await self._durable.touch_authenticator(row.id, now)
        return True

    # -- registering -------------------------------------------------------------------------

    async def registration(self, user: str, bound: str) -> str:
        """Creation options for a new passkey of `user`, for the page of the session `bound`;
        the user's own passkeys are excluded (the browser says so rather than make a
        second one on the same key)."""
        assert self._server is not None, "offered only with a relying party"
        rows = await self.passkeys(user)
        opened = [s for s in (self._opened(r) for r in rows) if s is not None]
        entity = fido.PublicKeyCredentialUserEntity(
            name=user, id=user_handle(user), display_name=user
        )
        options, state = self._server.register_begin(
            entity,
            [_descriptor(s) for s in opened],
            resident_key_requirement=fido.ResidentKeyRequirement.PREFERRED,
            user_verification=self._uv,
            challenge=self._new_challenge(),
        )
        await self._keep(_CREATE, bound, state)
        return json.dumps(dict(options)["publicKey"], separators=(",", ":"))

    async def register(self, user: str, bound: str, text: str, name: str) -> Registered:
        """Check the browser's answer to `registration` and keep the passkey. Refusals:
        oversized, malformed, expired (no challenge waiting: used, or too old), wrong_challenge,
        wrong_origin, no_user_presence, no_user_verification, too_many, credential_taken."""
        state = await self._take(_CREATE, bound)
        try:
            return Registered(True, "ok", await self._register(state, user, text, name))
        except PasskeyRefused as refused:
            return Registered(False, refused.reason, detail=refused.detail)

    async def _register(self, state: Any, user: str, text: str, name: str) -> Authenticator:
        response = _parse(fido.RegistrationResponse, text)
        data = response.response
        self._check_client(state, data.client_data, fido.CollectedClientData.TYPE.CREATE)
        self._check_flags(state, data.attestation_object.auth_data)
        assert self._server is not None
        try:
            auth = self._server.register_complete(state, response)
        except ValueError as exc:
            raise PasskeyRefused("malformed", str(exc)[:200]) from None
        if auth.credential_data is None:
            raise PasskeyRefused("malformed", "no credential in the authenticator data")
        if len(await self.passkeys(user)) >= MAX_PASSKEYS:
            raise PasskeyRefused("too_many")
        said = _raw(text).get("response", {}).get("transports", [])
        transports = tuple(t for t in said if t in TRANSPORTS)[:8] if isinstance(said, list) else ()
        stored = Stored(auth.credential_data, auth.counter, transports)
        auth_id = row_id(auth.credential_data.credential_id)
        sealed = self._sealer.seal(stored.to_bytes(), webauthn_purpose(user, auth_id))
        row = Authenticator(
            id=auth_id,
            user=user,
            kind=KIND,
            name=name.strip()[:64] or "Passkey",
            sealed=sealed,
            key_id=self._sealer.key_id(sealed),
            created=self._clock.now(),
        )
        try:
            await self._durable.add_authenticator(row)
        except StoreUnavailable as exc:
            if exc.reason != DUPLICATE:
                raise
            raise PasskeyRefused("credential_taken") from None
        return row

    # -- shared checks -------------------------------------------------------------------------

    @property
    def _uv(self) -> UserVerificationRequirement:
        assert self.party is not None
        return fido.UserVerificationRequirement(self.party.user_verification)

    def _check_client(self, state: Any, client: CollectedClientData, kind: str) -> None:
        """What the browser wrote and signed: the ceremony, our challenge, our origin. Said
        before the library's own checks, for a reason the operator can act on."""
        assert self.party is not None
        if state is None:
            raise PasskeyRefused("expired")  # none waiting: used before (a replay), or too old
        if client.type != kind:
            raise PasskeyRefused("malformed", f"client data of type {str(client.type)[:40]!r}")
        if not hmac.compare_digest(fido_utils.websafe_decode(state["challenge"]), client.challenge):
            raise PasskeyRefused("wrong_challenge")
        if client.origin != self.party.origin:
            # The page that asked is not ours: a phishing site, or a proxy in between.
            raise PasskeyRefused("wrong_origin", f"origin {str(client.origin)[:120]!r}")

    def _check_flags(self, state: Any, data: AuthenticatorData) -> None:
        assert self.party is not None
        expected = fido.PublicKeyCredentialRpEntity(name="", id=self.party.rp_id).id_hash or b""
        if not hmac.compare_digest(expected, data.rp_id_hash):
            raise PasskeyRefused("wrong_origin", "signed for another relying party id")
        if not data.is_user_present():
            raise PasskeyRefused("no_user_presence")
        required = state["user_verification"] == fido.UserVerificationRequirement.REQUIRED
        if required and not data.is_user_verified():
            raise PasskeyRefused("no_user_verification")

    def _opened(self, row: Authenticator) -> Stored | None:
        try:
            return Stored.from_bytes(
                self._sealer.unseal(row.sealed, webauthn_purpose(row.user, row.id))
            )
        except (SealBroken, ValueError, KeyError, TypeError):
            return None  # named by `keys rotate`; never a pass

    async def _keep(self, ceremony: str, bound: str, state: dict[str, Any]) -> None:
        assert self._shared is not None
        assert self.party is not None
        data = json.dumps(
            {"challenge": state["challenge"], "user_verification": str(state["user_verification"])}
        )
        await self._shared.put(_key(ceremony, bound), data.encode(), self.party.timeout + 60)

    async def _take(self, ceremony: str, bound: str) -> Any:
        assert self._shared is not None
        raw = await self._shared.take(_key(ceremony, bound))
        if raw is None:
            return None
        state = json.loads(raw)
        uv = state.get("user_verification")
        state["user_verification"] = fido.UserVerificationRequirement(uv) if uv else None
        return state


def _key(ceremony: str, bound: str) -> str:
    # A digest of the session id: enough to tell sign-ins apart, nothing to replay.
    return f"webauthn:{ceremony}:{hashlib.sha256(bound.encode()).hexdigest()[:32]}"


def _descriptor(stored: Stored) -> PublicKeyCredentialDescriptor:
    return fido.PublicKeyCredentialDescriptor(
        type=fido.PublicKeyCredentialType.PUBLIC_KEY,
        id=stored.credential.credential_id,
        transports=list(stored.transports) or None,  # type: ignore[arg-type]
    )


def _raw(text: str) -> dict[str, Any]:
    if len(text) > MAX_ANSWER:
        raise PasskeyRefused("oversized", f"{len(text)} characters")
    try:
        found = json.loads(text)
    except ValueError:
        raise PasskeyRefused("malformed", "not JSON") from None
    if not isinstance(found, dict):
        raise PasskeyRefused("malformed", "not a JSON object")
    return found


def _parse(kind: Any, text: str) -> Any:
    """The browser's answer read by the library. Whatever it cannot read is `malformed`: it
    parses bytes an attacker chose (base64, JSON, CBOR, COSE), and may raise anything."""
    data = _raw(text)
    try:
        return kind.from_dict(data)
    except Exception as exc:  # hostile input into a foreign parser: anything may come out
        raise PasskeyRefused("malformed", f"{type(exc).__name__}") from None
