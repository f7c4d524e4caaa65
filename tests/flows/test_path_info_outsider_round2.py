"""A second outsider's attacks on the script rule after 017becb: requests a real Apache, nginx +
PHP-FPM, IIS or CGI server runs as a protected script, sent through the real gateway to the
stand-in PHP CRM of test_path_info_outsider_attacks (which notes every path it is handed). A
hole or a false refusal is a strict xfail asserting the right answer; a defence that holds
passes."""

from __future__ import annotations

import io
import textwrap
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from gateway.cli.main import main as cli
from gateway.model import PHISHING_RESISTANT
from gateway.policy.load import load_policies
from gateway.policy.model import Policy
from gateway.policy.rules import check_path
from gateway.policy.tokens import digest
from gateway.web.guard import GUARD
from gateway.web.keys import DURABLE
from tests.conftest import Served, send_raw
from tests.flows.test_case_insensitive_paths import ask, ask_endpoint, status_of
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.flows.test_path_info_outsider_attacks import ADMIN, HEAD, RAN, alice, crm, sent
from tests.flows.test_paths_case_attacks import PHP_LOGIN
from tests.signin_kit import GATEWAY_COOKIE, Start
from tests.web.test_guard import ALICE_TOKEN

__all__ = ["crm"]  # the stand-in CRM's fixture, used by name


def policy_of(tmp_path: Path, paths: str) -> Policy:
    (tmp_path / "p.yaml").write_text(HEAD + textwrap.dedent(paths))
    return load_policies(tmp_path)


# --- holes -----------------------------------------------------------------------------------

# Default deny: /admin.php has no rule, so it is refused (path_no_rule); only PDFs and the
# front page are open. A script no rule matches "adds nothing", so its path info passes.
DEFAULT_DENY = """\
  - {path: /index.php, allow: [authenticated]}
  - {path: "/**/*.pdf", allow: [authenticated]}
"""


async def test_a_script_denied_by_default_stays_closed_below(crm: Served, start: Start) -> None:
    b = await alice(crm, start, DEFAULT_DENY)
    try:
        assert await sent(b, crm, "/admin.php") == (403, False)  # held: denied by default
        assert await sent(b, crm, "/crm/report.pdf") == (200, True)
        assert await sent(b, crm, "/admin.php/x.pdf") == (403, False), "PHP runs /admin.php"
    finally:
        await b.close()


# Scripts a server runs for a longer path that script_paths does not recognise.
STILL_UNLISTED = [
    # Apache's ScriptAlias /cgi-bin/ (Debian's default): every file is a CGI, with or without an
    # extension, and /cgi-bin/admin/x runs /cgi-bin/admin with PATH_INFO /x
    ("/cgi-bin/admin", "/cgi-bin/admin/x", False),
    # mod_fcgid's AddHandler fcgid-script .fcgi: path info as for a CGI
    ("/app.fcgi", "/app.fcgi/users/delete", False),
    # ELMAH on IIS: /elmah.axd/download hands out the whole error log, /elmah.axd/detail one
    # error with its request's cookies
    ("/elmah.axd", "/elmah.axd/download", True),
]


@pytest.mark.parametrize(("script", "target", "fold"), STILL_UNLISTED)
async def test_a_script_still_unlisted_is_closed_below(
    crm: Served, start: Start, script: str, target: str, fold: bool
) -> None:
    b = await alice(crm, start, f"  - {{path: {script}, allow: [role:admin]}}\n" + ADMIN, fold=fold)
    try:
        assert await sent(b, crm, script) == (403, False)  # held
        assert await sent(b, crm, target) == (403, False), f"the server runs {script}"
    finally:
        await b.close()


async def test_a_folders_index_closed_by_a_glob_stays_closed(crm: Served, start: Start) -> None:
    b = await alice(crm, start, '  - {path: "/admin/*.php", allow: [role:admin]}\n' + ADMIN)
    try:
        assert await sent(b, crm, "/admin/index.php") == (403, False)  # held
        assert await sent(b, crm, "/admin/index.php/x") == (403, False)  # held
        assert await sent(b, crm, "/admin/") == (403, False), "DirectoryIndex runs index.php"
    finally:
        await b.close()


def test_a_paths_phishing_resistant_demand_holds_below_a_script(tmp_path: Path) -> None:
    policy = policy_of(
        tmp_path,
        """\
          - {path: /admin.php, allow: [authenticated], fresh: 10m, factors: [totp]}
          - {path: "/**/export/**", allow: [authenticated], phishing_resistant: true}
          - {path: "/**", allow: [authenticated]}
        """,
    )
    user = policy.users["alice"]
    assert check_path(policy, user, "GET", "/crm/export/x").fresh_factors == ("webauthn",)
    below = check_path(policy, user, "GET", "/admin.php/export/x")
    assert below.allowed and below.fresh_factors
    assert set(below.fresh_factors) <= set(PHISHING_RESISTANT), below.fresh_factors


# --- false refusals --------------------------------------------------------------------------

# An avatar by e-mail address, open to the integration's token and to every signed-in user;
# the rest of the API for admins, the rest of the CRM for everyone signed in (a catch-all, as
# most policies end).
AVATARS = """\
  - {path: "/api/users/*/avatar", allow: [token, authenticated]}
  - {path: "/api/**", allow: [role:admin]}
  - {path: "/**", allow: [authenticated]}
"""


async def test_an_address_ending_in_pl_or_py_is_no_script_under_a_catch_all(
    crm: Served, start: Start
) -> None:
    b = await alice(crm, start, AVATARS)
    try:
        assert await sent(b, crm, "/api/users/jan@firma.de/avatar") == (200, True)
        assert await sent(b, crm, "/api/users/jose@empresa.com.py/avatar") == (200, True)
        assert await sent(b, crm, "/api/users/jan@firma.pl/avatar") == (200, True)
    finally:
        await b.close()


async def test_a_token_fetches_an_avatar_by_an_address_ending_in_pl(
    crm: Served, start: Start
) -> None:
    api = "api:\n  tokens:\n    - {header: Authorization, schemes: [Bearer]}\n"
    gw = await start(crm.url, login=PHP_LOGIN, policy=HEAD + AVATARS + api)
    await gw.served.app[DURABLE].add_token("tok_alice", "alice", digest(ALICE_TOKEN), "", 0.0)
    await gw.served.app[GUARD].refresh_tokens()
    bearer = f"Authorization: Bearer {ALICE_TOKEN}\r\n"
    for address in ("jan@firma.de", "jan@firma.pl"):
        before = len(crm.app[RAN])
        # handed to the CRM (which answers a request without its own session with a redirect)
        status = await ask(gw, "GET", f"/api/users/{address}/avatar", extra=bearer)
        assert (status, len(crm.app[RAN])) == (302, before + 1), address


# --- defences that hold ----------------------------------------------------------------------


async def test_a_folders_index_rule_holds_for_every_spelling_of_the_folder(
    crm: Served, start: Start
) -> None:
    paths = "  - {path: /admin/index.php, allow: [role:admin]}\n" + ADMIN
    b = await alice(crm, start, paths)
    try:
        for target in ("/admin/./", "/admin//", "/%61dmin/", "/admin/x/..", "/x/../admin/"):
            assert await sent(b, crm, target) == (403, False), target
        assert await sent(b, crm, "/crm/") == (200, True)  # another folder's index is open
    finally:
        await b.close()


async def test_an_iis_default_document_rule_holds_in_any_case(crm: Served, start: Start) -> None:
    paths = "  - {path: /Shop/Default.aspx, allow: [role:admin]}\n" + ADMIN
    b = await alice(crm, start, paths, fold=True)
    try:
        for target in ("/shop/", "/SHOP/", "/Shop/./", "/%53hop/", "/shop/default.ASPX/x"):
            assert await sent(b, crm, target) == (403, False), target
    finally:
        await b.close()


WRITTEN_BELOW = """\
  - {path: "/api.php/public/**", allow: [anyone]}
  - {path: /api.php, allow: [role:admin]}
"""


@pytest.mark.parametrize("fold", [False, True])
async def test_a_rule_below_a_script_speaks_only_for_its_own_tree(
    crm: Served, start: Start, fold: bool
) -> None:
    b = await alice(crm, start, WRITTEN_BELOW + ADMIN, fold=fold)
    try:
        assert await sent(b, crm, "/api.php/public/x") == (200, True)  # the policy's word
        for target in (
            "/api.php/private",
            "/api.php/public/../private",
            "/api.php/publicity/x",
            "/api.php/public/x/../../admin",
        ):
            assert await sent(b, crm, target) == (403, False), target
        # another script below the written-below tree is not spoken for by it
        assert await sent(b, crm, "/admin.php/api.php/public/x") == (403, False)
    finally:
        await b.close()


def test_the_scripts_factors_combine_with_the_paths_freshness(tmp_path: Path) -> None:
    policy = policy_of(
        tmp_path,
        """\
          - {path: /admin.php, allow: [authenticated], factors: [recovery]}
          - {path: /tool.php, allow: [authenticated], fresh: 5m}
          - {path: "/**/report/**", allow: [authenticated], fresh: 30m, factors: [totp]}
          - {path: "/**", allow: [authenticated], fresh: 10m}
        """,
    )
    user = policy.users["alice"]
    # factors without fresh on the script, fresh on the path: the shorter time, its factor
    below = check_path(policy, user, "GET", "/admin.php/x")
    assert (below.fresh, below.fresh_factors) == (600.0, ("recovery",))
    # fresh on both, factors on the path only: the shorter time, the path's factor
    report = check_path(policy, user, "GET", "/tool.php/report/x")
    assert (report.fresh, report.fresh_factors) == (300.0, ("totp",))


async def test_the_endpoint_and_a_websocket_hold_the_split_and_the_index(
    crm: Served, start: Start
) -> None:
    paths = "  - {path: /admin/index.php, allow: [role:admin]}\n" + ADMIN
    b = await alice(crm, start, paths, extra=FORWARD_AUTH)
    try:
        cookie = f"Cookie: {GATEWAY_COOKIE}={b.cookie(GATEWAY_COOKIE)}\r\n"
        for target in ("/admin.php.bak", "/crm/admin.phpx/y", "/admin/", "/admin/./?x=1"):
            assert status_of(await ask_endpoint(b.gw, target, extra=cookie)) == 403, target
        before = len(crm.app[RAN])
        for target in ("/admin.php/ws", "/admin.php5x", "/admin/"):
            head = (
                f"GET {target} HTTP/1.1\r\nHost: crm\r\n{cookie}Upgrade: websocket\r\n"
                "Connection: Upgrade, close\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            assert status_of(await send_raw(b.gw.served.port, head.encode())) == 403, target
        assert len(crm.app[RAN]) == before
    finally:
        await b.close()


def test_explain_says_which_script_refused_a_path(tmp_path: Path) -> None:
    """`policy explain` names the script a path runs and the rule that refused it; an
    address that only ends like a script (`jan@firma.pl`) is let go, as the gateway does."""
    (tmp_path / "p.yaml").write_text(HEAD + AVATARS)

    def explain(path: str) -> str:
        out = io.StringIO()
        with redirect_stdout(out):
            assert cli(["policy", "explain", "--policies", str(tmp_path), "--user", "alice",
                        "--ip", "127.0.0.1", "--path", path]) == 0  # fmt: skip
        return out.getvalue()

    said = explain("/api/users/tool.php/avatar")
    assert "decision: deny (path_not_allowed)" in said
    assert "/api/users/tool.php/avatar runs the script /api/users/tool.php" in said
    assert "/api/** allows role:admin, not user alice" in said
    assert "decision: forward (ok)" in explain("/api/users/jan@firma.pl/avatar")
