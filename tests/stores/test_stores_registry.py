"""The store registries (gateway/stores/__init__.py) and config validation name the same
kinds, and each registered module gives the registry what it needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.model import DURABLE_KINDS, SHARED_KINDS, StoreConfig
from gateway.errors import StoreUnavailable
from gateway.stores import (
    DURABLE_BACKENDS,
    SHARED_BACKENDS,
    STORE_MISSING,
    durable_address,
    durable_kind,
    open_durable,
    shared_kind,
)


def test_config_accepts_exactly_the_registered_kinds() -> None:
    assert sorted(DURABLE_KINDS) == sorted(DURABLE_BACKENDS)
    assert sorted(SHARED_KINDS) == sorted(SHARED_BACKENDS)


@pytest.mark.parametrize("kind", sorted(DURABLE_BACKENDS))
def test_every_durable_module_gives_its_entry(kind: str) -> None:
    durable_kind(StoreConfig(kind))  # raises when the module has no DURABLE entry


@pytest.mark.parametrize("kind", sorted(SHARED_BACKENDS))
def test_every_shared_module_gives_its_entry(kind: str) -> None:
    shared_kind(StoreConfig(kind))


async def test_sqlite_is_named_by_its_file_and_opened_without_create_only_when_there(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data" / "gateway.db"
    settings = StoreConfig("sqlite", path=str(path))
    assert durable_address(settings) == (str(path), "state.durable.path")
    with pytest.raises(StoreUnavailable) as missing:
        await open_durable(settings, create=False)
    assert missing.value.reason == STORE_MISSING
    assert not path.parent.exists()

    made = await open_durable(settings, create=True)
    await made.close()
    reopened = await open_durable(settings, create=False)
    await reopened.ping()
    await reopened.close()
