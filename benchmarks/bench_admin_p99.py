"""/classify latency while a robustness check runs, against the same service idle.

Starts ``python -m service`` with admin access and a temporary job database, then runs
interleaved rounds: concurrent keep-alive clients drive ``/classify`` with the service
idle, then again while a robustness-check job (PGD under BPDA on the bundled evaluation
set, by default) is crafting in its job process; the job is cancelled after each round.
Prints requests/s, p50/p99/p99.9 latency, the server's CPU per request, and the CPU the
job process used during the busy rounds (so a busy round is known to have had a busy job).

    .venv/bin/python benchmarks/bench_admin_p99.py --checkpoint checkpoints/mnist-tq2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bench_service import (
    ROOT,
    SCENARIOS,
    build_request,
    drive,
    free_port,
    process_cpu_seconds,
    sample_pngs,
)

log = logging.getLogger("bench_admin_p99")
TOKEN = "bench-admin-token-0123456789abcdef"
JOB = {
    "attacks": ["pgd"],
    "threat_models": ["bpda"],
    "epsilons": [0.3],
    "samples": 1000,
    "batch_size": 100,
    "sanity_epsilon": None,
}


@dataclass
class Round:
    name: str
    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    server_cpu_seconds: float = 0.0
    job_cpu_seconds: float = 0.0
    wall_seconds: float = 0.0

    def ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000.0


def admin(port: int, method: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_job(port: int, job_id: str, condition, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = admin(port, "GET", f"/robustness-check/{job_id}")
        if condition(job):
            return job
        time.sleep(0.1)
    raise RuntimeError(f"job {job_id} did not reach the condition: {job}")


def job_pid(log_path: Path, job_id: str) -> int:
    pattern = re.compile(rf"job {job_id} running in process (\d+)")
    for line in log_path.read_text().splitlines():
        found = pattern.search(line)
        if found:
            return int(found.group(1))
    raise RuntimeError("the service did not log the job process")


def start_service(checkpoint: Path, port: int, scratch: Path, args) -> subprocess.Popen:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QUSEC_")},
        "QUSEC_ADMIN_TOKEN": TOKEN,
        "QUSEC_ROBUSTNESS_DB": str(scratch / "jobs.sqlite3"),
        "QUSEC_ROBUSTNESS_THREADS": str(args.robustness_threads),
        "QUSEC_ROBUSTNESS_NICE": str(args.robustness_nice),
        "QUSEC_ROBUSTNESS_STOP_GRACE_SECONDS": "60",
    }
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--checkpoint", str(checkpoint)]
    with open(scratch / "server.log", "wb") as sink:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("server not ready after 120 s")


def measure(result: Round, port: int, pid: int, payloads, args, job_process: int | None) -> None:
    asyncio.run(drive(port, payloads, args.concurrency, args.warmup))
    cpu_before = process_cpu_seconds(pid)
    job_before = process_cpu_seconds(job_process) if job_process else 0.0
    seconds, latencies, errors = asyncio.run(drive(port, payloads, args.concurrency, args.requests))
    result.server_cpu_seconds += process_cpu_seconds(pid) - cpu_before
    if job_process:
        result.job_cpu_seconds += process_cpu_seconds(job_process) - job_before
    result.wall_seconds += seconds
    result.rates.append(args.requests / seconds)
    result.latencies += latencies
    result.requests += args.requests
    result.errors += errors


def busy_round(result: Round, port: int, pid: int, payloads, args, log_path: Path) -> None:
    """Measure while a job crafts; the job is cancelled afterwards."""
    job_id = admin(port, "POST", "/robustness-check", JOB)["id"]
    # Past the job process's start-up (imports, loading): it is attacking now.
    wait_job(port, job_id, lambda job: job["progress"]["done_batches"] >= 1)
    worker = job_pid(log_path, job_id)
    measure(result, port, pid, payloads, args, worker)
    still = admin(port, "GET", f"/robustness-check/{job_id}")["status"]
    if still != "running":
        raise RuntimeError(f"the job ended ({still}) before the round did; make it longer")
    admin(port, "DELETE", f"/robustness-check/{job_id}")
    wait_job(port, job_id, lambda job: job["status"] not in ("queued", "running"))


def print_table(rounds: list[Round], concurrency: int, note: str) -> None:
    print(f"\n{note}\n")
    print(
        "| scenario | concurrency | requests | errors | req/s (median of rounds) | p50 ms "
        "| p99 ms | p99.9 ms | server CPU ms/req | job process CPU s per s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rounds:
        job_load = f"{r.job_cpu_seconds / r.wall_seconds:.2f}" if r.job_cpu_seconds else "-"
        print(
            f"| {r.name} | {concurrency} | {r.requests} | {r.errors} | "
            f"{np.median(r.rates):.0f} | {r.ms(50):.1f} | {r.ms(99):.1f} | {r.ms(99.9):.1f} | "
            f"{1000 * r.server_cpu_seconds / r.requests:.2f} | {job_load} |"
        )
    idle, busy = rounds
    print(
        f"\np99 during a job / idle: x{busy.ms(99) / idle.ms(99):.2f}; "
        f"throughput during a job / idle: x{np.median(busy.rates) / np.median(idle.rates):.2f}"
    )
    for r in rounds:
        print(f"{r.name} p99 ms per round: ", end="")
        per_round = np.array_split(np.array(r.latencies), len(r.rates))
        print(", ".join(f"{np.percentile(chunk, 99) * 1000:.1f}" for chunk in per_round))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "mnist-tq2")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000, help="measured per round")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured, before each")
    parser.add_argument("--rounds", type=int, default=5, help="idle/busy pairs, interleaved")
    parser.add_argument("--robustness-threads", type=int, default=1)
    parser.add_argument("--robustness-nice", type=int, default=10)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.checkpoint / "manifest.json").is_file():
        log.error("%s is not a checkpoint folder", args.checkpoint)
        return 2
    scenario = next(s for s in SCENARIOS if s.name == "/classify raw body")
    rounds = [Round("/classify idle"), Round("/classify during a robustness job")]
    with tempfile.TemporaryDirectory(prefix="qusec-bench-admin-") as scratch:
        port = free_port()
        server = start_service(args.checkpoint, port, Path(scratch), args)
        payloads = [build_request(scenario, port, png) for png in sample_pngs(256)]
        try:
            for i in range(args.rounds):
                measure(rounds[0], port, server.pid, payloads, args, None)
                log_path = Path(scratch) / "server.log"
                busy_round(rounds[1], port, server.pid, payloads, args, log_path)
                log.info("round %d of %d done", i + 1, args.rounds)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=120)
    note = (
        f"checkpoint {args.checkpoint.name}; {os.cpu_count()} CPUs ({platform.machine()}); "
        f"{args.rounds} interleaved idle/busy rounds of {args.requests} raw-body requests, "
        f"each after {args.warmup} unmeasured; job: {json.dumps(JOB)}; job process: "
        f"{args.robustness_threads} torch thread(s), nice +{args.robustness_nice}"
    )
    print_table(rounds, args.concurrency, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
