"""The `webauthn` section of gateway.yaml and the relying party it makes with `public_url`:
passkeys and security keys are bound to the address users type (its host is the relying
party id, the whole origin is what the browser must report), so that address is checked here,
at start: a mismatch is a configuration error with its line, never a factor that cannot work.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.config.yaml_reader import Value

KEYS = {"rp_id", "rp_name", "user_verification", "timeout"}
USER_VERIFICATION = ("preferred", "required")


@dataclass(frozen=True)
class WebAuthn:
    """The relying party passkeys are made for, or why there is none (`unavailable`)."""

    rp_id: str = ""  # the domain a passkey belongs to: public_url's host or one above it
    origin: str = ""  # public_url: the one origin a browser's answer may come from
    name: str = ""  # what the browser and the authenticator show (the product name)
    user_verification: str = "preferred"  # or "required": a PIN or fingerprint every time
    timeout: float = 120.0  # seconds the browser waits for the key
    unavailable: str = "public_url is not set"  # "" when passkeys can be offered

    @property
    def available(self) -> bool:
        return not self.unavailable


def secure_problem(origin: str) -> str:
    """Why browsers refuse WebAuthn on `origin` ("" when they allow it): a secure context
    (https, or http on localhost for tests) whose host can be a relying party id (not an IP
    address)."""
    parts = urlsplit(origin)
    host = parts.hostname or ""
    local = host == "localhost" or host.endswith(".localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        return f"public_url {origin} is not https:// (browsers offer passkeys on secure pages only)"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ""
    return f"public_url {origin} names an IP address, which cannot be a relying party id"


def read_webauthn(
    section: Value | None, public: Value | None, origin: str, product: str
) -> WebAuthn:
    """The relying party from `public_url` and the optional `webauthn` section. Without the
    section, a public_url that cannot carry passkeys only makes them unavailable (a policy
    that names webauthn is then refused: gateway.policy.checks.unavailable_factors); with it,
    every such problem is an error at its key. `origin`: public_url as read ("" when unset
    or wrong), `public` its YAML value (for the line)."""
    keys = section.mapping(KEYS) if section is not None else {}
    keys = keys or {}
    uv = (
        keys["user_verification"].choice(USER_VERIFICATION) if "user_verification" in keys else None
    )
    timeout = keys["timeout"].duration(minimum=10) if "timeout" in keys else None
    if timeout is not None and timeout > 600:
        keys["timeout"].fail(f"must be at most 10m but it's {keys['timeout'].node.value!r}")
        timeout = None
    name = keys["rp_name"].text(max_length=64) if "rp_name" in keys else None
    if not origin:
        if section is not None and public is None:  # a public_url that is wrong says so itself
            section.fail(
                "needs public_url: a passkey belongs to the address users type (its host is "
                "the relying party id), e.g. public_url: https://crm.example.com"
            )
        return WebAuthn()
    host = urlsplit(origin).hostname or ""
    problem = secure_problem(origin)
    if problem and section is not None and public is not None:
        public.fail(
            f"{problem}: the webauthn section ({section.source.file}:{section.line}) needs it"
        )
    rp_id = host
    if "rp_id" in keys:
        said = (keys["rp_id"].text() or "").lower()
        # Imported here: it reads the public suffix list (1.3 MB of memory), which only a
        # named rp_id needs.
        from fido2.rpid import verify_rp_id

        if said and not problem and not verify_rp_id(said, origin):
            keys["rp_id"].fail(
                f"must be public_url's host ({host}) or a domain it is under (not a public "
                f"suffix such as co.uk) but it's {said!r}"
            )
        elif said:
            rp_id = said
    return WebAuthn(
        rp_id=rp_id,
        origin=origin,
        name=name or product,
        user_verification=uv or "preferred",
        timeout=timeout or 120.0,
        unavailable=problem,
    )
