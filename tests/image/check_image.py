"""`make image-test` (issue 22): builds the project's Dockerfile with buildah on a local Debian
bookworm base with Debian's Python 3.11 (`--build-arg BASE=…`), then runs the image as an
operator would, in front of a stand-in CRM on loopback with a mounted config, and checks what
the deployment docs promise. One line per check, the figures, then `image-test: N passed, N
failed`; exit 1 on a failed check. Where debootstrap or buildah cannot run, a loud SKIPPED
with the reason and exit 0.

    python3 -m tests.image.check_image [--dockerfile PATH] [--fresh]"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from tests.image import image_files
from tests.image.base import ensure_base, probe
from tests.image.container import (
    build,
    cached_steps,
    container_of,
    image_config,
    remove_leftovers,
)
from tests.image.report import Report
from tests.image.run_checks import check_bad_config, check_running
from tests.image.tools import Failed, Unavailable, become_root, ensure_tools, run, versions

ROOT = Path(__file__).resolve().parents[2]
TAG = "localhost/crm-gateway:image-test"
CONFIG_DIR = "/etc/crm-gateway"
DATA_DIR = "/var/lib/crm-gateway"
# The budget (docs/deployment.md): what the Dockerfile adds on top of its base, which is what
# this project controls, and the whole image on this test's base (on python:3.11-slim the
# base is about the same size). Measured 108 MB and 231 MB when the budget was set, 120 and
# 243 with the PostgreSQL driver that was on its way in.
BUDGET_ADDED = 140_000_000
BUDGET_TOTAL = 290_000_000
# The build's sources, our tests and benchmarks as packages, the venv's pip and setuptools.
LEFT_BY_A_BUILD = (
    "src",
    "opt/crm-gateway/lib/python3*/site-packages/tests",
    "opt/crm-gateway/lib/python3*/site-packages/bench",
    "opt/crm-gateway/bin/pip*",
    "opt/crm-gateway/lib/python3*/site-packages/setuptools",
)
# Written in the Dockerfile; revision and created are given with --label, as a release does.
OCI_LABELS = ("title", "description", "version", "licenses", "base.name")
LABEL = "org.opencontainers.image."


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="make image-test", description=__doc__.split("\n")[0])
    parser.add_argument("--dockerfile", type=Path, default=ROOT / "Dockerfile")
    parser.add_argument(
        "--fresh", action="store_true", help="make the base again and build without cache"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    report = Report()
    try:
        become_root(["-m", "tests.image.check_image", *argv])
        installed = ensure_tools()
        if installed:
            report.note(f"installed with apt: {', '.join(installed)}")
        report.note("; ".join(versions().values()))
        base, made = ensure_base(fresh=args.fresh)
        probe(base)
    except Unavailable as exc:
        report.skipped(str(exc))
        return 0
    except Failed as exc:  # apt, debootstrap or buildah failed where they can run: a failure
        report.check("debootstrap, buildah and the base image are ready", False, str(exc))
        return report.close()
    report.figure("base", f"{base} ({'made now' if made else 'cached'})")
    report.figure("setup", f"{time.monotonic() - started:.1f} s (tools and base image)")
    try:
        check_image(report, args.dockerfile, base, fresh=args.fresh)
    except Failed as exc:
        report.check("the test ran to its end", False, str(exc))
    report.figure("whole test", f"{time.monotonic() - started:.1f} s")
    return report.close()


def check_image(report: Report, dockerfile: Path, base: str, *, fresh: bool) -> None:
    # The commit's date, not now: an unchanged checkout builds entirely from the cache.
    git = ["git", "-C", str(ROOT), "log", "-1", "--format=%H %cI"]
    revision, _, created = run(git, check=False).stdout.strip().partition(" ")
    labels = {f"{LABEL}revision": revision, f"{LABEL}created": created} if revision else {}
    build_args = {"BASE": base}
    if fresh:
        run(["buildah", "rmi", "--force", TAG, f"{TAG}-build"], check=False)
        remove_leftovers("/opt/crm-gateway")
    # The build stage tagged too, so its layers are not dangling and stay cached.
    stage = build(dockerfile, ROOT, f"{TAG}-build", build_args, {}, target="build")
    built = build(dockerfile, ROOT, TAG, build_args, labels)
    report.check("the Dockerfile builds on the local base", True, f"--build-arg BASE={base}")
    cached, steps = cached_steps(built)
    removed = remove_leftovers("/opt/crm-gateway")
    report.figure(
        "build",
        f"{stage.seconds + built.seconds:.1f} s ({cached} of {steps} steps from the layer "
        f"cache; {removed} images of earlier builds removed)",
    )
    config = image_config(TAG)
    check_config(report, config, {**labels, f"{LABEL}base.name": base})
    with container_of(TAG) as box, container_of(base) as plain:
        root = box.mount()
        check_files(report, root, plain.mount(), config)
        version = box.run(box.argv("--version")).stdout.strip()
        label = (config.get("Labels") or {}).get(f"{LABEL}version")
        report.check(
            "the version label is the installed version",
            version == f"crm-gateway {label}",
            f"label {label!r}, `crm-gateway --version` says {version!r}",
        )
        check_running(report, box, CONFIG_DIR, DATA_DIR)
        check_bad_config(report, box, CONFIG_DIR)


def check_config(report: Report, config: dict[str, Any], given: dict[str, str]) -> None:
    user = str(config.get("User") or "")
    uid = user.split(":")[0]
    report.check(
        "the image's user is not root, by number",
        uid.isdigit() and int(uid) != 0,
        f"USER {user!r} (a number lets Kubernetes' runAsNonRoot verify it)",
    )
    test = (config.get("Healthcheck") or {}).get("Test") or []
    report.check("the image has a HEALTHCHECK", test[:1] == ["CMD"], " ".join(test)[:90])
    command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    report.check(
        "it runs the gateway on the mounted config",
        command[:2] == ["crm-gateway", "run"] and f"{CONFIG_DIR}/gateway.yaml" in command,
        " ".join(command),
    )
    labels = config.get("Labels") or {}
    missing = [name for name in OCI_LABELS if f"{LABEL}{name}" not in labels]
    wrong = [
        f"{name}={labels.get(name)!r}" for name, value in given.items() if labels.get(name) != value
    ]
    report.check(
        "the OCI labels are there, with the base and the commit",
        not missing and not wrong,
        f"missing {missing}, wrong {wrong}" if missing or wrong else f"{len(labels)} labels",
    )
    report.check(
        "the state folder is a volume",
        DATA_DIR in (config.get("Volumes") or {}),
        f"VOLUME {sorted(config.get('Volumes') or {})}",
    )


def check_files(report: Report, root: Path, base_root: Path, config: dict[str, Any]) -> None:
    tools = image_files.build_tools(root)
    report.check("no compiler or build tool in the image", not tools, ", ".join(tools) or "none")
    found = image_files.distributions(root)
    needed, test_only = image_files.project_packages(ROOT / "pyproject.toml")
    present = sorted(f"{name} ({found[name]})" for name in test_only & set(found))
    report.check("no test or lint package in the image", not present, ", ".join(present) or "none")
    absent = sorted(needed - set(found))
    report.check(
        "the gateway, its dependencies and every extra but dev are installed",
        not absent,
        f"missing {absent}" if absent else f"{len(needed)}: {', '.join(sorted(needed))}",
    )
    leaked = [
        str(path.relative_to(root)) for pattern in LEFT_BY_A_BUILD for path in root.glob(pattern)
    ]
    report.check("nothing left from the build", not leaked, ", ".join(leaked) or "none")
    folder = root / DATA_DIR.lstrip("/")
    data = folder.stat() if folder.is_dir() else None
    uid = str(config.get("User") or "0").split(":")[0]
    report.check(
        "the state folder belongs to the image's user",
        data is not None and str(data.st_uid) == uid != "0" and bool(data.st_mode & 0o200),
        f"{DATA_DIR}: uid {data.st_uid}, mode {data.st_mode & 0o7777:o}" if data else "missing",
    )
    total = image_files.apparent_size(root)
    added = total - image_files.apparent_size(base_root)
    report.check(
        "the image fits its size budget",
        total <= BUDGET_TOTAL and added <= BUDGET_ADDED,
        f"{total / 1e6:.0f} MB (budget {BUDGET_TOTAL / 1e6:.0f}), of which the Dockerfile "
        f"adds {added / 1e6:.0f} MB (budget {BUDGET_ADDED / 1e6:.0f})",
    )
    report.figure("image size", f"{total / 1e6:.0f} MB, {added / 1e6:.0f} MB on the base")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
