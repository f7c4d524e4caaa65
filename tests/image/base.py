"""The stand-in for `python:3.11-slim`: a Debian bookworm root filesystem with Debian's own
Python 3.11, made with debootstrap and imported into buildah's image store, where it stays
for the next run (its tag names the recipe, so a changed recipe makes a new one). Nothing
here knows the gateway."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from tests.image.tools import Failed, Unavailable, refused, run

SUITE = "bookworm"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the official slim image has that the gateway's Dockerfile uses: python3 and its venv
# module (ensurepip), the CA certificates and /etc/services.
PACKAGES = ("python3", "python3-venv", "ca-certificates", "netbase")
# Dropped after debootstrap, as the slim images drop them: package lists, downloaded .debs,
# documentation, manual pages and translations.
TRIMMED = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
)
CONFIG = (
    "--env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "--env=LANG=C.UTF-8",
    "--cmd=python3",
)
RECIPE = repr((SUITE, MIRROR, PACKAGES, TRIMMED, CONFIG, 1))
TAG = f"localhost/crm-gateway-test-base:{SUITE}-py311-{hashlib.sha256(RECIPE.encode()).hexdigest()[:10]}"


def exists(tag: str) -> bool:
    return run(["buildah", "inspect", "--type", "image", tag], check=False).status == 0


def ensure_base(*, fresh: bool = False) -> tuple[str, bool]:
    """The base image's tag, and whether it was made in this run (False: the cached one)."""
    if fresh and exists(TAG):
        run(["buildah", "rmi", "--force", TAG])
    if exists(TAG):
        return TAG, False
    # Under /var/tmp, not /tmp: a root filesystem is a few hundred megabytes of real files.
    with tempfile.TemporaryDirectory(prefix="crm-gateway-base-", dir="/var/tmp") as work:
        root = Path(work) / "rootfs"
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(root),
            MIRROR,
        ]
        done = run(command, check=False, timeout=900)
        if done.status != 0:
            output = done.stdout + done.stderr
            if refused(output):
                raise Unavailable(f"debootstrap is refused here: {output.strip()[-300:]}")
            raise Failed(f"debootstrap failed (exit {done.status}):\n{output[-3000:]}")
        for pattern in TRIMMED:
            for path in root.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        archive = Path(work) / "rootfs.tar"
        run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(archive), "."])
        shutil.rmtree(root)
        container = run(["buildah", "from", "scratch"]).stdout.strip()
        try:
            run(["buildah", "add", "--quiet", container, str(archive), "/"])
            run(["buildah", "config", *CONFIG, container])
            run(["buildah", "commit", "--quiet", container, TAG])
        finally:
            run(["buildah", "rm", container], check=False)
    return TAG, True


def probe(tag: str) -> None:
    """`buildah run` of a no-op in the base: a sandbox that refuses chroot isolation makes
    the whole test impossible here (Unavailable); any other failure is a real one."""
    container = run(["buildah", "from", "--pull=never", tag]).stdout.strip()
    try:
        done = run(
            [
                "buildah",
                "run",
                "--isolation",
                "chroot",
                "--network",
                "host",
                container,
                "--",
                "true",
            ],
            check=False,
        )
    finally:
        run(["buildah", "rm", container], check=False)
    if done.status != 0:
        if refused(done.stderr):
            raise Unavailable(f"buildah run is refused here: {done.stderr.strip()[-300:]}")
        raise Failed(f"buildah run of a no-op in {tag} failed:\n{done.stderr}")
