"""`crm-gateway doctor -c gateway.yaml` on deployments in front of the test CRMs: after
detect-login, with the section pasted as printed, every item passes (the test login held for
the second factor by a gateway on a loopback port); each misconfiguration planted here is
named with its fix, and the exit status says so."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from gateway.stores import AuditQuery
from gateway.stores.sqlite import SqliteDurableStore
from tests.conftest import Served
from tests.crms.common import serve_crm
from tests.crms.kit import SHAPES, Ran, deployment, run_cli
from tests.crms.origin_crm import origin_crm_app
from tests.crms.php_crm import php_crm_app
from tests.crms.quirks import silent_server

# Serves a CRM app on loopback with serve_crm's quirks (site, skew, cookie_domain).
Crms = Callable[..., Awaitable[Served]]


@pytest.fixture
async def crms() -> AsyncIterator[Crms]:
    served: list[Served] = []

    async def make(
        app: web.Application, *, site: str = "", skew: float = 0.0, cookie_domain: str = ""
    ) -> Served:
        one = await serve_crm(app, site=site, skew=skew, cookie_domain=cookie_domain)
        served.append(one)
        return one

    yield make
    for one in served:
        await one.runner.cleanup()


def verdicts(ran: Ran) -> dict[str, list[tuple[str, str]]]:
    """item → [(state, the text of its lines, said and fix)]."""
    found: dict[str, list[tuple[str, str]]] = {}
    item = ""
    for line in ran.out.splitlines()[1:-1]:
        head = re.match(r"^  (ok|WARN|FAIL|skip)\s+(.+?)\s{2,}(.*)$", line)
        if head:
            item = head.group(2).strip()
            found.setdefault(item, []).append((head.group(1), head.group(3)))
        else:
            state, text = found[item][-1]
            found[item][-1] = (state, f"{text} {line.strip()}")
    return found


def states(ran: Ran) -> dict[str, set[str]]:
    return {item: {state for state, _ in seen} for item, seen in verdicts(ran).items()}


def said(ran: Ran, item: str) -> str:
    return " ".join(text for _, text in verdicts(ran)[item])


async def detected(capsys: pytest.CaptureFixture[str], url: str, shape: str) -> str:
    crm = SHAPES[shape]
    ran = await run_cli(
        capsys, "detect-login", "--upstream", url, "--user", crm.user, "--password-stdin",
        stdin=crm.password + "\n",
    )  # fmt: skip
    assert ran.code == 0, ran.err
    return ran.out


async def doctor(
    capsys: pytest.CaptureFixture[str], config: Path, shape: str = "", *more: str
) -> Ran:
    args = ["doctor", "-c", str(config), *more]
    stdin = ""
    if shape:
        args += ["--user", SHAPES[shape].user, "--password-stdin"]
        stdin = SHAPES[shape].password + "\n"
    return await run_cli(capsys, *args, stdin=stdin)


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_detect_login_then_doctor_is_a_working_deployment(
    shape: str, crms: Crms, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    crm: Served = await crms(SHAPES[shape].app())
    public = "public_url: https://crm.example.test\ntrusted_proxies: [127.0.0.1/32]\n"
    config = deployment(tmp_path, crm.url, await detected(capsys, crm.url, shape), public)
    ran = await doctor(capsys, config, shape)
    assert ran.code == 0, ran.out + ran.err
    seen = states(ran)
    assert all(found == {"ok"} for item, found in seen.items() if item != "durable store"), ran.out
    assert seen["durable store"] == {"WARN"}  # not made yet: `run` makes it
    assert "the gateway held the CRM's cookies and sent the browser to /_gateway/enrol" in said(
        ran, "login through the gateway"
    )
    assert "Origin https://crm.example.test" in said(ran, "CSRF and Origin")
    assert ran.out.rstrip().endswith("0 failures, 1 warning, 14 ok, 0 skipped")


async def test_without_a_test_account_the_login_through_the_gateway_is_skipped(
    crms: Crms, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    crm: Served = await crms(SHAPES["two-step"].app())
    config = deployment(tmp_path, crm.url, await detected(capsys, crm.url, "two-step"))
    ran = await doctor(capsys, config)
    assert ran.code == 0, ran.out
    assert states(ran)["login through the gateway"] == {"skip"}
    assert states(ran)["login form"] == {"ok"} and states(ran)["CSRF and Origin"] == {"ok"}
    assert states(ran)["success and failure"] == {"skip"}


async def test_a_php_deployment_with_four_mistakes_has_each_named(
    crms: Crms, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The user-name field of another CRM, a key file anyone may read, a store folder that is
    not there, a CRM whose clock is two minutes off."""
    crm: Served = await crms(php_crm_app(), skew=120)
    section = (await detected(capsys, crm.url, "php")).replace(
        "username_field: user_name", "username_field: username"
    )
    config = deployment(tmp_path, crm.url, section)
    (tmp_path / "seal.keys").chmod(0o644)
    text = config.read_text().replace("path: gateway.db", "path: var/missing/gateway.db")
    config.write_text(text)
    ran = await doctor(capsys, config, "php")
    assert ran.code == 1
    seen = states(ran)
    assert seen["login form"] == {"FAIL"}
    assert "login.username_field is 'username', but the login names the user in 'user_name'" in (
        said(ran, "login form")
    )
    assert "fix: login.username_field: user_name" in said(ran, "login form")
    assert seen["login through the gateway"] == {"FAIL"}
    assert "refused the login (login_ambiguous)" in said(ran, "login through the gateway")
    assert seen["secrets.seal_keys file"] == {"FAIL"}
    assert f"fix: chmod 600 {tmp_path}/seal.keys" in said(ran, "secrets.seal_keys file")
    assert seen["secrets.session_keys file"] == {"ok"}
    assert seen["clock"] == {"FAIL"}
    assert re.search(r"differ by 1[12]\d s", said(ran, "clock"))
    assert seen["durable store"] == {"FAIL"}
    assert f"its folder {tmp_path}/var/missing does not exist" in said(ran, "durable store")
    assert seen["success and failure"] == {"ok"}
    assert seen["CSRF and Origin"] == {"skip"}  # the gateway refused the test form itself
    assert "the gateway itself refused the test form (signin.refused, login_ambiguous)" in said(
        ran, "CSRF and Origin"
    )
    assert re.search(r"^5 failures, \d+ warnings?, \d+ ok, 1 skipped$", ran.out.splitlines()[-1])


async def test_a_login_path_without_its_query_is_named(
    crms: Crms, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    crm: Served = await crms(php_crm_app())
    section = (await detected(capsys, crm.url, "php")).replace(
        "path: /index.php?action=Login", "path: /index.php"
    )
    ran = await doctor(capsys, deployment(tmp_path, crm.url, section), "php")
    assert ran.code == 1
    text = said(ran, "login form")
    assert "login.path /index.php has no query, so every POST to /index.php is taken" in text
    assert "fix: login.path: /index.php?action=Login" in text


async def test_a_json_api_with_the_wrong_success_status_and_no_logout(
    crms: Crms, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    crm: Served = await crms(SHAPES["json"].app())
    section = (await detected(capsys, crm.url, "json")).replace("status: [200]", "status: [302]")
    section = section.split("  logout:")[0]
    ran = await doctor(capsys, deployment(tmp_path, crm.url, section), "json")
    assert ran.code == 1
    seen = states(ran)
    assert seen["success and failure"] == {"FAIL"}
    text = said(ran, "success and failure")
    assert "a right password would not be taken for a login: it is answered 200" in text
    assert "fix: login.success: {status: [200], cookie: crm_token}" in text
    assert seen["login through the gateway"] == {"FAIL"}
    assert "the CRM answered 200, which login.success does not take" in said(
        ran, "login through the gateway"
    )
    assert seen["logout"] == {"WARN"}
    assert "fix: login.logout: {path: /api/v1/auth/logout, method: POST}" in said(ran, "logout")


async def test_a_two_step_login_watched_at_its_first_page_is_named(
    crms: Crms, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    crm: Served = await crms(SHAPES["two-step"].app())
    section = (await detected(capsys, crm.url, "two-step")).replace(
        "path: /signin/password", "path: /signin"
    )
    ran = await doctor(capsys, deployment(tmp_path, crm.url, section), "two-step")
    assert ran.code == 1
    assert "login.path is /signin, but the password is sent to /signin/password" in said(
        ran, "login form"
    )
    assert "fix: login.path: /signin/password" in said(ran, "login form")
    assert states(ran)["login through the gateway"] == {"FAIL"}


async def test_a_rewritten_host_a_foreign_cookie_domain_and_tls_without_proxies(
    crms: Crms, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The CRM compares Origin with Host: `host_header: upstream` gives it its own host, so
    every form through the gateway is refused; it also sets its cookies for a domain that is
    not the public one; and TLS is in front with no proxy trusted."""
    crm: Served = await crms(origin_crm_app(), cookie_domain=".crm.internal.example")
    section = await detected(capsys, crm.url, "origin")
    extra = "public_url: https://crm.example.test\n"
    config = deployment(tmp_path, crm.url, section, extra)
    config.write_text(
        config.read_text().replace(
            f"  url: {crm.url}\n", f"  url: {crm.url}\n  host_header: upstream\n"
        )
    )
    ran = await doctor(capsys, config, "origin")
    assert ran.code == 1
    seen = states(ran)
    assert seen["CSRF and Origin"] == {"FAIL"}
    text = said(ran, "CSRF and Origin")
    assert "the CRM refuses the login form coming through the gateway (403" in text
    assert "Origin checking failed - https://crm.example.test does not match" in text
    assert "fix: upstream.host_header: client (the default)" in text
    assert seen["login through the gateway"] == {"FAIL"}
    assert "the CRM refused it as a cross-site form" in said(ran, "login through the gateway")
    assert seen["cookie domains"] == {"FAIL"}
    assert "Domain=crm.internal.example, which does not cover crm.example.test" in said(
        ran, "cookie domains"
    )
    assert seen["public_url and proxies"] == {"FAIL"}
    assert "trusted_proxies is empty" in said(ran, "public_url and proxies")


async def test_a_crm_calling_itself_by_another_name_is_named(
    crms: Crms, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    right: Served = await crms(php_crm_app())
    section = await detected(capsys, right.url, "php")
    crm: Served = await crms(php_crm_app(), site="http://localhost:{port}")
    ran = await doctor(capsys, deployment(tmp_path, crm.url, section), "php")
    assert ran.code == 1
    text = said(ran, "absolute redirects")
    assert f"the CRM sends browsers to http://localhost:{crm.port}/index.php" in text
    assert f"fix: upstream.url: http://localhost:{crm.port} if that is the CRM's own" in text
    assert states(ran)["login form"] == {"ok"}  # found from login.path


async def test_a_crm_that_does_not_answer_fails_and_the_rest_is_still_checked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async with silent_server() as port:
        pass
    config = deployment(tmp_path, f"http://127.0.0.1:{port}", SECTION)
    ran = await doctor(capsys, config)
    assert ran.code == 1
    seen = states(ran)
    assert seen["CRM reachable"] == {"FAIL"}
    assert "connection refused" in said(ran, "CRM reachable")
    assert seen["login form"] == {"skip"} and seen["clock"] == {"skip"}
    assert seen["secrets.seal_keys file"] == {"ok"}


SECTION = """\
login:
  path: /login
  success: {status: [302], cookie: sid}
"""


async def test_doctor_leaves_one_audit_event_in_the_deployments_store(
    crms: Crms, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The test login runs against a gateway with a store of its own: the deployment's store
    gets only doctor's own line (its write check), no sign-in, no lockout count."""
    crm: Served = await crms(SHAPES["php"].app())
    config = deployment(tmp_path, crm.url, await detected(capsys, crm.url, "php"))
    store = SqliteDurableStore(str(tmp_path / "gateway.db"))
    await store.open()
    await store.close()
    ran = await doctor(capsys, config, "php")
    assert ran.code == 0, ran.out
    assert states(ran)["durable store"] == {"ok"}
    store = SqliteDurableStore(str(tmp_path / "gateway.db"))
    await store.open()
    try:
        events = await store.audit_events(AuditQuery())
    finally:
        await store.close()
    assert [event.name for _, event in events] == ["admin.doctor"]
    assert json.dumps([event.details for _, event in events])


async def test_a_config_that_does_not_load_is_reported_as_check_config_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = deployment(tmp_path, "http://127.0.0.1:1", "login:\n  path: nowhere\n")
    ran = await doctor(capsys, config)
    assert (ran.code, ran.out) == (2, "")
    assert "login.path: must be a path such as /login" in ran.err
