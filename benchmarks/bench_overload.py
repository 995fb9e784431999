"""Goodput under overload: /classify at concurrency 16, 64, 256 and 1,024.

Starts ``python -m service`` with its default settings (or ``--env KEY=VALUE``
overrides), then for each concurrency runs closed-loop keep-alive clients for a
fixed time. Each client sends the next request as soon as the previous one is
answered and ignores ``Retry-After``: the worst case for the server. Prints, per
level, the goodput (200s per second), the share of refusals (503), other errors,
p50/p99 of the 200s, p99 of the 503s, and the server's resident memory;
goodput is also given as a share of the best level's.

    .venv/bin/python benchmarks/bench_overload.py --checkpoint checkpoints/mnist-tq2

The load generator shares the machine with the server; on a small machine its
own CPU use grows with the number of connections.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import (  # noqa: E402  (a sibling script, not a package)
    ROOT,
    Scenario,
    _ready,
    build_request,
    free_port,
    make_checkpoint,
    process_cpu_seconds,
    sample_pngs,
)

log = logging.getLogger("bench_overload")
RAW = Scenario("/classify raw body", "/classify", multipart=False)


@dataclass
class Level:
    concurrency: int
    seconds: float = 0.0
    ok_latencies: list[float] = field(default_factory=list)
    refused_latencies: list[float] = field(default_factory=list)
    errors: int = 0
    rss_mib: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def goodput(self) -> float:
        return len(self.ok_latencies) / self.seconds

    @property
    def answered(self) -> int:
        return len(self.ok_latencies) + len(self.refused_latencies)


async def read_status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def run_level(level: Level, port: int, payloads: list[bytes], seconds: float) -> None:
    stop_at = time.perf_counter() + seconds

    async def client(index: int) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            level.errors += 1
            return
        count = index
        try:
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                writer.write(payloads[count % len(payloads)])
                count += 1
                status = await read_status(reader)
                elapsed = time.perf_counter() - sent
                if status == 200:
                    level.ok_latencies.append(elapsed)
                elif status == 503:
                    level.refused_latencies.append(elapsed)
                else:
                    level.errors += 1
        except (OSError, asyncio.IncompleteReadError) as exc:
            level.errors += 1
            log.debug("client %d: %r", index, exc)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(level.concurrency)))
    level.seconds = time.perf_counter() - started


def resident_mib(pid: int, key: str = "VmRSS:") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(checkpoint: Path, port: int, log_path: Path, env: dict[str, str]):
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--checkpoint", str(checkpoint), "--log-level", "warning"]
    with open(log_path, "wb") as sink:
        server = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=sink, stderr=sink
        )
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}; see {log_path}")
        if _ready(port):
            return server
        time.sleep(0.05)
    server.kill()
    raise RuntimeError("server not ready after 120 s")


def percentile_ms(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.1f}" if values else "-"


def print_table(levels: list[Level], note: str) -> None:
    peak = max(level.goodput for level in levels)
    print(f"\n{note}\n")
    print(
        "| concurrency | seconds | 200s | goodput req/s | of peak | 503s | other errors "
        "| 200 p50 ms | 200 p99 ms | 503 p99 ms | server CPU ms per 200 | server RSS MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for level in levels:
        ok = len(level.ok_latencies)
        cpu = f"{1000 * level.cpu_seconds / ok:.2f}" if ok else "-"
        print(
            f"| {level.concurrency} | {level.seconds:.1f} | {ok} | {level.goodput:.0f} | "
            f"{level.goodput / peak:.0%} | {len(level.refused_latencies)} | {level.errors} | "
            f"{percentile_ms(level.ok_latencies, 50)} | {percentile_ms(level.ok_latencies, 99)} | "
            f"{percentile_ms(level.refused_latencies, 99)} | {cpu} | {level.rss_mib:.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "mnist-tq2")
    parser.add_argument("--levels", default="16,64,256,1024", help="comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured, before each")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("BENCH_LOG", "INFO"), format="%(message)s")
    env = dict(item.split("=", 1) for item in args.env)

    with tempfile.TemporaryDirectory(prefix="qusec-overload-") as scratch:
        checkpoint = args.checkpoint
        if not (checkpoint / "manifest.json").is_file():
            log.warning("%s not found; benchmarking a random-weights TQ checkpoint", checkpoint)
            checkpoint = make_checkpoint(Path(scratch))
        port = free_port()
        payloads = [build_request(RAW, port, png) for png in sample_pngs(256)]
        server = start_server(checkpoint, port, Path(scratch) / "server.log", env)
        levels = [Level(int(c)) for c in args.levels.split(",")]
        try:
            for level in levels:
                asyncio.run(run_level(Level(level.concurrency), port, payloads, args.warmup))
                cpu_before = process_cpu_seconds(server.pid)
                asyncio.run(run_level(level, port, payloads, args.seconds))
                level.cpu_seconds = process_cpu_seconds(server.pid) - cpu_before
                level.rss_mib = resident_mib(server.pid)
                log.info("concurrency %d: %.0f 200s/s", level.concurrency, level.goodput)
            peak_rss = resident_mib(server.pid, "VmHWM:")
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    overrides = " ".join(args.env) or "none"
    note = (
        f"checkpoint {checkpoint.name}; {os.cpu_count()} CPUs ({platform.machine()}); "
        f"{args.seconds:.0f} s per level after {args.warmup:.0f} s unmeasured; closed-loop "
        f"raw-body MNIST PNG clients ignoring Retry-After; server overrides: {overrides}; "
        f"server peak RSS {peak_rss:.0f} MiB"
    )
    print_table(levels, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
