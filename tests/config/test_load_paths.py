"""Every path written in gateway.yaml is read from that file's folder, never from the current
directory: a command run from elsewhere finds the store, keys and files the gateway uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import load_config
from gateway.config.messaging import OutboxProvider
from gateway.crypto import new_key_line
from gateway.errors import ConfigError

# Every kind of path gateway.yaml holds, each written relative to the file.
EVERY_PATH = """\
listen: 127.0.0.1:8080
upstream:
  url: http://127.0.0.1:8081
  secret_header: {name: X-Gateway-Secret, value: {file: secrets/header.txt}}
state:
  durable: {type: sqlite, path: data/gateway.db}
policies: policies
audit: {file: logs/audit.jsonl}
login: {mode: gateway, users_file: users.yaml}
secrets:
  session_keys: {file: secrets/session.keys}
  seal_keys: {file: secrets/seal.keys}
sms:
  provider: {type: outbox, path: outbox/sms.jsonl}
email:
  provider: {type: outbox, path: outbox/mail.jsonl}
alerts:
  email: {to: [it@example.org], provider: {type: outbox, path: outbox/alerts.jsonl}}
"""


def write_site(site: Path, text: str) -> Path:
    for folder in ("secrets", "policies", "logs", "data"):
        (site / folder).mkdir(parents=True, exist_ok=True)
    (site / "secrets" / "header.txt").write_text("s3cret-header-value\n")
    for name in ("session", "seal"):
        (site / "secrets" / f"{name}.keys").write_text(new_key_line("k1") + "\n")
    (site / "policies" / "policy.yaml").write_text("defaults: {interval: always}\n")
    config = site / "gateway.yaml"
    config.write_text(text)
    return config


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory: a folder beside the site, holding none of its files."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_every_path_is_read_from_the_config_files_folder(tmp_path: Path, elsewhere: Path) -> None:
    site = tmp_path / "site"
    write_site(site, EVERY_PATH)

    config = load_config("../site/gateway.yaml")  # the config itself named from elsewhere

    assert config.state.durable.path == str(site / "data" / "gateway.db")
    assert config.policies == str(site / "policies")
    assert config.audit.file == str(site / "logs" / "audit.jsonl")
    assert config.signin.login is not None
    assert config.signin.login.users_file == str(site / "users.yaml")
    assert config.upstream.secret_header is not None
    assert config.upstream.secret_header.value == "s3cret-header-value"
    assert config.signin.secrets.seal_keys is not None
    assert config.signin.secrets.session_keys is not None
    assert config.messaging.sms is not None and config.messaging.email is not None
    assert config.messaging.sms.provider == OutboxProvider(str(site / "outbox" / "sms.jsonl"))
    assert config.messaging.email.provider == OutboxProvider(str(site / "outbox" / "mail.jsonl"))
    assert config.alerts.email is not None
    assert config.alerts.email.provider == OutboxProvider(str(site / "outbox" / "alerts.jsonl"))
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize(
    "state", ["", "state: {shared: {type: memory}}\n", "state: {durable: {type: sqlite}}\n"]
)
def test_the_default_store_is_beside_the_config_file(
    tmp_path: Path, elsewhere: Path, state: str
) -> None:
    config = tmp_path / "site" / "gateway.yaml"
    config.parent.mkdir()
    config.write_text(f"listen: 127.0.0.1:8080\nupstream: {{url: http://127.0.0.1:8081}}\n{state}")

    assert load_config(config).state.durable.path == str(tmp_path / "site" / "gateway.db")


def test_absolute_paths_stay_as_written(tmp_path: Path, elsewhere: Path) -> None:
    site = tmp_path / "site"
    store = tmp_path / "var" / "lib" / "gateway.db"
    config = write_site(site, EVERY_PATH.replace("data/gateway.db", str(store)))

    assert load_config(config).state.durable.path == str(store)


def test_a_secret_file_that_is_not_there_is_named_by_the_path_looked_at(
    tmp_path: Path, elsewhere: Path
) -> None:
    site = tmp_path / "site"
    config = write_site(site, EVERY_PATH.replace("secrets/seal.keys", "secrets/gone.keys"))

    with pytest.raises(ConfigError) as caught:
        load_config(config)

    assert [str(p) for p in caught.value.problems] == [
        f"{config}:12: secrets.seal_keys.file: cannot read {site / 'secrets' / 'gone.keys'}: "
        "No such file or directory"
    ]
