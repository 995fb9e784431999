"""Honest /classify beside one hostile client: the connection hog and the slow body.

Starts ``python -m service`` (default settings, or ``--env KEY=VALUE`` overrides) and,
for each attack, runs the attacker in a process of its own from one loopback address
(127.0.0.3) while honest clients on another (127.0.0.2) each open a connection, send
one MNIST PNG to ``/classify``, read the answer and close, over and over. Linux routes
all of 127.0.0.0/8 to the server, so the service sees two clients.

Attacks (each ``--connections`` connections, 1,030 by default, reconnecting whenever
the server cuts one or refuses it):

* ``none``: no attacker, the baseline;
* ``hog``: each connection declares a 5,000,000-byte body and sends 1,500 B/s of it,
  just above the default minimum rate of 1,024 B/s;
* ``slow-body``: each connection declares a 100,000-byte body and sends 1 B/s, below
  the minimum rate.

Prints, per attack: the attacker's open connections (median of samples taken every
second), connections it opened, the honest requests, their success rate (200s), median
and p99 latency of the 200s, and what the failures were.

    .venv/bin/python benchmarks/bench_fair_share.py --checkpoint checkpoints/mnist-tq2
    .venv/bin/python benchmarks/bench_fair_share.py --source /tmp/qusec-before   # another tree
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import platform
import resource
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import (  # noqa: E402
    ROOT,
    free_port,
    launch_service,
    make_checkpoint,
    percentile_ms,
    sample_pngs,
)

log = logging.getLogger("bench_fair_share")
HONEST_ADDRESS = "127.0.0.2"
ATTACKER_ADDRESS = "127.0.0.3"
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Attack:
    name: str
    declared_bytes: int = 0
    bytes_per_second: float = 0.0


ATTACKS = {
    "none": Attack("none"),
    "hog": Attack("hog", declared_bytes=5_000_000, bytes_per_second=1500),
    "slow-body": Attack("slow-body", declared_bytes=100_000, bytes_per_second=1),
}


@dataclass
class Outcome:
    attack: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of the 200s
    failures: Counter = field(default_factory=Counter)
    attacker_open: list[int] = field(default_factory=list)
    attacker_opened: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.failures.values())


# --- the attacker (a process of its own) ----------------------------------------------------


async def hold_connection(port: int, attack: Attack, counts: dict[str, int]) -> None:
    """One connection of the attack, reopened each time the server ends it."""
    head = (
        f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        f"Content-Length: {attack.declared_bytes}\r\n\r\n"
    ).encode()
    chunk_bytes = max(1, int(attack.bytes_per_second))
    while True:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(ATTACKER_ADDRESS, 0)
            )
        except OSError:
            await asyncio.sleep(0.05)  # not accepted: try again, as a hog would
            continue
        counts["opened"] += 1
        counts["open"] += 1
        cut = asyncio.ensure_future(reader.read(65536))  # any answer or EOF: cut off
        try:
            writer.write(head)
            sent = 0
            while not cut.done() and sent < attack.declared_bytes:
                writer.write(b"\x00" * min(chunk_bytes, attack.declared_bytes - sent))
                sent += chunk_bytes
                await asyncio.wait([cut], timeout=1.0)
            await cut
        except OSError:
            pass
        finally:
            cut.cancel()
            counts["open"] -= 1
            writer.close()


async def attack_main(port: int, attack: Attack, connections: int, report: str) -> None:
    counts = {"opened": 0, "open": 0}
    tasks = [asyncio.create_task(hold_connection(port, attack, counts)) for _ in range(connections)]
    try:
        while True:
            Path(report).write_text(json.dumps(counts))
            await asyncio.sleep(0.5)
    finally:
        for task in tasks:
            task.cancel()


def run_attacker(port: int, attack: Attack, connections: int, report: str) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, connections + 512), hard))
    asyncio.run(attack_main(port, attack, connections, report))


# --- the honest clients -------------------------------------------------------------------


async def honest_request(port: int, request: bytes) -> tuple[str, float]:
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(HONEST_ADDRESS, 0)
            )
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            if status != "200":
                status = f"{status} {json.loads(body).get('reason', '')}"
            return status, time.perf_counter() - started
    except TimeoutError:
        return "timeout", time.perf_counter() - started
    except (OSError, asyncio.IncompleteReadError) as exc:
        return type(exc).__name__, time.perf_counter() - started
    finally:
        if writer is not None:
            writer.close()


async def honest_clients(port: int, requests: list[bytes], count: int, seconds: float, out):
    stop_at = time.perf_counter() + seconds

    async def client(index: int) -> None:
        n = index
        while time.perf_counter() < stop_at:
            status, elapsed = await honest_request(port, requests[n % len(requests)])
            n += count
            if status == "200":
                out.latencies.append(elapsed)
            else:
                out.failures[status] += 1

    await asyncio.gather(*(client(i) for i in range(count)))


def build_request(port: int, png: bytes) -> bytes:
    head = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(png)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + png


# --- one run ----------------------------------------------------------------------------------


def measure(port: int, attack: Attack, args, requests: list[bytes], scratch: Path) -> Outcome:
    outcome = Outcome(attack.name)
    report = scratch / f"attacker-{attack.name}.json"
    attacker = None
    if attack.declared_bytes:
        attacker = multiprocessing.Process(
            target=run_attacker, args=(port, attack, args.connections, str(report)), daemon=True
        )
        attacker.start()
        time.sleep(args.ramp)  # let it take what it can
    stop_sampling = False

    async def sample() -> None:
        while not stop_sampling:
            with contextlib.suppress(OSError, ValueError):
                outcome.attacker_open.append(json.loads(report.read_text())["open"])
            await asyncio.sleep(1.0)

    async def run() -> None:
        nonlocal stop_sampling
        sampler = asyncio.create_task(sample())
        started = time.perf_counter()
        await honest_clients(port, requests, args.honest, args.seconds, outcome)
        outcome.seconds = time.perf_counter() - started
        stop_sampling = True
        await sampler

    asyncio.run(run())
    if attacker is not None:
        with contextlib.suppress(OSError, ValueError):
            outcome.attacker_opened = json.loads(report.read_text())["opened"]
        attacker.terminate()
        attacker.join(10)
        time.sleep(args.settle)  # the server closes what the attacker left
    return outcome


def start_server(source: Path, checkpoint: Path, port: int, log_path: Path, env: dict[str, str]):
    options = ("--log-level", "warning")
    return launch_service(checkpoint, port, log_path, options=options, env=env, source=source)[0]


def print_table(outcomes: list[Outcome], note: str) -> None:
    print(f"\n{note}\n")
    print(
        "| attack | attacker connections open (median) | attacker connections opened "
        "| honest requests | honest success | median ms | p99 ms | failures |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for o in outcomes:
        rate = f"{len(o.latencies) / o.requests:.1%}" if o.requests else "-"
        held = f"{statistics.median(o.attacker_open):.0f}" if o.attacker_open else "-"
        failures = ", ".join(f"{k}: {v}" for k, v in o.failures.most_common()) or "none"
        print(
            f"| {o.attack} | {held} | {o.attacker_opened or '-'} | {o.requests} | {rate} "
            f"| {percentile_ms(o.latencies, 50)} | {percentile_ms(o.latencies, 99)} | {failures} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "mnist-tq2")
    parser.add_argument("--source", type=Path, default=ROOT, help="the service's source tree")
    parser.add_argument("--attacks", default="none,hog,slow-body", help="comma-separated")
    parser.add_argument("--connections", type=int, default=1030, help="the attacker's")
    parser.add_argument("--honest", type=int, default=4, help="honest clients at once")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured per attack")
    parser.add_argument("--ramp", type=float, default=10.0, help="attack alone, before")
    parser.add_argument("--settle", type=float, default=5.0, help="pause after each attack")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("BENCH_LOG", "INFO"), format="%(message)s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.connections + 512), hard))

    with tempfile.TemporaryDirectory(prefix="qusec-fair-share-") as scratch:
        checkpoint = args.checkpoint
        if not (checkpoint / "manifest.json").is_file():
            log.warning("%s not found; benchmarking a random-weights TQ checkpoint", checkpoint)
            checkpoint = make_checkpoint(Path(scratch))
        port = free_port()
        requests = [build_request(port, png) for png in sample_pngs(64)]
        env = dict(item.split("=", 1) for item in args.env)
        server = start_server(args.source, checkpoint, port, Path(scratch) / "server.log", env)
        outcomes = []
        try:
            for name in args.attacks.split(","):
                outcome = measure(port, ATTACKS[name], args, requests, Path(scratch))
                log.info("%s: %d honest requests", name, outcome.requests)
                outcomes.append(outcome)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    overrides = " ".join(args.env) or "none"
    note = (
        f"checkpoint {checkpoint.name}; source {args.source}; {os.cpu_count()} CPUs "
        f"({platform.machine()}); {args.connections} attacker connections from "
        f"{ATTACKER_ADDRESS} ramped for {args.ramp:.0f} s; {args.honest} honest clients from "
        f"{HONEST_ADDRESS}, a new connection per request, {args.seconds:.0f} s per attack, "
        f"{REQUEST_TIMEOUT_SECONDS:.0f} s request timeout; server overrides: {overrides}"
    )
    print_table(outcomes, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
