"""The users file of `login.mode: gateway`: user name → argon2id hash, one per line of YAML.

    alice: $argon2id$v=19$m=65536,t=3,p=2$...     # crm-gateway hash-password

Names are compared canonically (gateway.model.canonical_user): `Alice` and `alice` are one.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config.yaml_reader import Source, read_file
from gateway.crypto import is_password_hash
from gateway.errors import ConfigError
from gateway.model import canonical_user


def load_password_file(path: str) -> dict[str, str]:
    source = Source(path)
    root = read_file(Path(path), source)
    found: dict[str, str] = {}
    if root is not None:
        for name, value in root.items():
            text = value.text()
            if text is None:
                continue
            if not is_password_hash(text):
                value.fail("must be an argon2id hash (make one with: crm-gateway hash-password)")
                continue
            key = canonical_user(name)
            if key in found:
                value.fail(f"user {name!r} appears twice (names are compared case-insensitively)")
            found[key] = text
    if source.problems:
        raise ConfigError(source.problems)
    return found
