"""`crm-gateway policy explain|reload`: why a user from an address gets the answer they get
(the running gateway's own decide), and confirming a policy change the file watcher holds
back."""

from __future__ import annotations

import argparse
import sys

from gateway.admin.explain import explain_request, fresh_line, settings_lines
from gateway.cli.output import EXIT_OK, EXIT_USAGE, loaded_or_reported
from gateway.cli.store_access import audit_admin, with_store
from gateway.config.model import Config
from gateway.errors import BadRequest
from gateway.model import canonical_user
from gateway.policy.change import CONFIRMED_NOTE
from gateway.policy.inforce import read_snapshot
from gateway.policy.load import load_policies
from gateway.policy.model import Policy
from gateway.policy.view import PolicyView
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
    explain.add_argument(
        "--case-insensitive-paths",
        action="store_true",
        help="match paths in any case, as for a CRM on IIS (the config's "
        "upstream.case_insensitive_paths says so without this)",
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
    digest = read_snapshot(config.policies).digest

    async def confirm(store: DurableStore) -> None:
        await store.set_note(CONFIRMED_NOTE, digest)
        await audit_admin(config, store, "admin.policy_confirmed", digest=digest[:16])

    with_store(config, confirm)
    print(
        f"confirmed {config.policies} ({len(policy.users)} users, {len(policy.paths)} path "
        "rules): a running gateway loads them within a few seconds"
    )
    return EXIT_OK


def explain(args: argparse.Namespace, policy: Policy | None, *, fold: bool = False) -> int:
    """`policy`: the config's, already loaded; None with --policies (loaded here). The
    answer is gateway.signin.decision.decide's, the function the running gateway asks.
    `fold`: the config's upstream.case_insensitive_paths (--case-insensitive-paths too)."""
    fold = fold or args.case_insensitive_paths
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
    try:
        found = explain_request(
            view,
            name,
            args.ip,
            args.method,
            args.path,
            token=args.token,
            unknown_token=args.unknown_token,
            fold=fold,
        )
    except BadRequest as exc:  # say what the gateway would answer
        print(f"decision: deny (400 path_ambiguous): {exc.detail}")
        return EXIT_OK
    decision = found.decision
    shown_user = f"user {view.user_for(name).name}" if name else "an unknown user"
    print(f"request: {found.method} {found.path} from {args.ip} by {shown_user}")
    if fold:
        print("paths: matched in any case, as the CRM's web server reads them (IIS)")
    print(f"decision: {decision.action.value} ({decision.reason})")
    for step in decision.steps:
        print(f"  - {step}")
    for what, value in settings_lines(found.settings):
        print(f"{what}: {value}")
    if fresh_line(decision):
        print(f"this path: {fresh_line(decision)}")
    for step in found.settings.steps:
        print(f"  - {step}")
    return EXIT_OK
