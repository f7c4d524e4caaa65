"""A PostgreSQL cluster of the test's own: `initdb` into a folder of its own, `pg_ctl` on a
free loopback port, stopped and started again by the test (the machine's server on 5432 is
left alone). Where the binaries are missing they are installed with apt when we are root;
`initdb` refuses root, so as root the cluster runs as the `postgres` system user (runuser).
pg_stat_statements is loaded, so a test can count the statements a gateway sent."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.postgres_server import blocking
from tests.process import free_port

DATABASE = "crm_gateway"  # the database the gateways of a test share


def _bindir() -> Path | None:
    """Where initdb and pg_ctl are: `pg_config --bindir`, else Debian's newest version."""
    found = shutil.which("pg_config")
    if found:
        done = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        folder = Path(done.stdout.strip())
        if (folder / "initdb").exists():
            return folder
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return versions[0].parent if versions else None


def _install() -> Path | None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=120", "install", "-y", "-qq", "postgresql"],
        check=False,
        capture_output=True,
        timeout=600,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    return _bindir()


class PostgresCluster:
    """One cluster: `start`, `stop` (fast or immediate: a crash), `url`, `sql`, `statements`."""

    def __init__(self, bindir: Path, folder: Path, user: str | None) -> None:
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "server.log"
        self.user = user  # the system user the server runs as (None: ourselves)
        self.port = free_port()

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=timeout, cwd="/"
        )

    def init(self) -> None:
        done = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync", "--locale=C",
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"initdb failed:\n{done.stdout}{done.stderr}")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "shared_preload_libraries = 'pg_stat_statements'\n"
                "pg_stat_statements.track = 'all'\n"
                "max_connections = 60\n"
                "fsync = off\n"  # the test's own cluster; a stop is not a power cut
                "full_page_writes = off\n"
            )

    def start(self) -> None:
        done = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")
        if done.returncode != 0:
            raise AssertionError(f"pg_ctl start failed:\n{done.stdout}{done.stderr}\n{self.tail()}")

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash as the server sees it: no checkpoint, every connection cut;
        the next start replays the log."""
        done = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        if done.returncode != 0:
            raise AssertionError(f"pg_ctl stop failed:\n{done.stdout}{done.stderr}")

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, *statements: str, database: str = DATABASE) -> list[list[tuple[Any, ...]]]:
        """Statements run straight on the server, outside our code (the test's own look)."""
        import asyncpg

        async def run() -> list[list[tuple[Any, ...]]]:
            conn = await asyncpg.connect(self.url(database), timeout=5)
            try:
                return [[tuple(r) for r in await conn.fetch(s)] for s in statements]
            finally:
                await conn.close()

        return blocking(run)

    def create_database(self, name: str = DATABASE) -> str:
        self.sql(f'CREATE DATABASE "{name}"', database="postgres")
        return self.url(name)

    def reset_statements(self) -> None:
        self.sql("SELECT pg_stat_statements_reset()", database="postgres")

    def statements(self, database: str = DATABASE) -> dict[str, int]:
        """Calls per statement sent to `database` since the last reset (pg_stat_statements,
        read from the `postgres` database, so the test's own look is not counted)."""
        rows = self.sql(
            "SELECT s.query, s.calls FROM pg_stat_statements s"
            f" JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{database}'",
            database="postgres",
        )[0]
        return {str(query): int(calls) for query, calls in rows}


def _cluster_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root, initdb needs another user: no `postgres` system user")
    return "postgres"


@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A running cluster of the test's own with an empty `crm_gateway` database; stopped and
    removed after the test. Skipped, saying why, only where PostgreSQL cannot be had."""
    bindir = _bindir() or _install()
    if bindir is None:
        pytest.skip(
            "NO POSTGRESQL BINARIES (initdb, pg_ctl): apt-get install postgresql; the tests "
            "that stop a PostgreSQL of their own cannot run"
        )
    user = _cluster_user()
    folder = Path(tempfile.mkdtemp(prefix="crmgw-pg-"))
    if user is not None:
        shutil.chown(folder, user)
    cluster = PostgresCluster(bindir, folder, user)
    try:
        cluster.init()
        cluster.start()
        cluster.sql("CREATE EXTENSION pg_stat_statements", database="postgres")
        cluster.create_database()
        yield cluster
    finally:
        if cluster.running():
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
