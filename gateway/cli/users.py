"""`crm-gateway users …`, `sessions revoke` and `recovery regenerate`: what IT does when a
phone is lost or someone is locked out. Tables for people, `--json` for scripts; exit 0 done,
1 failed (e.g. no such user), 2 the configuration or the arguments are wrong.

Durable state is changed directly in the store; state only the running gateway holds (a
lockout in its memory) is asked of it through the store, and it acts within seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from gateway.admin import accounts
from gateway.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit, when_utc
from gateway.cli.store_access import CLOCK, audit_admin, with_store
from gateway.config.model import Config
from gateway.model import canonical_user, format_interval
from gateway.policy.model import Policy, empty_policy
from gateway.policy.view import PolicyView
from gateway.stores import DurableStore

WAIT_FOR_GATEWAY = 5.0  # seconds `users unlock` waits to see the gateway act


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = commands.add_parser("users", help="enrolment, devices and lockouts of users")
    user_cmds = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    listing = user_cmds.add_parser("list", help="every user the policy or the store knows")
    show = user_cmds.add_parser("show", help="one user: authenticators, codes, devices")
    show.add_argument("user")
    reset = user_cmds.add_parser(
        "reset-2fa",
        help="lost phone: remove authenticators and recovery codes, end sessions and "
        "remembered devices; the user enrols again at the next sign-in",
    )
    reset.add_argument("user")
    unlock = user_cmds.add_parser("unlock", help="end a lockout after failed codes")
    unlock.add_argument("user")
    reset_interval = user_cmds.add_parser(
        "reset-interval",
        help="forget the verification interval the user chose: the policy's holds again",
    )
    reset_interval.add_argument("user")
    sessions = commands.add_parser("sessions", help="gateway sessions")
    session_cmds = sessions.add_subparsers(
        dest="sessions_command", required=True, metavar="COMMAND"
    )
    revoke = session_cmds.add_parser(
        "revoke",
        help="end every session of a user and forget their remembered devices (each asks for "
        "a second factor again)",
    )
    revoke.add_argument("user")
    revoke.add_argument(
        "--keep-devices",
        action="store_true",
        help="end the sessions only: remembered devices still skip the second factor",
    )
    codes = commands.add_parser("recovery", help="recovery codes")
    code_cmds = codes.add_subparsers(dest="recovery_command", required=True, metavar="COMMAND")
    regenerate = code_cmds.add_parser(
        "regenerate", help="new recovery codes for a user, printed once (the old ones stop)"
    )
    regenerate.add_argument("user")
    for sub in (listing, show, reset, unlock, reset_interval, revoke, regenerate):
        sub.add_argument("-c", "--config", default="gateway.yaml")
        sub.add_argument("--json", action="store_true", help="machine-readable output")


# How `users show` names an authenticator's kind.
KINDS = {"totp": "authenticator app", "webauthn": "passkey or security key"}


def _interval(seconds: float | None) -> str | None:
    return None if seconds is None else format_interval(seconds)


async def _interval_state(
    store: DurableStore, user: str, policy: Policy | None
) -> dict[str, str | None]:
    """The interval the policy sets (the cap), the one the user chose, and the one in force."""
    settings = PolicyView.of(policy or empty_policy()).settings(user)
    found = await accounts.interval_state(store, user, settings)
    return {
        "policy": format_interval(found.cap),
        "chosen": _interval(found.chosen),
        "chosen_at": when_utc(found.chosen_at) if found.chosen is not None else None,
        "in_force": format_interval(found.effective),
        "overruled": "yes" if found.overruled else None,
    }


async def _state(store: DurableStore, user: str) -> dict[str, Any]:
    found = await accounts.user_state(store, user, CLOCK.now())
    return {
        "user": user,
        "authenticators": [
            {
                "id": a.id,
                "name": a.name,
                "kind": a.kind,
                "added": when_utc(a.created),
                "last_used": when_utc(a.last_used),
            }
            for a in found.authenticators
        ],
        "recovery_codes_left": found.recovery_codes_left,
        "last_verified": when_utc(found.last_verified),
        "remembered_devices": [
            {"id": d.id, "label": d.label, "until": when_utc(d.remembered_until)}
            for d in found.remembered
        ],
    }


def users_command(args: argparse.Namespace, config: Config, policy: Policy | None) -> int:
    command = getattr(args, f"{args.command}_command")  # users, sessions or recovery
    if command == "list":
        return _list(args, config, policy)
    user = canonical_user(args.user)
    if not user:
        print("the user name is empty", file=sys.stderr)
        return EXIT_USAGE
    if command == "show":
        return _show(args, config, policy, user)
    if command == "reset-2fa":
        return _reset(args, config, user)
    if command == "unlock":
        return _unlock(args, config, user)
    if command == "reset-interval":
        return _reset_interval(args, config, user)
    if command == "revoke":
        return _revoke(args, config, user)
    return _regenerate(args, config, user)


def _revoke(args: argparse.Namespace, config: Config, user: str) -> int:
    """Sessions end, and remembered devices are forgotten unless --keep-devices: after a
    revocation an old device cookie must not skip the second factor (the usual reason to
    revoke is a device or a password that is no longer the user's alone)."""

    async def revoke(store: DurableStore) -> int | None:
        now = CLOCK.now()
        devices = await accounts.revoke_sessions(store, user, now, keep_devices=args.keep_devices)
        kept = "kept" if devices is None else devices
        await audit_admin(config, store, "admin.sessions_revoked", user=user, devices=kept)
        return devices

    devices = with_store(config, revoke)
    done: dict[str, str | int]
    if devices is None:
        done = {"user": user, "sessions": "revoked", "devices": "kept"}
        line = f"sessions of {user} revoked; remembered devices kept (--keep-devices)"
    else:
        done = {"user": user, "sessions": "revoked", "devices_forgotten": devices}
        line = f"sessions of {user} revoked; {_devices(devices)} forgotten"
    emit(args.json, done, [line])
    return EXIT_OK


def _devices(count: int) -> str:
    return f"{count} remembered device{'s' if count != 1 else ''}"


def _list(args: argparse.Namespace, config: Config, policy: Policy | None) -> int:
    async def gather(store: DurableStore) -> list[dict[str, Any]]:
        names = await accounts.known_users(store, policy.users if policy else ())
        return [await _state(store, name) for name in names]

    rows = with_store(config, gather)
    lines = [
        f"{'USER':<20} {'AUTHENTICATORS':>14} {'CODES LEFT':>10} {'DEVICES':>7}  LAST VERIFIED"
    ]
    lines += [
        f"{r['user']:<20} {len(r['authenticators']):>14} {r['recovery_codes_left']:>10} "
        f"{len(r['remembered_devices']):>7}  {r['last_verified'] or 'never'}"
        for r in rows
    ]
    emit(args.json, rows, lines)
    return EXIT_OK


def _reset(args: argparse.Namespace, config: Config, user: str) -> int:
    async def reset(store: DurableStore) -> dict[str, Any]:
        done = await accounts.reset_two_step(store, user, CLOCK.now())
        await audit_admin(
            config,
            store,
            "admin.reset_2fa",
            user=user,
            authenticators=done.authenticators,
            devices=done.devices,
        )
        return {
            "user": user,
            "authenticators_removed": done.authenticators,
            "devices_forgotten": done.devices,
        }

    done = with_store(config, reset)
    emit(
        args.json,
        done,
        [
            f"{user}: {done['authenticators_removed']} authenticators removed, recovery codes "
            f"deleted, {_devices(done['devices_forgotten'])} forgotten, sessions ended",
            "they enrol again at their next sign-in; the running gateway tells them so",
        ],
    )
    return EXIT_OK


def _show(args: argparse.Namespace, config: Config, policy: Policy | None, user: str) -> int:
    async def show(store: DurableStore) -> dict[str, Any]:
        return {**await _state(store, user), "interval": await _interval_state(store, user, policy)}

    state = with_store(config, show)
    known = policy is not None and any(canonical_user(u) == user for u in policy.users)
    interval = state["interval"]
    held = state["authenticators"] or state["remembered_devices"] or interval["chosen"]
    if not known and not held:
        print(f"no user {user!r} in the policy or the store", file=sys.stderr)
        return EXIT_FAILED
    lines = [
        f"user: {user}",
        f"authenticators: {len(state['authenticators'])}",
        *(
            f"  - {a['name']}: {KINDS.get(a['kind'], a['kind'])} (added {a['added']}, "
            f"last used {a['last_used'] or 'never'})"
            for a in state["authenticators"]
        ),
        f"recovery codes left: {state['recovery_codes_left']}",
        f"last verified: {state['last_verified'] or 'never'}",
        f"remembered devices: {len(state['remembered_devices'])}",
        *(f"  - {d['label']} until {d['until']}" for d in state["remembered_devices"]),
        f"interval: {interval['in_force']} in force (the policy's: {interval['policy']}; "
        f"{_chosen(interval)})",
    ]
    emit(args.json, state, lines)
    return EXIT_OK


def _chosen(interval: dict[str, str | None]) -> str:
    if interval["chosen"] is None:
        return "none chosen"
    said = f"chosen: {interval['chosen']} on {interval['chosen_at']}"
    return f"{said}, longer than the policy allows now" if interval["overruled"] else said


def _reset_interval(args: argparse.Namespace, config: Config, user: str) -> int:
    """The user's own interval forgotten: the policy's holds at their next sign-in, and in
    their open sessions once the running gateway acts (within seconds)."""

    async def reset(store: DurableStore) -> bool:
        done = await accounts.reset_interval(store, user, CLOCK.now())
        outcome = "ok" if done else "refused"
        reason = "" if done else "none_chosen"
        await audit_admin(config, store, "admin.interval_reset", outcome, user=user, reason=reason)
        return done

    if not with_store(config, reset):
        emit(
            args.json,
            {"user": user, "reset": False},
            [f"{user} chose no interval of their own: the policy's holds already"],
        )
        return EXIT_OK
    emit(
        args.json,
        {"user": user, "reset": True},
        [f"{user}'s own interval forgotten: the policy's holds (open sessions follow soon)"],
    )
    return EXIT_OK


def _unlock(args: argparse.Namespace, config: Config, user: str) -> int:
    async def unlock(store: DurableStore) -> bool:
        request = await store.request_action(accounts.UNLOCK, user, CLOCK.now())
        await audit_admin(config, store, "admin.unlock", user=user)
        waited = 0.0
        while waited < WAIT_FOR_GATEWAY:
            if await store.request_done(request):
                return True
            await asyncio.sleep(0.2)
            waited += 0.2
        return False

    done = with_store(config, unlock)
    if done:
        emit(args.json, {"user": user, "unlocked": True}, [f"{user} unlocked"])
        return EXIT_OK
    emit(
        args.json,
        {"user": user, "unlocked": False, "requested": True},
        [f"unlock of {user} requested: the gateway is not running, or has not acted yet"],
    )
    return EXIT_OK


def _regenerate(args: argparse.Namespace, config: Config, user: str) -> int:
    async def regenerate(store: DurableStore) -> list[str] | None:
        codes = await accounts.regenerate_codes(store, user, CLOCK.now())
        if codes is None:
            await audit_admin(
                config,
                store,
                "admin.recovery_regenerated",
                "refused",
                user=user,
                reason="no_authenticator",
            )
            return None
        await audit_admin(config, store, "admin.recovery_regenerated", user=user)
        return codes

    codes = with_store(config, regenerate)
    if codes is None:
        print(f"{user} has no authenticator: recovery codes come with one", file=sys.stderr)
        return EXIT_FAILED
    emit(
        args.json,
        {"user": user, "recovery_codes": codes},
        [f"new recovery codes for {user} (the old ones no longer work):", *codes],
    )
    return EXIT_OK
