"""The real service in a subprocess: ``python -m service`` on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.service.helpers.images import TEST_BODY_LIMIT, digit, encode

ROOT = Path(__file__).resolve().parents[3]
PNG = encode(digit(), "PNG")


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    port: int
    log: Path

    def log_lines(self) -> list[dict]:
        """The log's complete lines (one still being written, without its newline, is left)."""
        complete = self.log.read_text().rpartition("\n")[0]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def wait_for_log_lines(self, select, what: str, timeout: float = 120) -> list[dict]:
        """The log lines ``select`` keeps, once there are any: a line is written after its
        response has gone out, so a client can read the log before it is there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.log_lines() if select(line)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no log line in {timeout} s: {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(log: Path, args: list[str], env: dict[str, str] | None = None) -> Server:
    port = free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QUSEC_")},
        "QUSEC_TORCH_THREADS": "1",
        "QUSEC_DECODE_THREADS": "1",
        "QUSEC_MAX_BODY_BYTES": str(TEST_BODY_LIMIT),
        **(env or {}),
    }
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=sink, stderr=sink)
    server = Server(process, f"http://127.0.0.1:{port}", port, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"server not ready in 90 s:\n{log.read_text()}")


# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal so that the
# process's exit status still says how it ended.
STOPPED_BY_SIGTERM = (0, -signal.SIGTERM)


def stop(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    return server.process.wait(timeout=60)
