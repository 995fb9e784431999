"""Honest uploads that need a decode worker, beside three clients looping decode bombs.

Starts ``python -m service`` with an admin token (and ``--env`` overrides), then runs
one honest client from 127.0.0.2: a keep-alive connection sending 280 x 280 PNGs (MNIST
digits scaled up, so each needs a decode worker) one after another. Phases:

* ``idle``: the honest client alone, the baseline;
* ``bombs, admin token``: three more clients (127.0.0.3-5, in a process of their own),
  each looping over four accepted 4,096 x 4,096 files: a 32-scan progressive JPEG, a
  16-bit RGBA PNG, a 200-frame APNG and a lossless WebP, sent with the admin token,
  so that the anonymous cost ceiling lets them through to be decoded;
* ``bombs, anonymous``: the same without the token.

Prints, per phase: honest requests, their success rate, median and p99 latency and the
median against the idle one; the bombs' answers by status and reason.

    .venv/bin/python benchmarks/bench_decode_fairness.py --checkpoint checkpoints/mnist-tq2
    .venv/bin/python benchmarks/bench_decode_fairness.py --source /tmp/qusec-before
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fair_share import start_server  # noqa: E402
from bench_service import ROOT, free_port, make_checkpoint, percentile_ms, sample_pngs  # noqa: E402

log = logging.getLogger("bench_decode_fairness")
TOKEN = "bench-admin-token-0123456789abcdef"
HONEST_ADDRESS = "127.0.0.2"
BOMB_ADDRESSES = ("127.0.0.3", "127.0.0.4", "127.0.0.5")


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)  # of the 200s
    failures: Counter = field(default_factory=Counter)
    bombs: Counter = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.failures.values())


def bombs() -> dict[str, bytes]:
    """The four files of the issue, built by the tests' generators."""
    sys.path.insert(0, str(ROOT))
    from tests.service.helpers.hostile_files import (
        apng_canvas,
        png_rgba16_canvas,
        progressive_jpeg_scans,
        webp_canvas,
    )

    return {
        "jpeg-32-scans": progressive_jpeg_scans(32),
        "png-rgba16": png_rgba16_canvas(),
        "apng-200": apng_canvas(200),
        "webp-lossless": webp_canvas(),
    }


def honest_pngs(count: int) -> list[bytes]:
    """MNIST digits scaled to 280 x 280: too many pixels to decode on the event loop."""
    out = []
    for png in sample_pngs(count):
        image = Image.open(io.BytesIO(png)).resize((280, 280), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def request(port: int, body: bytes, token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
        f"{auth}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(port: int, source: str, payloads: list[bytes], stop_at: float, record):
    """Send ``payloads`` in turn on one keep-alive connection until ``stop_at``; tell
    ``record`` the index of each payload sent, its status, reason and latency."""
    reader = writer = None
    count = 0
    while time.perf_counter() < stop_at:
        if writer is None:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
        started = time.perf_counter()
        try:
            writer.write(payloads[count % len(payloads)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            status = int(head.split(b" ", 2)[1])
            reason = "" if status == 200 else json.loads(body).get("reason", "")
            record(count % len(payloads), status, reason, time.perf_counter() - started)
            if b"connection: close" in head.lower():
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError) as exc:
            record(count % len(payloads), 0, type(exc).__name__, time.perf_counter() - started)
            writer = None
        count += 1
    if writer is not None:
        writer.close()


def run_bombs(port: int, token: str | None, seconds: float, report: str) -> None:
    files = bombs()
    answers: Counter = Counter()

    def client(offset: int, source: str, stop_at: float):
        names = list(files)[offset:] + list(files)[:offset]  # each client starts elsewhere
        payloads = [request(port, files[name], token) for name in names]

        def record(index: int, status: int, reason: str, elapsed: float) -> None:
            answers[f"{names[index]} {status} {reason}".strip()] += 1

        return exchange(port, source, payloads, stop_at, record)

    async def main() -> None:
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(client(i, a, stop_at) for i, a in enumerate(BOMB_ADDRESSES)))

    asyncio.run(main())
    Path(report).write_text(json.dumps(answers))


def measure(name: str, port: int, args, honest: list[bytes], scratch: Path) -> Phase:
    phase = Phase(name)
    bombers = None
    report = scratch / f"bombs-{len(name)}-{time.monotonic_ns()}.json"
    if name != "idle":
        token = TOKEN if "token" in name else None
        duration = args.seconds + args.ramp
        bombers = multiprocessing.Process(
            target=run_bombs, args=(port, token, duration, str(report)), daemon=True
        )
        bombers.start()
        time.sleep(args.ramp)
    payloads = [request(port, png, None) for png in honest]

    def record(index: int, status: int, reason: str, elapsed: float) -> None:
        if status == 200:
            phase.latencies.append(elapsed)
        else:
            phase.failures[f"{status} {reason}"] += 1

    stop_at = time.perf_counter() + args.seconds
    asyncio.run(exchange(port, HONEST_ADDRESS, payloads, stop_at, record))
    if bombers is not None:
        bombers.join(args.ramp + 120)
        if report.is_file():
            phase.bombs.update(json.loads(report.read_text()))
    return phase


def print_table(phases: list[Phase], note: str) -> None:
    idle = statistics.median(phases[0].latencies) if phases[0].latencies else None
    print(f"\n{note}\n")
    print(
        "| phase | honest requests | honest success | median ms | p99 ms | median vs idle "
        "| honest failures | bomb answers |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for p in phases:
        rate = f"{len(p.latencies) / p.requests:.1%}" if p.requests else "-"
        ratio = f"{statistics.median(p.latencies) / idle:.2f}x" if idle and p.latencies else "-"
        failures = ", ".join(f"{k}: {v}" for k, v in p.failures.most_common()) or "none"
        answers = "; ".join(f"{k}: {v}" for k, v in sorted(p.bombs.items())) or "-"
        print(
            f"| {p.name} | {p.requests} | {rate} | {percentile_ms(p.latencies, 50)} "
            f"| {percentile_ms(p.latencies, 99)} "
            f"| {ratio} | {failures} | {answers} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "mnist-tq2")
    parser.add_argument("--source", type=Path, default=ROOT, help="the service's source tree")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured per phase")
    parser.add_argument("--ramp", type=float, default=3.0, help="bombs alone, before")
    parser.add_argument(
        "--phases", default="idle,bombs with the admin token,bombs anonymous", help="in order"
    )
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("BENCH_LOG", "INFO"), format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="qusec-decode-fairness-") as scratch:
        checkpoint = args.checkpoint
        if not (checkpoint / "manifest.json").is_file():
            log.warning("%s not found; benchmarking a random-weights TQ checkpoint", checkpoint)
            checkpoint = make_checkpoint(Path(scratch))
        port = free_port()
        env = {
            "QUSEC_ADMIN_TOKEN": TOKEN,
            "QUSEC_ROBUSTNESS_RUN_JOBS": "false",
            "QUSEC_ROBUSTNESS_DB": str(Path(scratch) / "jobs.sqlite3"),
            **dict(item.split("=", 1) for item in args.env),
        }
        server = start_server(args.source, checkpoint, port, Path(scratch) / "server.log", env)
        honest = honest_pngs(64)
        phases = []
        try:
            for name in args.phases.split(","):
                phase = measure(name, port, args, honest, Path(scratch))
                log.info("%s: %d honest requests", name, phase.requests)
                phases.append(phase)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    overrides = " ".join(args.env) or "none"
    note = (
        f"checkpoint {checkpoint.name}; source {args.source}; {os.cpu_count()} CPUs "
        f"({platform.machine()}); one honest keep-alive client from {HONEST_ADDRESS} sending "
        f"280x280 PNGs ({len(honest[0])} B) back to back, {args.seconds:.0f} s per phase; "
        f"three bomb clients from {', '.join(BOMB_ADDRESSES)}, started {args.ramp:.0f} s "
        f"before; server overrides: {overrides}"
    )
    print_table(phases, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
