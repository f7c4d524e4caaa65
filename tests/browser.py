"""Real headless Chromium for end-to-end tests: Debian's /usr/bin/chromium driven by Playwright.

Playwright's own browser downloads are not used (`playwright install` needs hosts that these
machines cannot reach); Debian's package is. When it is missing and we are root with apt-get,
`ensure_chromium()` installs it once, under a lock so that parallel runs do not collide;
otherwise the test fails, saying how to install it.

Fixtures (function-scoped, one event loop each): `browser` and `browser_page`. Load them for
every test with `pytest_plugins = ["tests.browser"]` in tests/conftest.py, or import them into
a test module by name.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Root in a container: Chromium's sandbox needs user namespaces we may not have, and a small
# /dev/shm makes the renderer crash; /tmp is used instead.
LAUNCH_ARGS = ("--no-sandbox", "--disable-dev-shm-usage")
INSTALL_LOCK = Path(tempfile.gettempdir()) / "crm-gateway-chromium-install.lock"
HOW_TO_INSTALL = (
    f"Chromium is not installed at {CHROMIUM}; the browser tests drive Debian's package. "
    "Install it with `sudo apt-get update && sudo apt-get install -y --no-install-recommends "
    "chromium` (or run .ci/run, which does)."
)


class ChromiumMissing(RuntimeError):
    """Debian's Chromium is not installed and could not be installed from here."""


def _can_install() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_get(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", "-qq", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise ChromiumMissing(
            f"{HOW_TO_INSTALL}\n`apt-get {' '.join(args)}` failed ({done.returncode}):\n{tail}"
        )


def ensure_chromium() -> Path:
    """The path of Debian's Chromium, installing it first if it is missing and we may.

    Blocking (apt-get can take a minute): call it from a thread in async code.
    """
    if CHROMIUM.exists():
        return CHROMIUM
    if not _can_install():
        raise ChromiumMissing(HOW_TO_INSTALL)
    with INSTALL_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not CHROMIUM.exists():  # another run may have installed it while we waited
            _apt_get("update")
            _apt_get("install", "-y", "--no-install-recommends", "chromium")
    if not CHROMIUM.exists():
        raise ChromiumMissing(f"{HOW_TO_INSTALL}\napt-get installed chromium but not {CHROMIUM}.")
    return CHROMIUM


@asynccontextmanager
async def open_browser(*, headless: bool = True) -> AsyncIterator[Browser]:
    """A started Playwright driver and a launched Chromium, both stopped on exit."""
    executable = await asyncio.to_thread(ensure_chromium)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=headless, args=list(LAUNCH_ARGS)
        )
        async with browser:
            yield browser


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A headless Chromium of its own for each test."""
    async with open_browser() as launched:
        yield launched


@pytest.fixture
async def browser_page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a fresh context (its own cookies and storage) of `browser`."""
    context = await browser.new_context()
    async with context:
        yield await context.new_page()
