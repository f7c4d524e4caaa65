"""A path under a script (`/admin.php/x`, its path info) is held to the script's own rule too:
PHP, any CGI and ASP.NET run `/admin.php` for it, so a rule on the script cannot be passed by
adding to the path (gateway.policy.rules.check_path)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.model import Action, Decision
from gateway.paths import script_paths
from gateway.policy.load import load_policies
from gateway.policy.model import Policy
from gateway.policy.rules import check_path

RULES = """
roles:
  admin: {}
users:
  alice: {roles: [admin]}
  bob: {}
paths:
"""


def _policy(tmp_path: Path, paths: str) -> Policy:
    (tmp_path / "p.yaml").write_text(textwrap.dedent(RULES) + textwrap.dedent(paths))
    return load_policies(tmp_path)


def _check(
    policy: Policy, user: str | None, path: str, method: str = "GET", fold: bool = False
) -> Decision:
    who = policy.users[user] if user else None
    return check_path(policy, who, method, path, fold=fold)


ADMIN_SCRIPT = """
- {path: /admin.php, allow: [role:admin]}
- {path: /report.aspx, allow: [role:admin]}
- {path: /api.php/public/**, allow: [anyone]}
- {path: /api.php, allow: [authenticated]}
- {path: /index.php, allow: [anyone]}
- {path: /**, allow: [anyone]}
"""


@pytest.mark.parametrize(
    "path",
    [
        "/admin.php/x",
        "/admin.php/",
        "/admin.php/a/b.html",
        "/admin.php/x.css",
        "/report.aspx/pathinfo",
        "/admin.php/x/other.php/y",
    ],
)
def test_the_script_rule_holds_for_its_path_info(tmp_path: Path, path: str) -> None:
    policy = _policy(tmp_path, ADMIN_SCRIPT)
    refused = _check(policy, None, path)
    assert refused.action is Action.DENY and refused.reason == "path_not_allowed", path
    assert "runs the script" in refused.steps[-2].text
    assert "role:admin" in refused.steps[-1].text  # the script's rule decided: named last
    assert _check(policy, "bob", path).action is Action.DENY
    assert _check(policy, "alice", path).allowed


def test_a_rule_written_for_the_scripts_path_info_is_the_policys_word(tmp_path: Path) -> None:
    """`/api.php/public/** anyone` before `/api.php authenticated`: the policy says what this
    script's path info may do; the rest of it is held to the script's rule."""
    policy = _policy(tmp_path, ADMIN_SCRIPT)
    assert _check(policy, None, "/api.php/public/hook").allowed
    assert _check(policy, None, "/api.php/private").reason == "path_not_allowed"
    assert _check(policy, "bob", "/api.php/private").allowed


def test_a_script_open_to_anyone_changes_nothing(tmp_path: Path) -> None:
    policy = _policy(tmp_path, ADMIN_SCRIPT)
    assert _check(policy, None, "/index.php/contacts").allowed
    assert _check(policy, None, "/index.php").allowed
    assert _check(policy, None, "/admin.php").action is Action.DENY
    assert _check(policy, None, "/notes.txt/x").allowed  # not a script


def test_a_stricter_rule_on_the_longer_path_still_decides(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        - {path: /index.php/admin/**, allow: [role:admin]}
        - {path: /**, allow: [anyone]}
        """,
    )
    assert _check(policy, "bob", "/index.php/admin/users").reason == "path_not_allowed"
    assert _check(policy, "alice", "/index.php/admin/users").allowed


def test_a_rule_for_some_methods_on_the_way_does_not_let_the_script_go(tmp_path: Path) -> None:
    """`/admin.php role:admin`, `GET /** role:admin`, `/** anyone`: a POST to /admin.php/x
    passes the GET rule and meets the one that admits anyone; the script's rule holds."""
    policy = _policy(
        tmp_path,
        """
        - {path: /admin.php, allow: [role:admin]}
        - {path: /**, methods: [GET], allow: [role:admin]}
        - {path: /**, allow: [anyone]}
        """,
    )
    assert _check(policy, None, "/admin.php/x", "POST").action is Action.DENY
    assert _check(policy, "alice", "/admin.php/x", "POST").allowed


def test_a_fresh_factor_the_script_asks_for_is_asked_for_its_path_info(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        - {path: /export.php, allow: [authenticated], fresh: 5m, factors: [totp]}
        - {path: /**, allow: [authenticated], fresh: 1h}
        """,
    )
    decided = _check(policy, "bob", "/export.php/all.csv")
    assert decided.allowed
    assert decided.fresh == 300.0 and decided.fresh_factors == ("totp",)
    relaxed = _check(policy, "bob", "/contacts")
    assert relaxed.fresh == 3600.0


def test_a_crm_that_ignores_case_holds_every_spelling(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        - {path: /Admin.aspx, allow: [role:admin]}
        - {path: /**, allow: [anyone]}
        """,
    )
    for path in ("/admin.ASPX/x", "/ADMIN.aspx/y", "/Admin.aspx/z"):
        assert _check(policy, None, path, fold=True).action is Action.DENY, path
    assert _check(policy, None, "/admin.aspx/x").allowed  # case-sensitive CRM: another file


@pytest.mark.parametrize(
    ("path", "scripts"),
    [
        ("/", []),
        ("/contacts/7", []),
        ("/index.php", []),  # the script itself: no path info
        ("/index.php/", ["/index.php"]),
        ("/crm/admin.php/x", ["/crm/admin.php"]),
        ("/a.php/b.php/c", ["/a.php", "/a.php/b.php"]),
        ("/run.cgi/x", ["/run.cgi"]),
        ("/Page.ASPX/x", ["/Page.ASPX"]),
        ("/v.php5/x", ["/v.php", "/v.php5"]),  # nginx's unanchored split runs /v.php
        ("/style.css/x", []),
        ("/x.phpx/y", ["/x.php"]),
        ("/admin.php.bak", ["/admin.php"]),
        ("/tools.phar/x", ["/tools.phar"]),
        ("/Admin.svc/Delete", ["/Admin.svc"]),
        ("/jan@firma.pl", []),  # the last segment: no path info
    ],
)
def test_script_paths(path: str, scripts: list[str]) -> None:
    assert script_paths(path) == scripts


def test_both_rules_fresh_factors_are_asked_for(tmp_path: Path) -> None:
    """The shorter time, of the factors both rules count; a rule naming none counts any."""
    policy = _policy(
        tmp_path,
        """
        - {path: /admin.php, allow: [authenticated], factors: [webauthn, totp]}
        - {path: /keys.php, allow: [authenticated], fresh: 10m, factors: [webauthn]}
        - {path: /**, allow: [authenticated], fresh: 5m, factors: [totp, webauthn]}
        """,
    )
    below = _check(policy, "bob", "/admin.php/x")
    assert (below.fresh, below.fresh_factors) == (300.0, ("totp", "webauthn"))
    keys = _check(policy, "bob", "/keys.php/x")
    assert (keys.fresh, keys.fresh_factors) == (300.0, ("webauthn",))


def test_a_folder_is_held_to_its_index_scripts_rule(tmp_path: Path) -> None:
    policy = _policy(
        tmp_path,
        """
        - {path: /admin/index.php, allow: [role:admin]}
        - {path: /Setup/Default.aspx, allow: [role:admin]}
        - {path: /**, allow: [authenticated]}
        """,
    )
    assert _check(policy, "bob", "/admin/").reason == "path_not_allowed"
    assert _check(policy, "alice", "/admin/").allowed
    assert _check(policy, "bob", "/admin/users").allowed  # not the folder's index
    assert _check(policy, "bob", "/setup/", fold=True).reason == "path_not_allowed"
    assert _check(policy, "bob", "/setup/").allowed  # another folder on a case-sensitive CRM


def test_a_script_no_rule_matches_adds_nothing(tmp_path: Path) -> None:
    """The default refusal is for the script's own path: a rule that admits the longer path
    decides it (here a segment that only looks like a Perl script: an e-mail domain)."""
    policy = _policy(tmp_path, '- {path: "/api/users/*/avatar", allow: [authenticated]}\n')
    assert _check(policy, "bob", "/api/users/jan@firma.pl/avatar").allowed
    assert _check(policy, "bob", "/api/users/jan@firma.pl").reason == "path_no_rule"


def test_a_folder_opened_by_its_own_rule_is_held_to_its_index(tmp_path: Path) -> None:
    """`/admin/ anyone` decides the folder itself; the server runs /admin/index.php there,
    which `/admin/*` closes: the stricter holds (a rule ending in a wildcard matches a folder
    and its index alike, so only such a folder rule or a literal one can tell them apart)."""
    policy = _policy(
        tmp_path,
        """
        - {path: /admin/, allow: [anyone]}
        - {path: /admin/*, allow: [role:admin]}
        - {path: /**, allow: [anyone]}
        """,
    )
    assert _check(policy, None, "/admin/").reason == "path_not_allowed"
    assert _check(policy, "alice", "/admin/").allowed
    assert _check(policy, None, "/other/").allowed


def test_a_rule_on_scripts_anywhere_holds_no_path_to_an_index(tmp_path: Path) -> None:
    """`/**/*.php role:admin` (no direct script access) beside a front controller's pretty
    URLs: `/contacts/7` and `/contacts/` are not held to an index they do not have; a rule
    naming an index (`/**/index.php`) or written for the folder (`/admin/*.php`) holds."""
    policy = _policy(
        tmp_path,
        """
        - {path: /index.php, allow: [authenticated]}
        - {path: /admin/*.php, allow: [role:admin]}
        - {path: "/**/*.php", allow: [role:admin]}
        - {path: /**, allow: [authenticated]}
        """,
    )
    for path in ("/contacts/7", "/contacts/", "/", "/reports/2026"):
        assert _check(policy, "bob", path).allowed, path
    for path in ("/admin", "/admin/"):
        assert _check(policy, "bob", path).reason == "path_not_allowed", path
        assert _check(policy, "alice", path).allowed, path
