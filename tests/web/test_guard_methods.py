"""A rule is judged on the method the CRM runs (issue #12, item 3).

`/reports/** methods: [GET]` before `/** anyone`: HEAD (which Django and Flask answer with the
GET view) used to pass, and so did a POST asking the CRM, by header or `_method`, to run GET.
Real gateway, real echo CRM; the warnings `check-config` prints are read from the loader.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from gateway.policy.load import load_policies
from tests.conftest import GatewayFactory, Served, send_raw
from tests.process import run_command, write_config

POLICY = """
roles:
  admin: {}
users:
  ann: {roles: [admin]}
paths:
  - {path: /reports/**, methods: [GET], allow: [role:admin]}
  - {path: /**, allow: [anyone]}
"""


@pytest.fixture
async def gw(upstream: Served, start_gateway: GatewayFactory, tmp_path: Path) -> Served:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "policy.yaml").write_text(POLICY)
    return await start_gateway(upstream.url, f"policies: {folder}\n")


async def status_of(gw: Served, method: str, target: str, *headers: str) -> tuple[int, str]:
    lines = "".join(f"{h}\r\n" for h in headers)
    length = "Content-Length: 0\r\n" if method == "POST" else ""
    request = f"{method} {target} HTTP/1.1\r\nHost: crm\r\n{lines}{length}Connection: close\r\n\r\n"
    raw = await send_raw(gw.port, request.encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    reason = json.loads(body).get("error", "") if body.startswith(b"{") and method != "HEAD" else ""
    return status, reason


async def test_a_rule_naming_get_covers_head(gw: Served) -> None:
    assert (await status_of(gw, "GET", "/reports/q3"))[0] == 403
    assert (await status_of(gw, "HEAD", "/reports/q3"))[0] == 403
    assert (await status_of(gw, "HEAD", "/contacts"))[0] == 200


@pytest.mark.parametrize(
    ("target", "header"),
    [
        ("/reports/q3", "X-HTTP-Method-Override: GET"),
        ("/reports/q3", "X_HTTP_Method_Override: GET"),
        ("/reports/q3", "x-http-method: GET"),
        ("/reports/q3", "X-Method-Override: GET"),
        ("/reports/q3?_method=GET", ""),
        ("/reports/q3?a=1&_m%65thod=GET", ""),
        ("/reports/q3?_method[]=GET", ""),
        ("/contacts/7?_method=DELETE", ""),  # refused wherever: the method is what is judged
    ],
)
async def test_a_post_standing_for_another_method_is_refused(
    gw: Served, target: str, header: str
) -> None:
    headers = (header,) if header else ()
    assert await status_of(gw, "POST", target, *headers) == (400, "method_ambiguous")


async def test_a_plain_post_and_an_unrelated_query_still_pass(gw: Served) -> None:
    assert (await status_of(gw, "POST", "/contacts?method=fast&payment_method=card"))[0] == 200
    assert (await status_of(gw, "GET", "/contacts?_method=GET"))[0] == 200  # only POST is read so


def _warnings(tmp_path: Path, paths: str) -> list[str]:
    (tmp_path / "p.yaml").write_text(
        "roles: {admin: {}, manager: {}}\npaths:\n" + textwrap.indent(textwrap.dedent(paths), "  ")
    )
    return [f"{w.path}: {w.message}" for w in load_policies(tmp_path).warnings]


def test_a_method_rule_undercut_by_a_later_wider_rule_is_warned_about(tmp_path: Path) -> None:
    (warning,) = _warnings(tmp_path, POLICY.split("paths:\n")[1].replace("  - ", "- "))
    assert warning.startswith("paths[0]: decides only GET,HEAD: other methods on /reports/**")
    assert "fall through to paths[1] any method /**" in warning
    assert "also admits anyone" in warning


def test_a_rule_after_a_wider_one_is_never_used_and_warned_about(tmp_path: Path) -> None:
    found = _warnings(
        tmp_path,
        """
        - {path: /**, allow: [anyone]}
        - {path: /admin/**, allow: [role:admin]}
        - {path: /x/*/edit, methods: [POST], allow: [role:admin]}
        """,
    )
    assert [w.split(":")[0] for w in found] == ["paths[1]", "paths[2]"]
    assert "is never used: paths[0] any method /**" in found[0]


@pytest.mark.parametrize(
    "paths",
    [
        # The narrow rule's other methods are decided by a rule for the same paths.
        """
        - {path: /reports/**, methods: [GET], allow: [role:admin, role:manager]}
        - {path: /reports/**, allow: [role:admin]}
        - {path: /**, allow: [anyone]}
        """,
        # The wider rule admits no one the narrow one does not.
        """
        - {path: /reports/**, methods: [GET, POST], allow: [role:admin]}
        - {path: /**, allow: [role:admin]}
        """,
        # Different trees: nothing falls through from one to the other.
        """
        - {path: /reports/**, methods: [GET], allow: [role:admin]}
        - {path: /contacts/**, allow: [anyone]}
        - {path: /admin/*, allow: [role:admin]}
        - {path: /admin/x/**, allow: [anyone]}
        """,
    ],
)
def test_rules_that_say_what_they_mean_are_not_warned_about(tmp_path: Path, paths: str) -> None:
    assert _warnings(tmp_path, paths) == []


def test_check_config_prints_the_policy_warnings(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "policy.yaml").write_text(POLICY)
    config = write_config(tmp_path, "http://127.0.0.1:9", f"policies: {folder}\n")
    result = run_command("check-config", "-c", str(config))
    assert result.returncode == 0, result.stderr  # a warning, not a problem: it would run
    expected = f"warning: {folder / 'policy.yaml'}:7: paths[0]: decides only GET,HEAD"
    assert expected in result.stderr
    assert result.stdout.strip().endswith("OK")


POST_POLICY = """
roles:
  admin: {}
paths:
  - {path: /records/**, methods: [DELETE], allow: [role:admin]}
  - {path: /**, allow: [anyone]}
"""


@pytest.fixture
async def records(upstream: Served, start_gateway: GatewayFactory, tmp_path: Path) -> Served:
    folder = tmp_path / "records-policies"
    folder.mkdir()
    (folder / "policy.yaml").write_text(POST_POLICY)
    return await start_gateway(upstream.url, f"policies: {folder}\n")


async def post(gw: Served, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: crm\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    raw = await send_raw(gw.port, head.encode() + body)
    status = int(raw.split(b" ", 2)[1])
    return status, raw.partition(b"\r\n\r\n")[2]


MULTIPART = (
    b'--b\r\nContent-Disposition: form-data; name="title"\r\n\r\nx\r\n'
    b'--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--b--\r\n'
)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"title=x&_method=DELETE", "application/x-www-form-urlencoded"),
        (b"_m%65thod=delete", "application/x-www-form-urlencoded"),
        (MULTIPART, "multipart/form-data; boundary=b"),
        (b'{"title": "x", "_method": "DELETE"}', "application/json"),
    ],
)
async def test_a_body_asking_for_a_method_a_rule_refuses_is_refused(
    records: Served, body: bytes, content_type: str
) -> None:
    """Rails reads `_method` from the form body only, Laravel from JSON too."""
    status, answer = await post(records, "/records/7", body, content_type)
    assert status == 400
    assert b"method_ambiguous" in answer


async def test_a_form_that_cannot_change_the_decision_streams_untouched(records: Served) -> None:
    # Where every method is allowed alike, nothing is read: the CRM gets the body as sent.
    status, answer = await post(records, "/contacts/7", b"_method=DELETE", "text/plain")
    assert status == 200
    assert json.loads(answer)["body_bytes"] == len(b"_method=DELETE")
    status, answer = await post(
        records, "/records/7", b"title=x", "application/x-www-form-urlencoded"
    )
    assert status == 200  # read, nothing found, forwarded whole
    assert json.loads(answer)["body_bytes"] == len(b"title=x")


async def test_a_form_too_large_to_read_where_it_matters_is_refused(records: Served) -> None:
    big = b"a=" + b"x" * (70 * 1024)
    status, answer = await post(records, "/records/7", big, "application/x-www-form-urlencoded")
    assert status == 413
    assert b"form_too_large" in answer
