"""What an image's files say, read from its root filesystem mounted on the host: its size,
the compilers and build tools on it, the Python distributions installed anywhere in it, and
which of pyproject.toml's packages are there or must not be. Plain functions, no buildah."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

# A compiler, a linker or an assembler: what a multi-stage build leaves behind.
BUILD_TOOL = re.compile(
    r"^((x86_64|aarch64|[a-z0-9_]+)-linux-gnu-)?"
    r"(gcc|cc|c\+\+|g\+\+|cpp|clang|clang\+\+|tcc|cc1|cc1plus|ld|ld\.bfd|ld\.gold|as|make)"
    r"(-\d+(\.\d+)*)?$"
)
BIN_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin", "opt/*/bin")
# Test and lint tools named here whatever pyproject.toml's `dev` extra says today.
TEST_TOOLS = {"pytest", "mypy", "ruff", "coverage", "hypothesis", "tox", "nox"}
# Where gcc keeps cc1 and friends; present means a compiler, whatever is on the PATH.
COMPILER_DIRS = ("usr/lib/gcc", "usr/libexec/gcc", "usr/local/lib/gcc")


def normalized(name: str) -> str:
    """PEP 503: `Typing_Extensions` and `typing-extensions` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalized(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])


def apparent_size(root: Path) -> int:
    """Bytes of the files and links under `root`, each hard-linked file once: what `docker
    images` shows, near enough (it counts the layers' tar streams)."""
    total, seen = 0, set()
    for folder, _dirs, files in os.walk(root):
        for name in files:
            stat = os.lstat(os.path.join(folder, name))
            if stat.st_nlink > 1:
                if (stat.st_dev, stat.st_ino) in seen:
                    continue
                seen.add((stat.st_dev, stat.st_ino))
            total += stat.st_size
    return total


def build_tools(root: Path) -> list[str]:
    found = []
    for pattern in BIN_DIRS:
        for folder in root.glob(pattern):
            if folder.is_symlink():  # /bin -> usr/bin; an absolute link would leave the image
                continue
            found += [
                str(path.relative_to(root))
                for path in folder.iterdir()
                if BUILD_TOOL.match(path.name)
            ]
    found += [top for top in COMPILER_DIRS if (root / top).exists()]
    return sorted(found)


def distributions(root: Path) -> dict[str, str]:
    """Every Python distribution installed in the image (site-packages and Debian's
    dist-packages alike): normalized name → where."""
    found = {}
    for folder, dirs, _files in os.walk(root):
        for name in dirs:
            if name.endswith((".dist-info", ".egg-info")):
                project = name.rsplit(".", 1)[0].split("-")[0]
                found[normalized(project)] = str(Path(folder, name).relative_to(root))
        if folder.endswith(("site-packages", "dist-packages")):
            dirs[:] = [d for d in dirs if d.endswith((".dist-info", ".egg-info"))]
    return found


def project_packages(pyproject: Path) -> tuple[set[str], set[str]]:
    """From pyproject.toml: what the image must hold (the dependencies and every extra but
    `dev`: `speed`, `redis`, whatever they hold today) and what it must not (the `dev`
    extra's test and lint tools that the gateway does not also need)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    runtime = [r for name, rs in extras.items() if name != "dev" for r in rs]
    needed = {"crm-gateway"} | {requirement_name(r) for r in [*project["dependencies"], *runtime]}
    test_only = ({requirement_name(r) for r in extras.get("dev", [])} | TEST_TOOLS) - needed
    return needed, test_only
