"""Goodput under overload: /classify at concurrency 16, 64, 256 and 1,024.

Starts ``python -m service`` with its default settings (or ``--env KEY=VALUE``
overrides), then for each concurrency runs closed-loop keep-alive clients for a
fixed time. Each client sends the next request as soon as the previous one is
answered and ignores ``Retry-After``: the worst case for the server. Prints, per
level, the goodput (200s per second) and its share of the best level's, the
refusals (503), other errors, latency percentiles, the server's CPU per 200 and
its resident memory.

The load generator is wrk (``--client wrk``, the default when it is installed,
with ``benchmarks/overload.lua``): it costs the shared machine little, but times
all answers together, so a separate probe (one connection, one request every
50 ms) times the 503s alone. ``--client python`` uses an asyncio client instead,
which times 200s and 503s apart but, on a small machine, competes with the
server for the CPU as connections grow.

    .venv/bin/python benchmarks/bench_overload.py --checkpoint checkpoints/mnist-tq2
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import (  # noqa: E402  (a sibling script, not a package)
    ROOT,
    Scenario,
    build_request,
    free_port,
    launch_service,
    make_checkpoint,
    percentile_ms,
    process_tree,
    sample_pngs,
    status_kib,
    tree_cpu_seconds,
)

log = logging.getLogger("bench_overload")
RAW = Scenario("/classify raw body", "/classify", multipart=False)
LUA = Path(__file__).resolve().parent / "overload.lua"


@dataclass
class Level:
    concurrency: int
    seconds: float = 0.0
    ok: int = 0
    refused: int = 0
    errors: int = 0
    latencies_ms: tuple[str, str] = ("-", "-")  # p50, p99 of what the client times
    refused_latencies: list[float] = field(default_factory=list)  # 503s alone
    ok_latencies: list[float] = field(default_factory=list)  # python client only
    rss_mib: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def goodput(self) -> float:
        return self.ok / self.seconds


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
                    level.ok += 1
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
    level.refused = len(level.refused_latencies)
    level.latencies_ms = (
        percentile_ms(level.ok_latencies, 50),
        percentile_ms(level.ok_latencies, 99),
    )


def run_wrk(level: Level, port: int, png: Path, seconds: float) -> None:
    """wrk at ``level.concurrency`` connections; a probe times the 503s meanwhile."""
    command = [
        "wrk", "-t2", f"-c{level.concurrency}", f"-d{seconds:g}s", "--timeout", "30s",
        "-s", str(LUA), f"http://127.0.0.1:{port}/classify", "--", str(png), "image/png",
    ]  # fmt: skip
    stop = threading.Event()
    probe = threading.Thread(target=probe_refusals, args=(port, png.read_bytes(), level, stop))
    probe.start()
    try:
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        stop.set()
        probe.join()
    fields = dict(re.findall(r"(\w+)=([\d.]+)", output.split("QUSEC", 1)[1]))
    level.ok, level.refused = int(fields["ok"]), int(fields["refused"])
    level.errors = int(fields["other"]) + int(fields["socket_errors"])
    level.seconds = float(fields["seconds"])
    level.latencies_ms = (
        f"{int(fields['p50_us']) / 1000:.1f}",
        f"{int(fields['p99_us']) / 1000:.1f}",
    )


def probe_refusals(port: int, png: bytes, level: Level, stop: threading.Event) -> None:
    """One keep-alive connection, one request every 50 ms; keeps the 503s' latencies."""
    request = build_request(RAW, port, png)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        reader = sock.makefile("rb")
        while not stop.wait(0.05):
            sent = time.perf_counter()
            sock.sendall(request)
            status = int(reader.readline().split()[1])
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            reader.read(length)
            if status == 503:
                level.refused_latencies.append(time.perf_counter() - sent)


def resident_mib(pid: int, key: str = "VmRSS:") -> float:
    """A process's resident memory plus its descendants' (decode workers, a supervisor's
    serving workers), summed."""
    return sum(status_kib(member, key) for member in process_tree(pid)) / 1024


def start_server(checkpoint: Path, port: int, log_path: Path, env: dict[str, str]):
    options = ("--log-level", "warning")
    return launch_service(checkpoint, port, log_path, options=options, env=env)[0]


def print_table(levels: list[Level], note: str) -> None:
    peak = max(level.goodput for level in levels)
    print(f"\n{note}\n")
    print(
        "| concurrency | seconds | 200s | goodput req/s | of peak | 503s | other errors "
        "| p50 ms | p99 ms | 503 p50 ms | 503 p99 ms | server CPU ms per 200 | server RSS MiB |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for level in levels:
        cpu = f"{1000 * level.cpu_seconds / level.ok:.2f}" if level.ok else "-"
        print(
            f"| {level.concurrency} | {level.seconds:.1f} | {level.ok} | {level.goodput:.0f} | "
            f"{level.goodput / peak:.0%} | {level.refused} | {level.errors} | "
            f"{level.latencies_ms[0]} | {level.latencies_ms[1]} | "
            f"{percentile_ms(level.refused_latencies, 50)} | "
            f"{percentile_ms(level.refused_latencies, 99)} | {cpu} | {level.rss_mib:.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "mnist-tq2")
    parser.add_argument("--levels", default="16,64,256,1024", help="comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured, before each")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument(
        "--client", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("BENCH_LOG", "INFO"), format="%(message)s")
    # Every client connects from 127.0.0.1 but stands for a different user: the per-client
    # connection cap (256) would otherwise refuse the 1,024-client level (--env overrides).
    env = {"QUSEC_MAX_CONNECTIONS_PER_CLIENT": "0"}
    env.update(item.split("=", 1) for item in args.env)

    with tempfile.TemporaryDirectory(prefix="qusec-overload-") as scratch:
        checkpoint = args.checkpoint
        if not (checkpoint / "manifest.json").is_file():
            log.warning("%s not found; benchmarking a random-weights TQ checkpoint", checkpoint)
            checkpoint = make_checkpoint(Path(scratch))
        port = free_port()
        pngs = sample_pngs(256)
        payloads = [build_request(RAW, port, png) for png in pngs]
        png_file = Path(scratch) / "digit.png"
        png_file.write_bytes(pngs[0])
        server = start_server(checkpoint, port, Path(scratch) / "server.log", env)
        levels = [Level(int(c)) for c in args.levels.split(",")]
        try:
            for level in levels:
                asyncio.run(run_level(Level(level.concurrency), port, payloads, args.warmup))
                cpu_before = tree_cpu_seconds(server.pid)
                if args.client == "wrk":
                    run_wrk(level, port, png_file, args.seconds)
                else:
                    asyncio.run(run_level(level, port, payloads, args.seconds))
                level.cpu_seconds = tree_cpu_seconds(server.pid) - cpu_before
                level.rss_mib = resident_mib(server.pid)
                log.info("concurrency %d: %.0f 200s/s", level.concurrency, level.goodput)
            peak_rss = resident_mib(server.pid, "VmHWM:")
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    overrides = " ".join(f"{key}={value}" for key, value in env.items())
    note = (
        f"checkpoint {checkpoint.name}; {os.cpu_count()} CPUs ({platform.machine()}); "
        f"{args.seconds:.0f} s per level after {args.warmup:.0f} s unmeasured; closed-loop "
        f"raw-body MNIST PNG clients ({args.client}) ignoring Retry-After; "
        f"server overrides: {overrides}; "
        f"server peak RSS {peak_rss:.0f} MiB"
    )
    print_table(levels, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
