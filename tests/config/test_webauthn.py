"""The passkeys' relying party (gateway/config/webauthn.py): made from public_url, checked at
start; every mismatch an error at its line and key, never a factor that cannot work."""

from __future__ import annotations

import pytest

from gateway.config.load import parse_config
from gateway.config.webauthn import WebAuthn
from gateway.errors import ConfigError

MINIMAL = "listen: 127.0.0.1:8080\nupstream:\n  url: http://127.0.0.1:8081\n"  # lines 1-3


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return [str(p) for p in caught.value.problems]


def test_the_relying_party_is_public_urls_host_and_origin() -> None:
    config = parse_config(MINIMAL + "public_url: https://crm.example.com/\n")

    assert config.webauthn == WebAuthn(
        rp_id="crm.example.com",
        origin="https://crm.example.com",
        name="CRM Gateway",
        user_verification="preferred",
        timeout=120.0,
        unavailable="",
    )
    assert config.webauthn.available


def test_the_section_sets_a_parent_domain_required_verification_and_a_name() -> None:
    config = parse_config(
        MINIMAL
        + "public_url: https://crm.example.com:8443\n"
        + "webauthn: {rp_id: Example.com, rp_name: Example CRM, user_verification: required,"
        + " timeout: 1m}\n"
    )

    assert config.webauthn.rp_id == "example.com"
    assert config.webauthn.origin == "https://crm.example.com:8443"
    assert config.webauthn.name == "Example CRM"
    assert config.webauthn.user_verification == "required"
    assert config.webauthn.timeout == 60.0


def test_without_public_url_passkeys_are_unavailable_not_an_error() -> None:
    config = parse_config(MINIMAL)

    assert not config.webauthn.available
    assert config.webauthn.unavailable == "public_url is not set"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "webauthn: {user_verification: required}\n",
            "gateway.yaml:4: webauthn: needs public_url: a passkey belongs to the address users "
            "type (its host is the relying party id), e.g. public_url: https://crm.example.com",
        ),
        (
            "public_url: https://crm.example.com\nwebauthn:\n  rp_id: example.org\n",
            "gateway.yaml:6: webauthn.rp_id: must be public_url's host (crm.example.com) or a "
            "domain it is under (not a public suffix such as co.uk) but it's 'example.org'",
        ),
        (
            "public_url: https://crm.example.co.uk\nwebauthn: {rp_id: co.uk}\n",
            "gateway.yaml:5: webauthn.rp_id: must be public_url's host (crm.example.co.uk) or a "
            "domain it is under (not a public suffix such as co.uk) but it's 'co.uk'",
        ),
        (
            "public_url: http://crm.example.com\nwebauthn: {}\n",
            "gateway.yaml:4: public_url: public_url http://crm.example.com is not https:// "
            "(browsers offer passkeys on secure pages only): the webauthn section "
            "(gateway.yaml:5) needs it",
        ),
        (
            "public_url: https://10.0.0.5\nwebauthn: {}\n",
            "gateway.yaml:4: public_url: public_url https://10.0.0.5 names an IP address, which "
            "cannot be a relying party id: the webauthn section (gateway.yaml:5) needs it",
        ),
        (
            "public_url: https://crm.example.com\nwebauthn: {user_verification: always}\n",
            "gateway.yaml:5: webauthn.user_verification: must be one of preferred, required but "
            "it's 'always'",
        ),
        (
            "public_url: https://crm.example.com\nwebauthn: {rp_name: x, attestation: direct}\n",
            "gateway.yaml:5: webauthn.attestation: unknown key (known here: rp_id, rp_name, "
            "timeout, user_verification)",
        ),
    ],
)
def test_a_relying_party_that_cannot_work_is_an_error_at_its_key(text: str, expected: str) -> None:
    assert expected in problems(MINIMAL + text)


def test_http_on_localhost_is_a_secure_origin_for_tests() -> None:
    config = parse_config(MINIMAL + "public_url: http://localhost:8080\nwebauthn: {}\n")

    assert (config.webauthn.rp_id, config.webauthn.available) == ("localhost", True)


def test_an_insecure_public_url_without_the_section_only_makes_passkeys_unavailable() -> None:
    config = parse_config(MINIMAL + "public_url: http://crm.example.com\n")

    assert config.webauthn.unavailable.startswith("public_url http://crm.example.com is not https")
