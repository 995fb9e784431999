"""Benchmark the service: /classify (raw body and multipart) against a naive endpoint.

Starts ``python -m service`` with the naive baseline enabled, measures the time
until /readyz answers 200, drives each endpoint with concurrent keep-alive
clients, and prints requests/s and p50/p99 latency per scenario, the ratio of
/classify to the naive endpoint, and the server's peak RSS.

The load generator is a minimal HTTP/1.1 client over asyncio streams rather
than a full client library, so that on a small machine the client spends as
little CPU as possible and the numbers describe the server.

    .venv/bin/python benchmarks/bench_service.py --checkpoint checkpoints/mnist-tq2
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EVAL_SET = ROOT / "data" / "eval" / "mnist-test-first1000.npz"
log = logging.getLogger("bench_service")


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    multipart: bool


SCENARIOS = (
    Scenario("/classify raw body", "/classify", multipart=False),
    Scenario("/classify multipart", "/classify", multipart=True),
    Scenario("naive multipart", "/naive/classify", multipart=True),
)


@dataclass
class Result:
    """One scenario, accumulated over every round it ran in."""

    scenario: Scenario
    concurrency: int
    rates: list[float] = field(default_factory=list)  # requests/s of each round
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    server_cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000.0 * self.server_cpu_seconds / self.requests

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample_pngs(count: int) -> list[bytes]:
    """MNIST test digits from the shipped evaluation subset, else seeded noise."""
    if EVAL_SET.is_file():
        sys.path.insert(0, str(ROOT))
        from models.evalset import load_eval_set

        images = (load_eval_set(EVAL_SET).images[:count, 0].numpy() * 255).round()
        arrays = images.astype(np.uint8)
    else:
        log.warning("%s not found; using random 28x28 images", EVAL_SET)
        arrays = np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)
    encoded = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def build_request(scenario: Scenario, port: int, png: bytes) -> bytes:
    if scenario.multipart:
        boundary = uuid.uuid4().hex
        body = (
            (
                f"--{boundary}\r\n"
                'Content-Disposition: form-data; name="file"; filename="digit.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + png
            + f"\r\n--{boundary}--\r\n".encode()
        )
        content_type = f"multipart/form-data; boundary={boundary}"
    else:
        body, content_type = png, "image/png"
    head = (
        f"POST {scenario.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")
    )
    await reader.readexactly(length)
    return status


async def drive(port: int, payloads: list[bytes], concurrency: int, total: int) -> tuple:
    """``concurrency`` keep-alive connections send ``total`` requests between them."""
    next_index = 0
    latencies: list[float] = []
    errors = 0

    async def client() -> None:
        nonlocal next_index, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < total:
                payload = payloads[next_index % len(payloads)]
                next_index += 1
                sent = time.perf_counter()
                writer.write(payload)
                status = await read_response(reader)
                latencies.append(time.perf_counter() - sent)
                errors += status != 200
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, errors


def run_round(
    result: Result, port: int, pid: int, pngs: list[bytes], total: int, warmup: int
) -> None:
    payloads = [build_request(result.scenario, port, png) for png in pngs]
    asyncio.run(drive(port, payloads, result.concurrency, warmup))
    cpu_before = process_cpu_seconds(pid)
    seconds, latencies, errors = asyncio.run(drive(port, payloads, result.concurrency, total))
    result.server_cpu_seconds += process_cpu_seconds(pid) - cpu_before
    result.rates.append(total / seconds)
    result.latencies += latencies
    result.requests += total
    result.errors += errors


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(checkpoint: Path, port: int, log_path: Path) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "QUSEC_ENABLE_NAIVE_ENDPOINT": "1"}
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--checkpoint", str(checkpoint)]
    started = time.perf_counter()
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=log_file)
    deadline = started + 120
    while time.perf_counter() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}; see {log_path}")
        if _ready(port):
            return server, time.perf_counter() - started
        time.sleep(0.02)
    server.kill()
    raise RuntimeError(f"server not ready after 120 s; see {log_path}")


def _ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_checkpoint(folder: Path) -> Path:
    """A random-weights TQ checkpoint, when no trained one is available."""
    sys.path.insert(0, str(ROOT))
    import torch

    from models.checkpoint import Manifest, save_checkpoint
    from models.registry import build_model

    torch.manual_seed(0)
    model = build_model("cleverhans-basic-cnn", (1, 28, 28), 10, {"kind": "tq", "levels": 2})
    manifest = Manifest(
        architecture="cleverhans-basic-cnn",
        dataset="mnist",
        input_shape=[1, 28, 28],
        class_names=[str(d) for d in range(10)],
        quantizer={},
    )
    save_checkpoint(folder / "bench-tq2", model, manifest)
    return folder / "bench-tq2"


def print_table(results: list[Result], ready_seconds: float, rss_mib: float, note: str) -> None:
    print(f"\n{note}")
    print(f"server ready after start: {ready_seconds:.2f} s; peak RSS: {rss_mib:.0f} MiB\n")
    print(
        "| scenario | concurrency | requests | errors | req/s (median of rounds) "
        "| p50 ms | p99 ms | server CPU ms/req |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.scenario.name} | {r.concurrency} | {r.requests} | {r.errors} | "
            f"{r.rate:.0f} | {r.percentile(50):.1f} | {r.percentile(99):.1f} | "
            f"{r.cpu_ms_per_request:.2f} |"
        )
    by_name = {r.scenario.name: r for r in results}
    naive = by_name["naive multipart"]
    print()
    for name in ("/classify raw body", "/classify multipart"):
        r = by_name[name]
        print(
            f"{name} vs naive multipart: throughput x{r.rate / naive.rate:.2f}, "
            f"p99 {r.percentile(99):.1f} ms vs {naive.percentile(99):.1f} ms, "
            f"server CPU per request x{naive.cpu_ms_per_request / r.cpu_ms_per_request:.2f} less"
        )
    for r in results:
        print(f"{r.scenario.name} req/s per round: {', '.join(f'{x:.0f}' for x in r.rates)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "mnist-tq2")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--requests", type=int, default=1200, help="measured per scenario and round"
    )
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured, before each")
    parser.add_argument(
        "--rounds", type=int, default=5, help="scenarios run interleaved this many times"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory(prefix="qusec-bench-") as scratch:
        checkpoint = args.checkpoint
        if not (checkpoint / "manifest.json").is_file():
            log.warning("%s not found; benchmarking a random-weights TQ checkpoint", checkpoint)
            checkpoint = make_checkpoint(Path(scratch))
        pngs = sample_pngs(256)
        port = free_port()
        server, ready_seconds = start_server(checkpoint, port, Path(scratch) / "server.log")
        results = [Result(scenario, args.concurrency) for scenario in SCENARIOS]
        try:
            # Interleaved rounds, so a neighbour's load on a shared machine hits all alike.
            for _ in range(args.rounds):
                for result in results:
                    run_round(result, port, server.pid, pngs, args.requests, args.warmup)
            rss = peak_rss_mib(server.pid)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    note = (
        f"checkpoint {checkpoint.name}; {os.cpu_count()} CPUs ({platform.machine()}); "
        f"{args.rounds} interleaved rounds of {args.requests} requests per scenario, "
        f"each after {args.warmup} unmeasured"
    )
    print_table(results, ready_seconds, rss, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
