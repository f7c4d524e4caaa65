"""`crm-gateway demo`: the demo CRM and the gateway in one process, printed for a person."""

from __future__ import annotations

import asyncio
import shutil
import sys
from importlib.resources import files
from pathlib import Path

from aiohttp import web

from gateway.clock import SystemClock
from gateway.config.load import parse_config
from gateway.config.model import Listen, StoreConfig
from gateway.crypto import new_key_line
from gateway.demo.crm import DEMO_USERS, build_crm_app
from gateway.policy.tokens import digest
from gateway.stores import open_durable
from gateway.web.app import build_app
from gateway.web.server import (
    AdminListener,
    bind,
    configure_logging,
    install_fast_loop,
    serve_until_stopped,
)


def prepare_data_dir(data_dir: Path) -> None:
    """Keys and an editable copy of the demo policy, made once; later runs keep them, so a
    phone enrolled in the demo keeps working."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in ("session.keys", "seal.keys"):
        path = data_dir / name
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(new_key_line("demo1") + "\n", encoding="utf-8")
    policies = data_dir / "policies"
    if not policies.exists():
        policies.mkdir()
        for source in files("gateway.demo").joinpath("policies").iterdir():
            if source.name.endswith(".yaml"):
                (policies / source.name).write_text(source.read_text("utf-8"), "utf-8")


async def register_demo_tokens(settings: StoreConfig) -> None:
    """The banner's API tokens work at once: each demo user's is registered the first time
    (a token an administrator revoked in the demo stays revoked). The demo owns its store:
    made here when missing, as the gateway would."""
    store = await open_durable(settings, create=True)
    try:
        known = {row[0] for row in await store.tokens()}
        for user in DEMO_USERS:
            token_id = f"tok_demo_{user.name}"
            if token_id not in known:
                await store.add_token(
                    token_id, user.name, digest(user.api_token), "demo", SystemClock().now()
                )
    finally:
        await store.close()


def command(program: str = "crm-gateway") -> str:
    """How to type one of our commands from here: the full path into the virtual environment
    when it is not on PATH (after `make demo`, `crm-gateway` alone is "command not found")."""
    here = Path(sys.argv[0]).resolve().parent / program
    if shutil.which(program) == str(here) or not here.exists():
        return program
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


def demo_config_text(gateway_port: int, crm_port: int, data_dir: Path) -> str:
    prepare_data_dir(data_dir)
    template = files("gateway.demo").joinpath("gateway.yaml").read_text(encoding="utf-8")
    return template.format(gateway_port=gateway_port, crm_port=crm_port, data_dir=data_dir)


def run_demo(listen: Listen, crm_listen: Listen, data_dir: Path) -> int:
    install_fast_loop()
    crm_sock = bind(crm_listen)
    gw_sock = bind(listen)
    crm_port = crm_sock.getsockname()[1]
    gw_port = gw_sock.getsockname()[1]
    text = demo_config_text(gw_port, crm_port, data_dir)
    config = parse_config(text, "demo gateway.yaml")
    # On disk too, so the admin commands can be tried on the demo's store:
    # crm-gateway users list -c var/demo/gateway.yaml
    (data_dir / "gateway.yaml").write_text(text, encoding="utf-8")
    configure_logging(config.logging)
    metrics = ""
    admin = AdminListener(config.admin.listen, 1) if config.admin.listen else None
    if admin is not None:
        host, port = admin.start()
        metrics = f"  Metrics (Prometheus): http://{host}:{port}/metrics\n"

    async def main() -> None:
        await register_demo_tokens(config.state.durable)
        crm_runner = web.AppRunner(build_crm_app(), access_log=None)
        await crm_runner.setup()
        await web.SockSite(crm_runner, crm_sock).start()

        async def announce() -> None:
            users = "\n".join(
                f"    {u.name:<6} password {u.password:<11} API token {u.api_token}"
                for u in DEMO_USERS
            )
            cli = command()
            config_file = data_dir / "gateway.yaml"
            base = f"http://{listen.host}:{gw_port}"
            print(
                f"\n  Demo CRM behind crm-gateway: http://{listen.host}:{gw_port}/\n"
                f"  (the CRM itself listens on http://{crm_listen.host}:{crm_port}/; "
                "use the gateway's address)\n\n"
                f"  Demo users:\n{users}\n\n"
                "  Sign in at /login with a user above: the gateway then asks for a code from\n"
                "  an authenticator app. On first sign-in, scan the QR code it shows with\n"
                "  your phone (or type the key), and save the recovery codes.\n"
                f"  Account page: http://{listen.host}:{gw_port}{config.path_prefix}account\n"
                f"  Helpdesk console: http://{listen.host}:{gw_port}{config.path_prefix}admin/\n"
                "  (alice: helpdesk, may unlock and reset; bob: auditor, may look)\n"
                f"  Policy: {data_dir / 'policies'} (edit it; the gateway reloads it)\n"
                f"  carol gets her code by text message: it is written to\n"
                f"  {data_dir / 'outbox.jsonl'} (the demo's SMS and e-mail outbox)\n\n"
                f"  Health: http://{listen.host}:{gw_port}{config.path_prefix}readyz\n"
                f"{metrics}"
                f"  API: curl -H 'Authorization: Bearer demo-token-alice' {base}/api/contacts\n"
                f"  Audit trail: {data_dir / 'audit.jsonl'}, or try\n"
                f"    {cli} audit tail -c {config_file}\n"
                f"    {cli} users list -c {config_file}\n"
                "  Stop with Ctrl-C.\n",
                flush=True,
            )

        try:
            await serve_until_stopped(build_app(config), gw_sock, started=announce)
        finally:
            await crm_runner.cleanup()
            if admin is not None:
                admin.stop()

    asyncio.run(main())
    return 0
