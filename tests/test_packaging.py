"""What a new user's machine installs (issue #12, item 15): `make demo` installs the gateway
and what it needs, not the test tools; the license is an SPDX string, so setuptools prints no
deprecation warning on every install."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def planned(target: str, tmp_path: Path) -> list[str]:
    """The commands `make TARGET` would run in a fresh virtual environment."""
    result = subprocess.run(
        ["make", "-n", "-B", target, f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.splitlines()


def test_make_demo_installs_no_test_tools(tmp_path: Path) -> None:
    installs = [line for line in planned("demo", tmp_path) if "pip install" in line]
    assert any(line.rstrip().endswith("-e .") for line in installs), installs
    assert not any("[dev]" in line for line in installs), installs


def test_make_test_installs_the_test_tools(tmp_path: Path) -> None:
    installs = [line for line in planned("unit", tmp_path) if "pip install" in line]
    assert any("'.[dev]'" in line for line in installs), installs


def test_the_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    backend = project["build-system"]["requires"]
    assert "setuptools>=77" in backend  # the first setuptools that reads PEP 639 licenses
