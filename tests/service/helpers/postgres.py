"""A throwaway PostgreSQL server for the tests: Debian's ``postgresql`` package, a fresh
cluster (``initdb``) in a temporary folder, started with ``pg_ctl`` on a free loopback
port and removed afterwards. ``initdb`` refuses to run as root, so under root the
server runs as the ``postgres`` user the package creates.

Nothing is skipped: when the server cannot be had, the tests that need it fail, saying
why (``.ci/run`` installs the package).
"""

from __future__ import annotations

import glob
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


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        pytest.fail(
            f"PostgreSQL's {name} is not installed: these tests need a real server "
            "(apt-get install postgresql; .ci/run does it)",
            pytrace=False,
        )
    return found[-1]


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(
        _as_server_user(command), capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"{what} failed: {result.stdout}{result.stderr}", pytrace=False)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A running server; yields the URL of its ``postgres`` database."""
    root = Path(tempfile.mkdtemp(prefix="qusec-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, port = root / "data", free_port()
    _run(
        [_binary("initdb"), "-D", str(data), "-U", USER, "-A", "trust", "--no-sync", "-E", "UTF8"],
        "initdb",
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = _binary("pg_ctl")
    _run([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"], "start")
    try:
        yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    finally:
        _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], "pg_ctl stop")
        shutil.rmtree(root)


def fresh_database(server_url: str) -> str:
    """A new empty database on the server; its URL."""
    name = f"jobs_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"
