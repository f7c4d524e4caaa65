"""One user's sign-in as the durable store holds it, and what an administrator changes in it:
sessions revoked, two-step verification reset (a lost phone), new recovery codes, a device
forgotten, the interval they chose forgotten. The same functions serve `crm-gateway users …`
and the helpdesk console, so a reset means the same thing wherever it is asked for. The
caller records the audit event.

State only a running gateway holds (a lockout in the shared store, a notice it sends) is
asked of it through the store (`request_action`), which every worker looks at within seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.factors import recovery
from gateway.model import Settings, canonical_user
from gateway.signin.interval import applies, with_choice
from gateway.stores import AuditQuery, Authenticator, Device, DurableStore

# A second factor passed, of any kind (app, SMS, e-mail, recovery code, passkey; at sign-in or
# a step up), an app's first code at enrolment and a passkey's registration (signed).
VERIFIED_EVENTS = ("challenge.passed", "enrol.completed", "webauthn.registered")
UNLOCK = "unlock"  # the action a running gateway carries out (gateway.web.revocations)
RESET_NOTICE = "notice:reset_by_admin"  # … and the notice it sends the user
# … and the user's open sessions taking up the interval choice the store holds now
FOLLOW_INTERVAL = "follow_interval"


@dataclass(frozen=True)
class UserState:
    """What the store holds for a user: no secret (an authenticator's sealed key is never
    read out of its row by a caller of this module)."""

    user: str
    authenticators: tuple[Authenticator, ...]
    recovery_codes_left: int
    last_verified: float  # 0: never
    devices: tuple[Device, ...]  # not revoked, oldest first
    remembered: tuple[Device, ...]  # those still remembered now

    @property
    def on_file(self) -> bool:
        return bool(self.authenticators or self.remembered or self.recovery_codes_left)


@dataclass(frozen=True)
class IntervalState:
    """The verification interval of a user: the policy's (the cap), the one they chose
    (None: none), and the one in force (the chosen one where it is stricter), in seconds;
    0 is `always`."""

    cap: float
    chosen: float | None
    chosen_at: float  # 0 without a choice
    effective: float
    reverify: float  # how long a verification lasts in a session, with the choice

    @property
    def overruled(self) -> bool:
        """A choice the policy no longer allows (tightened since): the policy's holds."""
        return self.chosen is not None and not applies(self.cap, self.chosen)


@dataclass(frozen=True)
class Reset:
    authenticators: int  # removed
    devices: int  # remembered devices forgotten


async def last_verified(
    store: DurableStore, user: str, authenticators: Iterable[Authenticator]
) -> float:
    """When `user` last passed a second factor, whichever: an authenticator app notes it on
    itself (`authenticators`: the user's, as read); SMS, e-mail and recovery codes only in
    the audit trail (as the app does too)."""
    used = [a.last_used or 0.0 for a in authenticators]
    passed = await store.audit_events(
        AuditQuery(user=user, names=VERIFIED_EVENTS, limit=1, newest_first=True)
    )
    return max([*used, *(event.time for _, event in passed)], default=0.0)


async def user_state(store: DurableStore, user: str, now: float) -> UserState:
    devices = tuple(await store.devices(user))
    authenticators = tuple(await store.authenticators(user))
    return UserState(
        user=user,
        authenticators=authenticators,
        recovery_codes_left=await store.recovery_codes_left(user),
        last_verified=await last_verified(store, user, authenticators),
        devices=devices,
        remembered=tuple(d for d in devices if d.remembered_until > now),
    )


async def known_users(store: DurableStore, policy_users: Iterable[str]) -> list[str]:
    """Every user the policy names or the store holds something for, canonical, sorted."""
    names = {canonical_user(u) for u in policy_users}
    names |= set(await store.known_users())
    return sorted(names)


async def forget_devices(store: DurableStore, user: str, now: float) -> int:
    """Revoke every device of `user` (a remembered one, or one inside the interval, would
    skip the second factor); the count is of those remembered, as `users show` lists them."""
    remembered = sum(1 for d in await store.devices(user) if d.remembered_until > now)
    await store.revoke_devices(user, now)
    return remembered


async def revoke_sessions(
    store: DurableStore, user: str, now: float, *, keep_devices: bool = False
) -> int | None:
    """Every session of `user` ends (each worker sees it within seconds), and their devices
    are forgotten unless `keep_devices`: after a revocation an old device cookie must not
    skip the second factor. The remembered devices forgotten, or None when kept."""
    await store.revoke_sessions(user, now)
    return None if keep_devices else await forget_devices(store, user, now)


async def reset_two_step(store: DurableStore, user: str, now: float) -> Reset:
    """A lost phone: authenticators (apps and passkeys) and recovery codes removed, devices
    forgotten, sessions ended, lockouts lifted and the user told, by the running gateway.
    They enrol again at their next sign-in."""
    removed = await store.remove_authenticators(user)
    await store.replace_recovery_codes(user, [], now)
    devices = await forget_devices(store, user, now)
    await store.revoke_sessions(user, now)
    await store.request_action(UNLOCK, user, now)
    # The running gateway tells the user (it holds the senders and knows their language).
    await store.request_action(RESET_NOTICE, user, now)
    return Reset(removed, devices)


async def regenerate_codes(store: DurableStore, user: str, now: float) -> list[str] | None:
    """A new set of recovery codes (the old stop working), for the caller to show once or
    send; None when the user has no authenticator (codes come with one)."""
    if not await store.authenticators(user):
        return None
    codes = recovery.new_codes()
    await store.replace_recovery_codes(user, recovery.digests(user, codes), now)
    return codes


async def interval_state(store: DurableStore, user: str, settings: Settings) -> IntervalState:
    """The user's interval: `settings` as the policy resolves them for the user."""
    found = await store.interval_choice(user)
    chosen = None if found is None else found.seconds
    held = with_choice(settings, chosen)
    return IntervalState(
        cap=settings.interval,
        chosen=chosen,
        chosen_at=0.0 if found is None else found.chosen,
        effective=held.interval,
        reverify=held.reverify,
    )


async def reset_interval(store: DurableStore, user: str, now: float) -> bool:
    """Forget the interval the user chose: the policy's holds again, at their next sign-in
    and, once the running gateway acts (within seconds), in their open sessions. False when
    they had chosen none (nothing is asked of the gateway then)."""
    if not await store.clear_interval_choice(user):
        return False
    await store.request_action(FOLLOW_INTERVAL, user, now)
    return True


async def forget_device(store: DurableStore, user: str, device_id: str, now: float) -> bool:
    """One of the user's own live devices forgotten; False when they have none such."""
    return await store.revoke_device(user, device_id, now)
