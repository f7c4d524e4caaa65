"""gateway.lazy: a module whose code runs at the first read of a name in it (fido2 for
passkeys), on a package of the test's own; and the libraries a gateway imports at their
first use instead (jinja2 for pages, segno for QR codes, aiosmtplib for e-mail)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.lazy import lazy_module


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "lazypkg"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "heavy.py").write_text("import builtins\nbuiltins.HEAVY_RUNS += 1\nVALUE = 42\n")
    sys.path.insert(0, str(tmp_path))
    import builtins

    builtins.HEAVY_RUNS = 0  # type: ignore[attr-defined]
    yield folder
    sys.path.remove(str(tmp_path))
    for name in ("lazypkg", "lazypkg.heavy"):
        sys.modules.pop(name, None)
    del builtins.HEAVY_RUNS  # type: ignore[attr-defined]


def test_the_code_runs_at_the_first_read_only(package: Path) -> None:
    import builtins

    heavy = lazy_module("lazypkg.heavy")
    assert builtins.HEAVY_RUNS == 0  # type: ignore[attr-defined]

    assert heavy.VALUE == 42
    assert heavy.VALUE == 42
    assert builtins.HEAVY_RUNS == 1  # type: ignore[attr-defined]


def test_an_import_of_it_later_finds_the_same_module(package: Path) -> None:
    heavy = lazy_module("lazypkg.heavy")

    import lazypkg.heavy  # type: ignore[import-not-found]

    assert lazypkg.heavy is heavy
    assert lazypkg.heavy.VALUE == 42
    assert lazy_module("lazypkg.heavy") is heavy


def test_a_module_that_is_not_there_is_said_at_once() -> None:
    with pytest.raises(ModuleNotFoundError):
        lazy_module("gateway.no_such_module")


def test_a_gateway_without_passkeys_configured_has_not_loaded_fido2() -> None:
    """The point of it: importing the whole app leaves fido2's server and models unrun."""
    import subprocess

    code = (
        "import sys, gateway.web.app\n"
        "print(*(type(sys.modules[m]).__name__ for m in ('fido2.server', 'fido2.webauthn')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["_LazyModule", "_LazyModule"]  # a module once its code ran


# In an interpreter of its own: in the test session, other tests have imported them already.
_FIRST_USES = """
import asyncio, socket, sys
from pathlib import Path
import gateway.cli.main, gateway.web.app, gateway.web.server

def loaded():
    print("loaded", *(name in sys.modules for name in ("jinja2", "segno", "xml", "aiosmtplib")))

loaded()
from gateway.config.messaging import SmtpProvider
from gateway.demo.crm import build_crm_app
from gateway.senders import Message, SmtpSender
from tests.conftest import serve
from tests.signin_kit import Browser, start_signin_gateway

async def sign_in_and_enrol():
    crm = await serve(build_crm_app())
    gw = await start_signin_gateway(crm.url, Path(sys.argv[1]))
    browser = Browser(gw)
    try:
        # The CRM's login page is the CRM's own: signing in there shows no page of ours.
        assert await browser.crm_login("alice", "alice-demo") == "/_gateway/enrol"
        loaded()
        status, html, _ = await browser.get("/_gateway/enrol")
        assert status == 200 and "<svg" in html, html[:300]
        loaded()
    finally:
        await browser.close()
        await gw.served.runner.cleanup()
        await crm.runner.cleanup()

async def send_mail():
    with socket.socket() as closed:  # bound, not listening: the connection is refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        smtp = SmtpProvider(host="127.0.0.1", port=port, security="none", retries=0)
        delivery = await SmtpSender(smtp).send(Message("alice@example.com", "x", "s"))
        assert not delivery.ok and delivery.attempts == 1, delivery

asyncio.run(sign_in_and_enrol())
asyncio.run(send_mail())
loaded()
"""


def test_pages_qr_codes_and_e_mail_load_their_libraries_at_their_first_use(
    tmp_path: Path,
) -> None:
    """jinja2 (about 2 MB of a worker's memory), segno with the xml.sax it writes SVG with
    (0.7 MB) and aiosmtplib (0.4 MB): none of them with the gateway's code or its CLI, nor at
    a sign-in that shows no page of ours; each at the first page, QR code or e-mail."""
    import subprocess

    run = subprocess.run(
        [sys.executable, "-c", _FIRST_USES, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],  # where `tests` is a package
        check=False,
    )
    assert run.returncode == 0, run.stderr
    said = [line for line in run.stdout.splitlines() if line.startswith("loaded ")]  # not audit
    assert said == [
        "loaded False False False False",
        "loaded False False False False",
        "loaded True True True False",
        "loaded True True True True",
    ]


def test_the_run_command_does_not_load_detect_logins_crm_reader() -> None:
    """main.py imports every command's module for its parser; detect-login's reader of a CRM
    (gateway.setup: an HTML parser, forms, an HTTP client, about 0.3 MB) is imported by the
    command itself, so `crm-gateway run`'s workers do not carry it."""
    import subprocess

    code = (
        "import sys, gateway.cli.main, gateway.web.app, gateway.web.server\n"
        "print(*(name in sys.modules for name in "
        "('gateway.setup.detect', 'gateway.setup.section', 'html.parser')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False", "False"]
