"""A real ``python -m service`` on a free loopback port, serving the bundled checkpoints
(``mnist-pgd``, the default, ``cifar10-resnet20-fgsm``, ``cifar10-resnet20``, ``mnist-tq2`` and
``cifar10-tq4``) with an admin token and its own SQLite job
store, for the client's tests to talk to over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "client-tests-admin-token-0123456789"
STARTUP_SECONDS = 180  # loading and warming two models on a busy 2-core machine


@dataclass(frozen=True)
class Server:
    url: str
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise AssertionError(f"the service was not ready in {STARTUP_SECONDS} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("client-server")
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QUSEC_")},
        "QUSEC_ADMIN_TOKEN": ADMIN_TOKEN,
        "QUSEC_ROBUSTNESS_DB": str(folder / "jobs.sqlite3"),
        "QUSEC_TORCH_THREADS": "1",
        "QUSEC_DECODE_THREADS": "1",
    }
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    log = folder / "server.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url, log)
        yield Server(url, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
