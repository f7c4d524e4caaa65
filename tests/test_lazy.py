"""gateway.lazy: a module whose code runs at the first read of a name in it (fido2 for
passkeys), on a package of the test's own."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.lazy import lazy_module


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "lazypkg"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "heavy.py").write_text("import builtins\nbuiltins.HEAVY_RUNS += 1\nVALUE = 42\n")
    sys.path.insert(0, str(tmp_path))
    import builtins

    builtins.HEAVY_RUNS = 0  # type: ignore[attr-defined]
    yield folder
    sys.path.remove(str(tmp_path))
    for name in ("lazypkg", "lazypkg.heavy"):
        sys.modules.pop(name, None)
    del builtins.HEAVY_RUNS  # type: ignore[attr-defined]


def test_the_code_runs_at_the_first_read_only(package: Path) -> None:
    import builtins

    heavy = lazy_module("lazypkg.heavy")
    assert builtins.HEAVY_RUNS == 0  # type: ignore[attr-defined]

    assert heavy.VALUE == 42
    assert heavy.VALUE == 42
    assert builtins.HEAVY_RUNS == 1  # type: ignore[attr-defined]


def test_an_import_of_it_later_finds_the_same_module(package: Path) -> None:
    heavy = lazy_module("lazypkg.heavy")

    import lazypkg.heavy  # type: ignore[import-not-found]

    assert lazypkg.heavy is heavy
    assert lazypkg.heavy.VALUE == 42
    assert lazy_module("lazypkg.heavy") is heavy


def test_a_module_that_is_not_there_is_said_at_once() -> None:
    with pytest.raises(ModuleNotFoundError):
        lazy_module("gateway.no_such_module")


def test_a_gateway_without_passkeys_configured_has_not_loaded_fido2() -> None:
    """The point of it: importing the whole app leaves fido2's server and models unrun."""
    import subprocess

    code = (
        "import sys, gateway.web.app\n"
        "print(*(type(sys.modules[m]).__name__ for m in ('fido2.server', 'fido2.webauthn')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["_LazyModule", "_LazyModule"]  # a module once its code ran
