"""Building the project's Dockerfile with buildah and running what the image says to run, as
`docker run` would: the image's user, environment, entrypoint and command, on the host's
network (loopback only here), with host folders mounted. No checks: check_image.py judges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.image.tools import Done, Failed, run

# buildah's chroot isolation is what works in this sandbox (podman's runtimes are refused);
# the host's network, so the gateway and the stand-in CRM meet on 127.0.0.1.
ISOLATION = ["--isolation", "chroot", "--network", "host"]
# The host's CA bundle goes to pip as the build secret `pip_ca` (see the Dockerfile): behind a
# TLS-inspecting proxy it holds that proxy's CA; anywhere else it is the usual bundle.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def build(
    dockerfile: Path,
    context: Path,
    tag: str,
    build_args: dict[str, str],
    labels: dict[str, str],
    target: str = "",
) -> Done:
    command = ["buildah", "build", *ISOLATION, "--layers", "--format", "docker"]
    # `--format docker` keeps HEALTHCHECK: the OCI image format has no field for it.
    command += ["--file", str(dockerfile), "--tag", tag]
    if target:
        command += ["--target", target]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    for name, value in labels.items():
        command += ["--label", f"{name}={value}"]
    if HOST_CA.is_file():
        command += ["--secret", f"id=pip_ca,src={HOST_CA}"]
    return run([*command, str(context)], timeout=1200)


def cached_steps(built: Done) -> tuple[int, int]:
    """Steps a build took from its layer cache, and steps in all."""
    steps = sum(1 for line in built.stdout.splitlines() if " STEP " in line)
    return built.stdout.count("Using cache"), steps


def remove_leftovers(marker: str) -> int:
    """Untagged images that earlier builds of this Dockerfile left (their history names
    `marker`), so that the store does not grow by an image at every change; the current
    images and their cached layers are tagged or their parents, and stay. How many went."""
    removed = 0
    for _ in range(20):  # removing a child can leave its parent untagged: a few passes
        listed = run(["buildah", "images", "--all", "--noheading", "--filter", "dangling=true"])
        ids = [line.split()[2] for line in listed.stdout.splitlines() if line.strip()]
        ours = [
            i for i in ids if marker in run(["buildah", "inspect", "--type", "image", i]).stdout
        ]
        gone = [i for i in ours if run(["buildah", "rmi", i], check=False).status == 0]
        removed += len(gone)
        if not gone:
            return removed
    return removed


def image_config(tag: str) -> dict[str, Any]:
    """The Docker-format config of an image: User, Env, Entrypoint, Cmd, Healthcheck,
    Labels, Volumes."""
    found = json.loads(run(["buildah", "inspect", "--type", "image", tag]).stdout)
    config: dict[str, Any] = found["Docker"]["config"]
    return config


@dataclass(frozen=True)
class Container:
    name: str
    config: dict[str, Any]

    @property
    def uid(self) -> int:
        """The image's USER as a number (0 when unset or named: only a number is checked)."""
        user = str(self.config.get("User") or "0").split(":")[0]
        return int(user) if user.isdigit() else 0

    @property
    def healthcheck(self) -> list[str]:
        """The HEALTHCHECK's command in exec form, or [] when there is none."""
        test = (self.config.get("Healthcheck") or {}).get("Test") or []
        return list(test[1:]) if test[:1] == ["CMD"] else []

    def argv(self, *args: str) -> list[str]:
        """What `docker run IMAGE ARGS…` runs: the entrypoint, then ARGS or else the image's
        command."""
        return [*(self.config.get("Entrypoint") or []), *(args or self.config.get("Cmd") or [])]

    def _run_command(
        self, argv: list[str], volumes: dict[Path, str], env: dict[str, str]
    ) -> list[str]:
        command = ["buildah", "run", *ISOLATION]
        for host, inside in volumes.items():
            command += ["--volume", f"{host}:{inside}"]
        for name, value in env.items():
            command += ["--env", f"{name}={value}"]
        return [*command, self.name, "--", *argv]

    def run(
        self,
        argv: list[str],
        *,
        volumes: dict[Path, str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> Done:
        """Runs to the end; the caller judges the status."""
        return run(self._run_command(argv, volumes or {}, env or {}), check=False, timeout=timeout)

    def start(
        self, argv: list[str], *, volumes: dict[Path, str], log: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        """Starts in the background, stdout and stderr into `log`."""
        with log.open("wb") as out:
            return subprocess.Popen(
                self._run_command(argv, volumes, env), stdout=out, stderr=subprocess.STDOUT
            )

    def mount(self) -> Path:
        return Path(run(["buildah", "mount", self.name]).stdout.strip())


@contextmanager
def container_of(tag: str) -> Iterator[Container]:
    """A working container of the image (its volumes live as long as it does), removed
    after."""
    name = run(["buildah", "from", "--pull=never", tag]).stdout.strip()
    try:
        yield Container(name, image_config(tag))
    finally:
        run(["buildah", "umount", name], check=False)
        run(["buildah", "rm", name], check=False)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found += children.get(current, [])
        queue += children.get(current, [])
    return found


def served_by(launcher: subprocess.Popen[bytes], command_word: str) -> int | None:
    """The process that `buildah run` started for the image's command: the deepest one below
    it whose command line names `command_word` (buildah's chroot helpers sit between)."""
    matches = []
    for pid in descendants(launcher.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(command_word.encode() in part for part in cmdline) and b"buildah" not in cmdline[0]:
            matches.append(pid)
    return matches[-1] if matches else None


def uids(pid: int) -> tuple[int, int]:
    """Real and effective user id of a process, read from the host's /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            real, effective = line.split()[1:3]
            return int(real), int(effective)
    raise Failed(f"no Uid line in /proc/{pid}/status")


def terminate(pid: int, launcher: subprocess.Popen[bytes], timeout: float) -> int | None:
    """`docker stop`'s first step: SIGTERM to the image's process (not to buildah, which
    would SIGKILL it), then its exit status as buildah reports it, or None if still alive."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if launcher.poll() is not None:
            return launcher.returncode
        time.sleep(0.05)
    return None


def kill(launcher: subprocess.Popen[bytes]) -> None:
    """The end of a run that went wrong: everything below buildah, then buildah."""
    if launcher.poll() is None:
        for pid in reversed(descendants(launcher.pid)):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        launcher.kill()
        launcher.wait(10)
