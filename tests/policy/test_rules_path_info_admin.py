"""An administrator's view of the script rule (docs/policies.md item 5): policies an IT admin
would write for real CRMs (vtiger, SuiteCRM 7, an Odoo/Django-like API, a Laravel CRM, an
ASP.NET CRM on IIS, a Zoho-like mail admin), checked for false refusals of ordinary signed-in
traffic (gateway.policy.rules.check_path, and a few requests through the real gateway). A
false refusal is a strict xfail asserting the request passes; a policy that behaves as its
admin meant passes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.policy.load import load_policies
from gateway.policy.model import Policy
from gateway.policy.rules import check_path
from tests.conftest import Served
from tests.flows.test_path_info_outsider_attacks import alice, crm, sent
from tests.signin_kit import Start

__all__ = ["crm"]  # the stand-in CRM's fixture, used by name

HEAD = """
roles:
  admin: {}
users:
  root: {roles: [admin]}
  bob: {}
paths:
"""


def _policy(tmp_path: Path, paths: str) -> Policy:
    (tmp_path / "p.yaml").write_text(textwrap.dedent(HEAD) + textwrap.dedent(paths))
    return load_policies(tmp_path)


def _allowed(policy: Policy, user: str | None, path: str, fold: bool = False) -> bool:
    who = policy.users[user] if user else None
    return check_path(policy, who, "GET", path, fold=fold).allowed


# --- realistic policies that behave as their admin meant -----------------------------------

VTIGER = """
- {path: /modules/Settings/**, allow: [role:admin]}
- {path: /layouts/**, allow: [anyone]}
- {path: /test/**, allow: [authenticated]}
- {path: /modules/**, allow: [authenticated]}
- {path: /index.php, allow: [authenticated]}
- {path: "/**/*.php", allow: [role:admin]}
- {path: /**, allow: [authenticated]}
"""
SUITECRM = """
- {path: /index.php, allow: [authenticated]}
- {path: /upload/**, allow: [role:admin]}
- {path: /cache/**, allow: [authenticated]}
- {path: /custom/**, allow: [authenticated]}
- {path: /themes/**, allow: [anyone]}
- {path: /, allow: [authenticated]}
"""
ODOO = """
- {path: /web/login, allow: [anyone]}
- {path: /web/database/**, allow: [role:admin]}
- {path: /web/**, allow: [authenticated]}
- {path: /api/v1/admin/**, allow: [role:admin]}
- {path: /api/v1/**, allow: [authenticated]}
- {path: /static/**, allow: [anyone]}
- {path: /fonts/**, allow: [anyone]}
"""
LARAVEL = """
- {path: /admin/**, allow: [role:admin]}
- {path: /index.php, allow: [anyone]}
- {path: /storage/**, allow: [authenticated]}
- {path: "/**/*.php", allow: [role:admin]}
- {path: /**, allow: [authenticated]}
"""
IIS = """
- {path: /Admin/*.aspx, allow: [role:admin]}
- {path: /Login.aspx, allow: [anyone]}
- {path: /WebResource.axd, allow: [anyone]}
- {path: /ScriptResource.axd, allow: [anyone]}
- {path: /api/odata/**, allow: [authenticated]}
- {path: /**, allow: [authenticated]}
"""
ZOHO = """
- {path: /domains/*/settings, allow: [role:admin]}
- {path: /users/*, allow: [authenticated]}
- {path: /domains/**, allow: [authenticated]}
- {path: /files/**, allow: [authenticated]}
- {path: /static/**, allow: [anyone]}
"""

# (policy, user, path, allowed, fold): ordinary traffic passes, the admin's fences hold.
ORDINARY = [
    (VTIGER, "bob", "/", True, False),
    (VTIGER, "bob", "/index.php", True, False),
    (VTIGER, None, "/layouts/v7/lib/jquery/jquery.min.js", True, False),
    (VTIGER, "bob", "/layouts/", True, False),
    (VTIGER, "bob", "/modules/Contacts/Contacts.js", True, False),
    (VTIGER, "bob", "/test/logo/logo.png", True, False),
    (VTIGER, "bob", "/modules/Settings/Vtiger/index.php", False, False),
    (SUITECRM, "bob", "/", True, False),
    (SUITECRM, "bob", "/cache/jsLanguage/en_us.js", True, False),
    (SUITECRM, "bob", "/custom", True, False),
    (SUITECRM, None, "/themes/SuiteP/images/logo.png", True, False),
    (SUITECRM, "bob", "/upload/3f2a-invoice", False, False),
    (ODOO, "bob", "/web", True, False),
    (ODOO, "bob", "/web/", True, False),
    (ODOO, "bob", "/web/image/res.partner/7/avatar_128", True, False),
    (ODOO, "bob", "/api/v1/contacts/7/", True, False),
    (ODOO, "bob", "/api/v1/files/setup.py/download", True, False),
    (ODOO, None, "/static/js/app.min.js", True, False),
    (ODOO, None, "/fonts/x.woff2", True, False),
    (ODOO, "bob", "/web/database/manager", False, False),
    (LARAVEL, "bob", "/contacts/7", True, False),
    (LARAVEL, "bob", "/contacts/", True, False),
    (LARAVEL, "bob", "/storage/avatars/7.png", True, False),
    (LARAVEL, "bob", "/storage/exports/contacts.php.txt", True, False),
    (LARAVEL, "bob", "/tags/php", True, False),
    (LARAVEL, "bob", "/admin", False, False),
    (IIS, "bob", "/", True, True),
    (IIS, "bob", "/default.aspx", True, True),
    (IIS, None, "/WebResource.axd", True, True),
    (IIS, None, "/ScriptResource.axd", True, True),
    (IIS, "bob", "/api/odata/Contacts(7)", True, True),
    (IIS, "bob", "/api/odata/Contacts(7)/Emails", True, True),
    (IIS, "bob", "/Admin/logo.png", True, True),
    (IIS, "bob", "/Admin/", False, True),  # IIS runs /Admin/Default.aspx: held
    (IIS, "bob", "/admin", False, True),
    (IIS, "root", "/Admin/", True, True),
    (ZOHO, "bob", "/users/jan@firma.pl", True, False),
    (ZOHO, "bob", "/domains/firma.pl/users", True, False),
    (ZOHO, "bob", "/domains/firma.pl/", True, False),
    (ZOHO, "bob", "/domains/shop.com.py/dns", True, False),
    (ZOHO, "bob", "/files/report.v2.php.txt", True, False),
    (ZOHO, "root", "/domains/firma.pl/settings", True, False),
    (ZOHO, "bob", "/domains/firma.pl/settings", False, False),
]


@pytest.mark.parametrize(("paths", "user", "path", "allowed", "fold"), ORDINARY)
def test_a_realistic_policy_does_what_its_admin_meant(
    tmp_path: Path, paths: str, user: str | None, path: str, allowed: bool, fold: bool
) -> None:
    assert _allowed(_policy(tmp_path, paths), user, path, fold) is allowed


# --- false refusals ------------------------------------------------------------------------

# A list and its items, the most ordinary shape of a pretty-URL policy: everyone may list
# (`/settings`, `/api/v1/users`, a public SPA shell `/app`), only some may open an item
# (`/settings/*`, `/api/v1/users/*`, `/app/*`). The item rule is "written for that folder", so
# the list is held to `/settings/index.php` and `/settings/default.aspx`, files a Laravel,
# Django or Odoo CRM has not got: its front controller serves `/settings` itself.
LIST_AND_ITEMS = [
    (
        """
        - {path: /settings, allow: [authenticated]}
        - {path: /settings/*, allow: [role:admin]}
        - {path: /**, allow: [authenticated]}
        """,
        "bob",
        "/settings",
    ),
    (
        """
        - {path: /api/v1/users/*, allow: [role:admin]}
        - {path: /api/v1/**, allow: [authenticated]}
        """,
        "bob",
        "/api/v1/users",
    ),
    (
        """
        - {path: /app/*, allow: [authenticated]}
        - {path: /app, allow: [anyone]}
        - {path: /, allow: [anyone]}
        """,
        None,
        "/app",
    ),
]


@pytest.mark.parametrize(("paths", "user", "path"), LIST_AND_ITEMS)
def test_a_list_page_is_not_held_to_its_items_rule(
    tmp_path: Path, paths: str, user: str | None, path: str
) -> None:
    assert _allowed(_policy(tmp_path, paths), user, path)


# A mail admin: a domain's own page for admins, its mailboxes for every user. `firma.pl` is a
# Polish domain, `shop.com.py` a Paraguayan one; the `.pl`/`.py` exception lets them pass only
# where no rule matches the segment, and here `/domains/*` does (it was written for domains).
@pytest.mark.parametrize("domain", ["firma.pl", "shop.com.py"])
def test_a_domain_named_like_a_script_is_not_held_to_the_domains_rule(
    tmp_path: Path, domain: str
) -> None:
    policy = _policy(
        tmp_path,
        """
        - {path: /domains/*, allow: [role:admin]}
        - {path: /domains/*/mailboxes, allow: [authenticated]}
        """,
    )
    assert _allowed(policy, "bob", "/domains/firma.de/mailboxes")
    assert _allowed(policy, "bob", f"/domains/{domain}/mailboxes")


# "No direct script access" (`/**/*.php role:admin`) in a Laravel CRM, whose documented nginx
# block is the anchored `location ~ \.php$`: a stored file or a slug with `.php` inside its name
# is served by the front controller, yet is held to `/files/report.v2.php` (nginx's unanchored
# split, a documented trade-off: docs/policies.md item 5).
@pytest.mark.parametrize("path", ["/files/report.v2.php.txt", "/kb/upgrade-to-index.php-8"])
def test_a_download_with_php_in_its_name_is_not_a_script(tmp_path: Path, path: str) -> None:
    assert _allowed(_policy(tmp_path, LARAVEL), "bob", path)


# --- through the real gateway --------------------------------------------------------------

GATEWAY_LARAVEL = """\
  - {path: /index.php, allow: [authenticated]}
  - {path: /settings, allow: [authenticated]}
  - {path: /settings/*, allow: [role:admin]}
  - {path: "/**/*.php", allow: [role:admin]}
  - {path: "/**", allow: [authenticated]}
"""


async def test_a_laravel_crms_pretty_urls_pass_the_gateway(crm: Served, start: Start) -> None:
    b = await alice(crm, start, GATEWAY_LARAVEL)
    try:
        for target in ["/contacts/7", "/contacts/", "/storage/avatars/7.png"]:
            status, forwarded = await sent(b, crm, target)
            assert forwarded and status != 403, target
        assert await sent(b, crm, "/settings/mail") == (403, False)  # the admin's fence
    finally:
        await b.close()


async def test_a_laravel_crms_list_page_passes_the_gateway(crm: Served, start: Start) -> None:
    b = await alice(crm, start, GATEWAY_LARAVEL)
    try:
        status, forwarded = await sent(b, crm, "/settings")
        assert forwarded and status != 403
    finally:
        await b.close()
