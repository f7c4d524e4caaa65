"""A CRM whose web server ignores case in paths (IIS, any Windows server), behind a gateway
told so (`upstream.case_insensitive_paths`): every spelling that server reads as a closed
name is judged as that name, or refused; the CRM's login and logout are known in any case;
the forward-auth endpoint and `policy explain` answer as the proxy does. And, whatever the
server: a rule written with a character that a request may send escaped (`/økonomi/**`,
`/a!b`) holds for the escaped spelling too.

The CRM here is a small stand-in that reads paths as Windows does (each name upper-cased
one to one, a trailing dot or space dropped, a stream or short name read as its file), so
"the CRM would have served the closed page" is what it says, not what the test assumes."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from contextlib import redirect_stdout
from pathlib import Path
from urllib.parse import unquote

import pytest
from aiohttp import web

from gateway.cli.main import main as cli
from gateway.config.load import parse_config
from gateway.errors import ConfigError
from gateway.paths import fold_case
from gateway.web.pages.forwardauth import REASON_HEADER
from tests.conftest import Served, send_raw, serve_handler
from tests.crms.common import serve_crm
from tests.crms.kit import deployment
from tests.crms.php_crm import php_crm_app
from tests.flows.test_doctor import detected, doctor, said, states
from tests.flows.test_forward_auth_proxies import FORWARD_AUTH
from tests.signin_kit import GATEWAY_COOKIE, Browser, SignInGateway, Start

# -- the CRM on IIS ------------------------------------------------------------------------------

CRM_COOKIE = "ASP.NET_SessionId"
NOTED = web.AppKey("noted", list[tuple[str, str, str]])  # (method, name as IIS reads it, raw)


def windows_name(raw_path: str) -> str:
    """The name IIS serves for a raw path: decoded, each segment's trailing dots and spaces
    dropped, a stream (`::$DATA`) read as its file, a trailing `/` routed as without, 8.3 short names expanded (`ADMINI~1`:
    the one long name this CRM has that starts so), upper-cased as Windows compares."""
    segments = []
    for segment in unquote(raw_path).split("/"):
        segment = segment.split(":", 1)[0].rstrip(". ")
        if re.fullmatch(r"(?i)admini~1", segment):
            segment = "administration"
        segments.append(segment)
    return fold_case("/".join(segments).rstrip("/") or "/")  # routed with or without a /


async def iis_crm(request: web.Request) -> web.StreamResponse:
    name = windows_name(request.raw_path.split("?", 1)[0])
    request.app[NOTED].append((request.method, name, request.raw_path))
    if name == "/SIGNIN" and request.method == "POST":
        form = await request.post()
        if (form.get("username"), form.get("password")) == ("alice", "alice-demo"):
            answer = web.HTTPFound("/contacts")
            answer.set_cookie(CRM_COOKIE, "signed-in-as-alice")
            raise answer
        return web.Response(status=200, text="wrong password")
    if name == "/LOGOUT" and request.method == "POST":
        answer = web.HTTPFound("/signin")
        answer.del_cookie(CRM_COOKIE)
        raise answer
    if name.split("/")[1] not in PAGES:
        return web.Response(status=404, text=f"no page {name}")
    return web.Response(text=f"page {name}")


PAGES = {"", "SIGNIN", "LOGOUT", "CONTACTS", "ADMIN", "ADMINISTRATION", "SECRET", "ØKONOMI"}
PAGES |= {"KUNDE!INTERN"}


@pytest.fixture
async def crm() -> AsyncIterator[Served]:
    served = await serve_handler(iis_crm, NOTED)
    yield served
    await served.runner.cleanup()


def names_served(crm: Served, since: int = 0) -> list[str]:
    return [name for _, name, _ in crm.app[NOTED][since:]]


# -- the gateway in front of it ------------------------------------------------------------------

PATHS_POLICY = """\
roles: {admin: {}, finance: {}}
users: {alice: {roles: [finance]}}
paths:
  - {path: /administration/**, allow: [role:admin]}
  - {path: /admin/**, allow: [role:admin]}
  - {path: /secret/**, allow: [role:admin]}
  - {path: /økonomi/**, allow: [role:finance]}
  - {path: /kunde!intern/**, allow: [role:admin]}
  - {path: "/**", allow: [anyone]}
"""

SIGNIN_LOGIN = """\
login:
  mode: upstream
  path: /signin
  username_field: username
  success: {status: [302], cookie: ASP.NET_SessionId}
  logout: {path: /logout, method: POST}
"""

SIGNIN_POLICY = """\
defaults: {interval: always, factors: [totp, recovery], enforcement: required}
roles: {admin: {}}
users: {alice: {roles: [admin]}}
paths:
  - {path: /signin, allow: [anyone]}
  - {path: /admin/**, allow: [role:admin]}
  - {path: "/**", allow: [authenticated]}
"""

FOLD = "case_insensitive_paths: true"


async def gateway(
    start: Start, crm: Served, *, policy: str, fold: bool = True, login: str = "", extra: str = ""
) -> SignInGateway:
    """A gateway in front of `crm` (stopped at the end by `start`), told that the CRM ignores
    case in paths unless `fold` is False; without `login` nobody signs in (rules only)."""
    upstream = FOLD if fold else ""
    return await start(crm.url, login=login, policy=policy, extra=extra, upstream_extra=upstream)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def ask(gw: SignInGateway, method: str, target: str, extra: str = "", body: str = "") -> int:
    head = f"{method} {target} HTTP/1.1\r\nHost: crm\r\n{extra}Connection: close\r\n"
    if body:
        head += (
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
        )
    return status_of(await send_raw(gw.served.port, (head + "\r\n" + body).encode()))


async def post_login(gw: SignInGateway, target: str) -> str:
    """alice's right password posted to `target` as a browser's form: the raw answer."""
    form = "username=alice&password=alice-demo"
    head = f"POST {target} HTTP/1.1\r\nHost: crm\r\nAccept: text/html\r\n"
    head += "Content-Type: application/x-www-form-urlencoded\r\n"
    head += f"Content-Length: {len(form)}\r\nConnection: close\r\n\r\n{form}"
    return (await send_raw(gw.served.port, head.encode())).decode("latin-1")


async def ask_endpoint(
    gw: SignInGateway, target: str, method: str = "GET", extra: str = ""
) -> bytes:
    """The forward-auth endpoint asked as nginx asks it for `method target`: the raw answer."""
    head = (
        f"GET /_gateway/auth HTTP/1.1\r\nHost: crm\r\nX-Original-Method: {method}\r\n"
        f"X-Original-URI: {target}\r\n{extra}Connection: close\r\n\r\n"
    )
    return await send_raw(gw.served.port, head.encode())


# Each a spelling of a closed page that IIS serves as that page: refused (403 by the rule it
# is, or 400 when it is a Windows alias of the name), and never at the CRM.
CLOSED_SPELLINGS: list[tuple[str, int]] = [
    ("/admin/x", 403),
    ("/ADMIN/x", 403),
    ("/Admin/x", 403),
    ("/aDmIn", 403),
    ("/%41DMIN/x", 403),
    ("/ADM%49N/", 403),
    ("/ADMINISTRATION/users", 403),
    ("/SECRET/x", 403),
    ("/%C5%BFecret/x", 403),  # U+017F: Windows upper-cases it to S
    ("/%C3%98KONOMI/plan", 403),  # Ø: /økonomi in capitals, escaped as every browser sends it
    ("/%c3%b8konomi/plan", 403),
    ("/KUNDE%21INTERN/x", 403),
    ("/admin./x", 400),
    ("/admin%2e/x", 400),
    ("/ADMIN.../x", 400),
    ("/admin%20/x", 400),
    ("/admin::$DATA", 400),
    ("/admin%3A%3A$DATA", 400),
    ("/ADMINI~1/users", 400),
    ("/administration/users", 403),
]


async def test_every_windows_spelling_of_a_closed_path_is_refused(
    crm: Served, start: Start
) -> None:
    gw = await gateway(start, crm, policy=PATHS_POLICY)
    seen = [(target, await ask(gw, "GET", target)) for target, _ in CLOSED_SPELLINGS]
    assert seen == CLOSED_SPELLINGS
    assert names_served(crm) == []
    # Open pages still go, as sent (the path is judged folded, never forwarded folded).
    assert await ask(gw, "GET", "/Contacts/Details/AbC1") == 200
    assert crm.app[NOTED][-1][2] == "/Contacts/Details/AbC1"


async def test_without_the_setting_a_case_sensitive_crm_gets_its_own_paths(
    crm: Served, start: Start
) -> None:
    """The default: paths are another page in another case (a CRM on Linux), and a trailing
    dot is part of a name; only the spellings of the same name stay refused. A rule with a
    character that may come escaped holds for both spellings whatever the server."""
    gw = await gateway(start, crm, policy=PATHS_POLICY, fold=False)
    assert await ask(gw, "GET", "/ADMIN/x") == 200
    assert await ask(gw, "GET", "/admin./x") == 200
    assert names_served(crm) == ["/ADMIN/X", "/ADMIN/X"]  # IIS would; this setting says not
    for target in ("/%C3%B8konomi/plan", "/%c3%b8konomi/plan", "/kunde%21intern/x"):
        assert await ask(gw, "GET", target) == 403, target
    assert await ask(gw, "GET", "/%C3%98KONOMI/plan") == 200  # another name on Linux
    assert len(names_served(crm)) == 3


async def test_the_login_and_logout_are_known_in_any_case(crm: Served, start: Start) -> None:
    """POST /SIGNIN, /ſignin (IIS's /SIGNIN) with the right password: taken for the CRM's
    login, so the CRM's session cookie is held until the second factor and never reaches
    the browser; and a session's POST /LOGOUT ends the gateway's session too."""
    gw = await gateway(start, crm, policy=SIGNIN_POLICY, login=SIGNIN_LOGIN)
    for target in ("/signin", "/SIGNIN", "/%C5%BFignin", "/SignIn/"):
        answer = await post_login(gw, target)
        assert status_of(answer.encode()) in (302, 303), (target, answer[:300])
        assert CRM_COOKIE not in answer, (target, answer[:600])
        location = re.search(r"\r\nLocation: ([^\r]+)", answer)
        assert location and location.group(1) == "/_gateway/enrol", (target, answer[:600])
    assert names_served(crm) == ["/SIGNIN"] * 4
    # Sent raw (not escaped, as no browser sends it), U+017F never reaches a rule.
    assert await ask(gw, "POST", "/ſignin", body="username=alice&password=alice-demo") == 400
    assert names_served(crm) == ["/SIGNIN"] * 4

    # A whole session (enrolled), then the logout's spelling in capitals: it ends the
    # gateway's session as well, so the next request must sign in again.
    b = Browser(gw)
    try:
        status, _, r = await b.post("/SignIn", {"username": "alice", "password": "alice-demo"})
        assert (status, r.headers["Location"]) == (303, "/_gateway/enrol")
        await b.enrol()
        await b.confirm_codes()
        session = b.cookie(GATEWAY_COOKIE)
        assert session
        assert b.cookie(CRM_COOKIE) == "signed-in-as-alice"
        assert (await b.get("/contacts"))[0] == 200
        status, _, r = await b.post("/LOGOUT", {})
        assert status == 302
        assert b.cookie(GATEWAY_COOKIE) in (None, "")
        assert await gw.signin.book.load(session) is None
    finally:
        await b.close()


async def test_forward_auth_and_explain_judge_as_the_proxy(
    crm: Served, start: Start, tmp_path: Path
) -> None:
    gw = await gateway(start, crm, policy=PATHS_POLICY, extra=FORWARD_AUTH)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "policy.yaml").write_text(PATHS_POLICY)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"listen: 127.0.0.1:0\nupstream: {{url: {crm.url}, {FOLD}}}\n"
        f"state: {{durable: {{type: sqlite, path: {tmp_path}/gateway.db}}}}\n"
        f"policies: {tmp_path}/policies\n"
    )
    for target, status in CLOSED_SPELLINGS:
        # As nginx asks: 403 with the reason (nginx would turn a 400 into its own 500).
        answer = (await ask_endpoint(gw, target)).decode("latin-1")
        reason = "path_not_allowed" if status == 403 else "path_ambiguous"
        assert status_of(answer.encode()) == 403, (target, answer[:300])
        assert f"\r\n{REASON_HEADER}: {reason}\r\n" in answer, (target, answer[:400])
        out = io.StringIO()
        with redirect_stdout(out):
            assert cli(["policy", "explain", "-c", str(config), "--ip", "10.0.0.1",
                        "--path", target]) == 0  # fmt: skip
        said = out.getvalue()
        if status == 403:
            assert "decision: deny (path_not_allowed)" in said, (target, said)
            assert "paths: matched in any case" in said
        else:
            assert "decision: deny (400 path_ambiguous)" in said, (target, said)
    assert names_served(crm) == []


def test_the_setting_is_a_yes_or_no() -> None:
    text = "listen: 127.0.0.1:0\nupstream:\n  url: http://crm\n  case_insensitive_paths: iis\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gateway.yaml")
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == ("gateway.yaml", 4)
    assert problem.path == "upstream.case_insensitive_paths"
    config = parse_config(text.replace("iis", "true"), "gateway.yaml")
    assert config.upstream.case_insensitive_paths is True
    default = parse_config(text.replace("  case_insensitive_paths: iis\n", ""), "g")
    assert default.upstream.case_insensitive_paths is False


async def test_doctor_tells_whether_the_crm_ignores_case(
    crm: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """doctor asks the CRM for its login page as written, in swapped case and under a made-up
    name: on this IIS-like CRM the rules must fold case (FAIL with the fix until they do);
    on a CRM that tells the cases apart, folding is named as the mistake it is there."""
    section = "login:\n  path: /signin\n  success: {status: [302], cookie: ASP.NET_SessionId}\n"
    config = deployment(tmp_path / "iis", crm.url, section)
    ran = await doctor(capsys, config)
    assert states(ran)["paths and case"] == {"FAIL"}, ran.out
    assert "the CRM serves /SIGNIN as /signin (200): it ignores case" in said(ran, "paths and case")
    assert "fix: upstream.case_insensitive_paths: true" in said(ran, "paths and case")
    text = config.read_text()
    config.write_text(text.replace(f"  url: {crm.url}\n", f"  url: {crm.url}\n  {FOLD}\n"))
    ran = await doctor(capsys, config)
    assert states(ran)["paths and case"] == {"ok"}, ran.out

    php = await serve_crm(php_crm_app())
    try:
        folder = tmp_path / "php"
        config = deployment(folder, php.url, await detected(capsys, php.url, "php"))
        text = config.read_text()
        config.write_text(text.replace(f"  url: {php.url}\n", f"  url: {php.url}\n  {FOLD}\n"))
        ran = await doctor(capsys, config)
        assert states(ran)["paths and case"] == {"WARN"}, ran.out
        assert "fix: upstream.case_insensitive_paths: false" in said(ran, "paths and case")
    finally:
        await php.runner.cleanup()
