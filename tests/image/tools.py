"""The machine side of the image test: running commands, root, and debootstrap and buildah
from Debian's packages. Decides whether the test can run here at all (Unavailable says why
not); knows nothing of the gateway."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

TOOLS = {"debootstrap": "debootstrap", "buildah": "buildah"}  # command: Debian package
# What a sandbox says when it refuses namespaces, mounts or chroot: the tools cannot run
# here, which is not the image's fault.
REFUSALS = ("operation not permitted", "permission denied", "cannot clone", "unshare")


class Unavailable(Exception):
    """debootstrap or buildah cannot run on this machine: the reason, for a loud skip."""


class Failed(Exception):
    """A command the test needs went wrong: its output, for the report."""


@dataclass(frozen=True)
class Done:
    stdout: str
    stderr: str
    status: int
    seconds: float


def run(
    command: list[str],
    *,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> Done:
    """Runs a command to its end; with `check`, a non-zero status raises Failed with its
    output (the tail of it: debootstrap and pip speak at length)."""
    started = time.monotonic()
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else {**os.environ, **env},
        )
    except subprocess.TimeoutExpired as exc:
        raise Failed(f"{' '.join(command)}: no end after {timeout:.0f} s") from exc
    done = Done(result.stdout, result.stderr, result.returncode, time.monotonic() - started)
    if check and done.status != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise Failed(f"{' '.join(command)}: exit status {done.status}\n{tail}")
    return done


def refused(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in REFUSALS)


def become_root(argv: list[str]) -> None:
    """buildah builds and runs as root (rootless buildah needs subordinate ids this test does
    not set up): as another user, run again under `sudo -n`, or give up with the reason."""
    if not sys.platform.startswith("linux"):
        raise Unavailable(f"buildah and debootstrap run on Linux only, not {sys.platform}")
    if os.geteuid() == 0:
        return
    if shutil.which("sudo") and run(["sudo", "-n", "true"], check=False).status == 0:
        os.execvp("sudo", ["sudo", "-n", "--preserve-env=PATH", sys.executable, *argv])
    raise Unavailable("needs root (or sudo without a password) to run buildah and debootstrap")


def ensure_tools() -> list[str]:
    """Installs what is missing of debootstrap and buildah with apt; the packages it
    installed. A machine without apt cannot get them here: Unavailable."""
    missing = [package for command, package in TOOLS.items() if shutil.which(command) is None]
    if not missing:
        return []
    if shutil.which("apt-get") is None:
        raise Unavailable(f"{', '.join(missing)} missing and no apt-get to install them")
    quiet = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "-qq", "update"], env=quiet, timeout=300)
    run(
        ["apt-get", "-qq", "install", "-y", "--no-install-recommends", *missing],
        env=quiet,
        timeout=600,
    )
    return missing


def versions() -> dict[str, str]:
    found = {}
    for command in TOOLS:
        done = run([command, "--version"], check=False)
        found[command] = (done.stdout or done.stderr).strip().splitlines()[0]
    return found
