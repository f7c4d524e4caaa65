"""`crm-gateway policy explain|reload`: why a user from an address gets the answer they get
(the running gateway's own decide), and confirming a policy change the file watcher holds
back."""

from __future__ import annotations

import argparse
import sys

from gateway.cli.output import EXIT_OK, EXIT_USAGE, loaded_or_reported
from gateway.cli.store import audit_admin, with_store
from gateway.config.model import Config
from gateway.errors import BadRequest
from gateway.fields import method_override
from gateway.model import canonical_user, format_interval
from gateway.policy.change import CONFIRMED_NOTE, files_digest
from gateway.policy.load import load_policies
from gateway.policy.model import Policy
from gateway.policy.paths import normalize_path
from gateway.policy.rules import resolve_settings
from gateway.policy.view import PolicyView
from gateway.signin.decision import Asks, Kind, Request, Who, decide
from gateway.stores import DurableStore


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = commands.add_parser("policy", help="explain what the policies decide")
    policy_cmds = policy.add_subparsers(dest="policy_command", required=True, metavar="COMMAND")
    explain = policy_cmds.add_parser("explain", help="the decision for one request, with its rules")
    explain.add_argument("-c", "--config", default="gateway.yaml")
    reload = policy_cmds.add_parser(
        "reload",
        help="confirm the policy files as they are now: a running gateway loads them within "
        "seconds, even a change its file watcher held back",
    )
    reload.add_argument("-c", "--config", default="gateway.yaml")
    explain.add_argument("--policies", help="a policy folder (instead of the config's)")
    explain.add_argument("--user", help="the user name (omit for an anonymous request)")
    explain.add_argument("--ip", required=True)
    explain.add_argument("--method", default="GET")
    explain.add_argument("--path", default="/")
    explain.add_argument(
        "--token", action="store_true", help="judge it as a request with the user's API token"
    )
    explain.add_argument(
        "--unknown-token", action="store_true", help="as an unregistered API token"
    )


def load_policy_or_report(folder: str) -> Policy | None:
    """The policies, their warnings (rules never used or undercut…) printed; None and every
    problem printed when they cannot be loaded."""
    return loaded_or_reported(load_policies, folder)


def confirm_policy(config: Config, policy: Policy | None) -> int:
    """`policy reload`: the files (already loaded and checked by the caller) confirmed through
    the durable store, which every worker and instance of the gateway reads."""
    if policy is None:
        print("no policies: the config names no `policies` folder", file=sys.stderr)
        return EXIT_USAGE
    digest = files_digest(config.policies)

    async def confirm(store: DurableStore) -> None:
        await store.set_note(CONFIRMED_NOTE, digest)
        await audit_admin(config, store, "admin.policy_confirmed", digest=digest[:16])

    with_store(config, confirm)
    print(
        f"confirmed {config.policies} ({len(policy.users)} users, {len(policy.paths)} path "
        "rules): a running gateway loads them within a few seconds"
    )
    return EXIT_OK


def explain(args: argparse.Namespace, policy: Policy | None) -> int:
    """`policy`: the config's, already loaded; None with --policies (loaded here). The
    answer is gateway.signin.decision.decide's, the function the running gateway asks."""
    if args.policies:
        policy = load_policy_or_report(args.policies)
        if policy is None:
            return EXIT_USAGE
    if policy is None:
        print("no policies: give --policies DIR or a config with `policies`", file=sys.stderr)
        return EXIT_USAGE
    view = PolicyView.of(policy)
    name = canonical_user(args.user) if args.user else ""
    if name and name not in view.users:
        print(f"user {args.user!r} is in no policy file: judged as unknown", file=sys.stderr)
    method = args.method.upper()
    raw_path, _, raw_query = args.path.partition("?")
    try:
        path = normalize_path(raw_path)
    except BadRequest as exc:  # say what the gateway would answer
        print(f"decision: deny (400 path_ambiguous): {exc.detail}")
        return EXIT_OK
    refused = "method_ambiguous" if method_override((), method, raw_query) else ""
    if args.token or args.unknown_token:
        who = Who(Kind.TOKEN, name, token_known=not args.unknown_token, refused=refused)
    else:
        who = Who(Kind.SESSION if name else Kind.ANONYMOUS, name, refused=refused)
    decision = decide(view, who, Request(Asks.CRM, args.ip, method, path))
    shown_user = f"user {view.user_for(name).name}" if name else "an unknown user"
    print(f"request: {method} {path} from {args.ip} by {shown_user}")
    print(f"decision: {decision.action.value} ({decision.reason})")
    for step in decision.steps:
        print(f"  - {step}")
    settings = view.settings(name) if name else resolve_settings(policy, None)
    print(f"interval: {format_interval(settings.interval)}")
    print(f"factors: {', '.join(settings.factors) or 'none'}")
    shown = (
        f"required from {settings.required_from}"
        if settings.required_from
        else settings.enforcement
    )
    print(f"enforcement: {shown}")
    remember = format_interval(settings.remember_device) if settings.remember_device else "never"
    print(f"remember device: {remember}")
    print(f"verify again within a session: {format_interval(settings.reverify)}")
    if decision.fresh:
        which = " or ".join(decision.fresh_factors) or "any factor"
        print(f"this path: {which} passed within {format_interval(decision.fresh)}")
    for step in settings.steps:
        print(f"  - {step}")
    return EXIT_OK
