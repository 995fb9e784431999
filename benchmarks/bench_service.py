"""Benchmark the service: /classify (raw body and multipart) against a naive endpoint.

Starts ``python -m service`` with the naive baseline enabled, measures the time
until /readyz answers 200, drives each endpoint with concurrent keep-alive
clients, and prints requests/s and p50/p99 latency per scenario, the ratio of
/classify to the naive endpoint, and the server's peak RSS.

``--peer litserve`` adds a peer: the same checkpoint served by LitServe 0.2.19 with
dynamic batching (``--peer-api-servers`` HTTP processes, LitServe's ``num_api_servers``)
(``benchmarks/litserve_peer.py``; install the benchmark-only
extra with ``pip install -e '.[bench]'``), sent the same PNG base64-encoded in
JSON, which is what LitServe reads. The peer runs the model as a LitServe user would write
it, or with ``--peer-network served`` the network exactly as the service's predict stage
runs it (folded, channels-last, frozen), to tell the serving path's share from the forward's.

``--peer bare`` adds the floor for a Python request path (``benchmarks/bare_peer.py``): the
barest server that batches (uvloop, httptools, Pillow, the served network, one inference
thread a process, no limits, logs or metrics), as many processes as the service's workers,
sent the same raw PNG. ``--peer`` may be given twice, for both peers.

Only the server being measured runs: the others' process trees are paused (SIGSTOP)
during its rounds, since an idle server is not always idle (LitServe's inference worker
polls its queue, about a quarter of a core on the 2-core machine).

The load generator is a minimal HTTP/1.1 client over asyncio streams rather
than a full client library, so that on a small machine the client spends as
little CPU as possible and the numbers describe the server; ``--wrk`` drives
every scenario with wrk instead (one PNG per scenario, ``benchmarks/overload.lua``).

    .venv/bin/python benchmarks/bench_service.py --checkpoint checkpoints/mnist-tq2 \
        [--peer litserve] [--peer bare] [--forward-limit] [--wrk] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import platform
import re
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
log = logging.getLogger("bench_service")


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    multipart: bool
    json_body: bool = False  # {"image": base64 PNG}, for the LitServe peer
    server: str = "service"  # or "litserve", "bare", or "limit" (forward_limit.py)
    processes: int = 0  # for "limit": forward_limit.py copies run at once


SCENARIOS = (
    Scenario("/classify raw body", "/classify", multipart=False),
    Scenario("/classify multipart", "/classify", multipart=True),
    Scenario("naive multipart", "/naive/classify", multipart=True),
)
LITSERVE = Scenario("LitServe JSON", "/predict", False, json_body=True, server="litserve")
BARE = Scenario("bare Python path raw body", "/classify", False, server="bare")
WRK_SCRIPT = Path(__file__).resolve().parent / "overload.lua"
FORWARD_LIMIT = Path(__file__).resolve().parent / "forward_limit.py"


def limit_scenarios(cpus: int) -> tuple[Scenario, ...]:
    """The batched forward as one process with every CPU's thread, and as one process per
    CPU with one thread each (``processes`` copies)."""
    one = Scenario(f"batched forward, 1 process x {cpus} threads", "", False, server="limit")
    layouts = [one]
    if cpus > 1:
        many = f"batched forward, {cpus} processes x 1 thread"
        layouts.append(Scenario(many, "", False, server="limit", processes=cpus))
    return tuple(layouts)


@dataclass
class Result:
    """One scenario, accumulated over every round it ran in."""

    scenario: Scenario
    concurrency: int
    rates: list[float] = field(default_factory=list)  # requests/s of each round
    latencies: list[float] = field(default_factory=list)
    round_percentiles: list[tuple[float, float]] = field(default_factory=list)  # wrk: p50, p99
    best_batches: list[list[int]] = field(default_factory=list)  # limit: each copy's, a round
    # limit: rows/s summed over copies, each at the batch its share of the connections
    # fills (concurrency / copies rows), a round
    share_rates: list[float] = field(default_factory=list)
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
        if self.round_percentiles:  # wrk reports percentiles per run: the median of rounds
            return statistics.median(p[0] if q == 50 else p[1] for p in self.round_percentiles)
        return float(np.percentile(self.latencies, q)) * 1000.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample_pngs(count: int, dataset: str = "mnist") -> list[bytes]:
    """Test images of ``dataset`` from its shipped evaluation subset, else seeded noise."""
    subset = ROOT / "data" / "eval" / f"{dataset}-test-first1000.npz"
    if subset.is_file():
        sys.path.insert(0, str(ROOT))
        from models.evalset import load_eval_set

        images = load_eval_set(subset).images[:count].numpy()  # (n, C, H, W) in [0, 1]
        images = (images * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
        arrays = [image[..., 0] if image.shape[-1] == 1 else image for image in images]
    else:
        log.warning("%s not found; using random 28x28 images", subset)
        arrays = np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)
    encoded = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def request_body(scenario: Scenario, png: bytes) -> tuple[bytes, str]:
    if scenario.json_body:
        return json.dumps({"image": base64.b64encode(png).decode()}).encode(), "application/json"
    if not scenario.multipart:
        return png, "image/png"
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
    return body, f"multipart/form-data; boundary={boundary}"


def build_request(scenario: Scenario, port: int, png: bytes) -> bytes:
    body, content_type = request_body(scenario, png)
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
    cpu_before = tree_cpu_seconds(pid)
    seconds, latencies, errors = asyncio.run(drive(port, payloads, result.concurrency, total))
    result.server_cpu_seconds += tree_cpu_seconds(pid) - cpu_before
    result.rates.append(total / seconds)
    result.latencies += latencies
    result.requests += total
    result.errors += errors


def run_wrk_round(
    result: Result, port: int, pid: int, body_file: Path, content_type: str, seconds: float
) -> None:
    """One unmeasured second, then ``seconds`` measured, both with wrk."""
    url = f"http://127.0.0.1:{port}{result.scenario.path}"
    wrk(url, body_file, content_type, result.concurrency, 1.0)
    cpu_before = tree_cpu_seconds(pid)
    fields = wrk(url, body_file, content_type, result.concurrency, seconds)
    result.server_cpu_seconds += tree_cpu_seconds(pid) - cpu_before
    ok, failed = int(fields["ok"]), int(fields["refused"]) + int(fields["other"])
    result.rates.append(ok / float(fields["seconds"]))
    result.requests += ok + failed
    result.errors += failed + int(fields["socket_errors"])
    result.round_percentiles.append((int(fields["p50_us"]) / 1000, int(fields["p99_us"]) / 1000))


def limit_batches(concurrency: int) -> list[int]:
    """The batch sizes the limit tries (the best counts): a quarter of the concurrency to
    all of it (2, 3, 4, 6 and 8 eighths; half of it is what each of two workers' batches
    can hold). At 16 connections over two workers the service's batches are mostly 6 to 8
    rows; the limit tries them all and keeps the best (the best of several noisy rates,
    which if anything flatters the limit). With the C allocator keeping freed memory
    (``models/memory.py``) the largest batch has been the fastest here; before,
    each forward faulted its activations in anew and 4 to 8 rows came out fastest."""
    return sorted({max(1, concurrency * eighths // 8) for eighths in (2, 3, 4, 6, 8)})


def share_rows(concurrency: int, processes: int) -> int:
    """The rows one process's batch can hold when ``concurrency`` connections are shared
    evenly by ``processes`` serving processes."""
    return max(1, concurrency // processes)


def run_limit_round(result: Result, checkpoint: Path, cpus: int, seconds: float) -> None:
    """forward_limit.py in the scenario's layout; rows per second summed over copies."""
    processes = result.scenario.processes or 1
    threads = 1 if result.scenario.processes else cpus
    command = [sys.executable, str(FORWARD_LIMIT), "--checkpoint", str(checkpoint)]
    batches = limit_batches(result.concurrency)
    command += ["--batch", ",".join(map(str, batches)), "--threads", str(threads)]
    command += ["--seconds", f"{seconds:g}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    copies = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    outputs = [json.loads(copy.communicate()[0]) for copy in copies]
    rates = [output["rows_per_second"] for output in outputs]
    result.best_batches.append([output["batch"] for output in outputs])
    share = str(share_rows(result.concurrency, processes))
    if all(share in output["rates"] for output in outputs):
        result.share_rates.append(sum(output["rates"][share] for output in outputs))
    result.rates.append(sum(rates))
    result.requests += round(sum(rates) * seconds)


def wrk(url: str, body_file: Path, content_type: str, connections: int, seconds: float) -> dict:
    command = [
        "wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "30s",
        "-s", str(WRK_SCRIPT), url, "--", str(body_file), content_type,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=([\d.]+)", output.split("QUSEC", 1)[1]))


def pause_all_but(pids: dict[str, int], running: str | None) -> None:
    """SIGSTOP every server's process tree but ``running``'s (SIGCONT that one; all, when
    None). An idle server is not idle everywhere: LitServe's inference worker polls its
    queue (about a quarter of a core here), which would be taken from the server measured."""
    for name, pid in pids.items():
        for member in process_tree(pid):
            os.kill(member, signal.SIGCONT if running in (None, name) else signal.SIGSTOP)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants that are alive (Linux ``/proc``)."""
    members = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                members += process_tree(int(child))
    except FileNotFoundError:  # it exited meanwhile
        return []
    return members


def stop_tree(process: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGINT, then SIGKILL to the whole tree if it has not exited within ``grace``
    (LitServe's processes have been seen to outlive a SIGINT while still paused)."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        log.warning("pid %d did not stop on SIGINT; killing its process tree", process.pid)
    for member in process_tree(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
    process.wait(timeout=grace)


def status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS:, VmHWM:), 0 once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(key)), 0)


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants (decode workers, LitServe's workers)."""
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(FileNotFoundError):  # exited since it was listed
            total += process_cpu_seconds(member)
    return total


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def launch_service(
    checkpoint: Path,
    port: int,
    log_path: Path,
    *,
    options: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    source: Path = ROOT,
) -> tuple[subprocess.Popen, float]:
    """Start ``python -m service`` from the source tree ``source`` on ``port`` and wait for
    /readyz: (the server, seconds from start to ready). Every benchmark starts it here."""
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--checkpoint", str(checkpoint.resolve()), *options]
    environment = {**os.environ, **(env or {})}
    if source != ROOT:  # another tree's service (before/after comparisons)
        environment["PYTHONPATH"] = str(source)
    started = time.perf_counter()
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(
            command, cwd=source, env=environment, stdout=log_file, stderr=log_file
        )
    deadline = started + 120
    while time.perf_counter() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}; see {log_path}")
        if _ready(port):
            return server, time.perf_counter() - started
        time.sleep(0.02)
    server.kill()
    raise RuntimeError(f"server not ready after 120 s; see {log_path}")


def percentile_ms(values: list[float], q: float) -> str:
    """The q-th percentile of latencies in seconds, as milliseconds; '-' when there are none."""
    return f"{np.percentile(values, q) * 1000:.1f}" if values else "-"


def start_server(
    checkpoint: Path, port: int, log_path: Path, workers: int = 1
) -> tuple[subprocess.Popen, float]:
    return launch_service(
        checkpoint,
        port,
        log_path,
        options=("--workers", str(workers)),
        env={"QUSEC_ENABLE_NAIVE_ENDPOINT": "1"},
    )


def start_litserve(
    checkpoint: Path, port: int, log_path: Path, api_servers: int = 1, network: str = "as-written"
) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "benchmarks" / "litserve_peer.py")]
    command += ["--checkpoint", str(checkpoint), "--port", str(port)]
    command += ["--api-servers", str(api_servers), "--network", network]
    return start_peer("LitServe", command, port, "/health", log_path)


def start_bare(
    checkpoint: Path, port: int, log_path: Path, processes: int, concurrency: int
) -> subprocess.Popen:
    """The floor peer, its processes sharing the connections out evenly."""
    command = [sys.executable, str(ROOT / "benchmarks" / "bare_peer.py")]
    command += ["--checkpoint", str(checkpoint), "--port", str(port)]
    command += ["--processes", str(processes)]
    command += ["--connections-each", str(-(-concurrency // processes))]
    return start_peer("the bare peer", command, port, "/", log_path)


def start_peer(
    name: str, command: list[str], port: int, path: str, log_path: Path
) -> subprocess.Popen:
    """Start a peer's ``command`` and wait until ``path`` on ``port`` answers 200."""
    with open(log_path, "wb") as log_file:
        peer = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=log_file)
    deadline = time.perf_counter() + 180
    while time.perf_counter() < deadline:
        if peer.poll() is not None:
            raise RuntimeError(f"{name} exited with {peer.returncode}; see {log_path}")
        if _ready(port, path):
            return peer
        time.sleep(0.1)
    peer.kill()
    raise RuntimeError(f"{name} not ready after 180 s; see {log_path}")


def _ready(port: int, path: str = "/readyz") -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def peak_rss_mib(pid: int) -> float:
    """Peak RSS of a process and its descendants (a supervisor's workers), summed."""
    return sum(status_kib(member, "VmHWM:") for member in process_tree(pid)) / 1024


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
        if r.scenario.server == "limit":  # rows, not requests: no latency, no server
            rows = f"{limit_batches(r.concurrency)[0]}-{r.concurrency} rows"
            print(f"| {r.scenario.name} | {rows} | - | - | {r.rate:.0f} | - | - | - |")
            continue
        print(
            f"| {r.scenario.name} | {r.concurrency} | {r.requests} | {r.errors} | "
            f"{r.rate:.0f} | {r.percentile(50):.1f} | {r.percentile(99):.1f} | "
            f"{r.cpu_ms_per_request:.2f} |"
        )
    by_name = {r.scenario.name: r for r in results}
    print()
    limits = [r for r in results if r.scenario.server == "limit"]
    if limits:
        limit = max(limits, key=lambda r: r.rate)
        served = ("/classify raw body", "/classify multipart", LITSERVE.name, BARE.name)
        for name in served:
            if name in by_name:
                r = by_name[name]
                print(
                    f"{name} vs the batched-forward limit ({limit.scenario.name}, "
                    f"{limit.rate:.0f} rows/s): {100 * r.rate / limit.rate:.0f}%"
                )
        # The CPU budget behind those ratios: all cores at the server's own cost per request
        # is its ceiling here, and what it spends beyond the forward's cost at the limit is
        # the price of serving (HTTP, decoding, batching, smaller batches than the limit's).
        cpus = os.cpu_count() or 1
        forward_ms = 1000 * cpus / limit.rate
        for name in served:
            if name in by_name and by_name[name].cpu_ms_per_request > 0:
                cost = by_name[name].cpu_ms_per_request
                ceiling = 1000 * cpus / cost
                print(
                    f"{name}: {cost:.2f} CPU ms/req, so {cpus} CPUs serve at most "
                    f"{ceiling:.0f} req/s ({100 * ceiling / limit.rate:.0f}% of the limit); "
                    f"the forward at the limit costs {forward_ms:.2f} CPU ms/row, "
                    f"leaving {cost - forward_ms:.2f} ms per request outside it"
                )
        # Context: the limit's batch may hold more rows than a serving process ever gets at
        # this concurrency (16 connections over 2 workers: 8 each).
        for r in limits:
            if not r.share_rates:
                continue
            processes = r.scenario.processes or 1
            rows = share_rows(r.concurrency, processes)
            share = statistics.median(r.share_rates)
            print(
                f"{r.scenario.name} at {rows} rows a process ({r.concurrency} connections "
                f"over {processes}): {share:.0f} rows/s; "
                + ", ".join(
                    f"{name} {100 * by_name[name].rate / share:.0f}% of it"
                    for name in ("/classify raw body", "/classify multipart", BARE.name)
                    if name in by_name
                )
            )
    if BARE.name in by_name:  # what the service's own layers cost beside the floor
        bare = by_name[BARE.name]
        for name in ("/classify raw body", "/classify multipart"):
            r = by_name[name]
            print(
                f"{name} vs {BARE.name}: {100 * r.rate / bare.rate:.0f}% of its req/s, "
                f"{r.cpu_ms_per_request - bare.cpu_ms_per_request:+.2f} CPU ms/req"
            )
    for other in ("naive multipart", LITSERVE.name):
        if other not in by_name:
            continue
        base = by_name[other]
        for name in ("/classify raw body", "/classify multipart"):
            r = by_name[name]
            print(
                f"{name} vs {other}: throughput x{r.rate / base.rate:.2f}, "
                f"p99 {r.percentile(99):.1f} ms vs {base.percentile(99):.1f} ms, "
                f"server CPU per request x{base.cpu_ms_per_request / r.cpu_ms_per_request:.2f} less"
            )
    for r in results:
        print(f"{r.scenario.name} req/s per round: {', '.join(f'{x:.0f}' for x in r.rates)}")
        if r.best_batches:  # the fastest batch size of each copy, each round
            sizes = ", ".join("/".join(map(str, batches)) for batches in r.best_batches)
            print(f"{r.scenario.name} fastest batch per round: {sizes}")


def _load_average() -> str:
    """The 1-minute load average, from /proc: others' work on the same cores."""
    return Path("/proc/loadavg").read_text().split()[0]


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
    parser.add_argument(
        "--peer",
        action="append",
        choices=["none", "litserve", "bare"],
        default=[],
        help="a peer served beside the service; give it twice for both",
    )
    parser.add_argument(
        "--forward-limit",
        action="store_true",
        help="also measure the checkpoint's own batched forward, the physical limit",
    )
    parser.add_argument(
        "--no-naive", action="store_true", help="leave out the naive endpoint's scenario"
    )
    parser.add_argument("--wrk", action="store_true", help="drive every scenario with wrk")
    parser.add_argument("--seconds", type=float, default=5.0, help="per round, with --wrk")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="the service's serving processes (QUSEC_WORKERS)",
    )
    parser.add_argument(
        "--peer-api-servers",
        type=int,
        default=1,
        help="LitServe's HTTP processes (num_api_servers; its default, 1, was its fastest here)",
    )
    parser.add_argument(
        "--peer-network",
        choices=["as-written", "served"],
        default="as-written",
        help="LitServe runs the model as its user would write it (eager), or the network as "
        "the service's predict stage runs it (folded, channels-last, frozen)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="qusec-bench-") as scratch:
        checkpoint = args.checkpoint
        if not (checkpoint / "manifest.json").is_file():
            log.warning("%s not found; benchmarking a random-weights TQ checkpoint", checkpoint)
            checkpoint = make_checkpoint(Path(scratch))
        pngs = sample_pngs(256, json.loads((checkpoint / "manifest.json").read_text())["dataset"])
        port = free_port()
        server, ready_seconds = start_server(
            checkpoint, port, Path(scratch) / "server.log", args.workers
        )
        scenarios = tuple(s for s in SCENARIOS if not (args.no_naive and "naive" in s.name))
        scenarios += (LITSERVE,) if "litserve" in args.peer else ()
        scenarios += (BARE,) if "bare" in args.peer else ()
        scenarios += limit_scenarios(os.cpu_count() or 1) if args.forward_limit else ()
        results = [Result(scenario, args.concurrency) for scenario in scenarios]
        ports, pids = {"service": port}, {"service": server.pid}
        peers: dict[str, subprocess.Popen] = {}  # by the scenarios' server names
        try:
            if "bare" in args.peer:
                ports["bare"] = free_port()
                peers["bare"] = start_bare(
                    checkpoint, ports["bare"], Path(scratch) / "bare.log", args.workers,
                    args.concurrency,
                )  # fmt: skip
            if "litserve" in args.peer:
                ports["litserve"] = free_port()
                peers["litserve"] = start_litserve(
                    checkpoint,
                    ports["litserve"],
                    Path(scratch) / "peer.log",
                    args.peer_api_servers,
                    args.peer_network,
                )
            pids.update((name, peer.pid) for name, peer in peers.items())
            # Interleaved rounds, so a neighbour's load on a shared machine hits all alike.
            for _ in range(args.rounds):
                for result in results:
                    where = result.scenario.server
                    pause_all_but(pids, where)
                    if where == "limit":
                        seconds = args.seconds if args.wrk else 5.0
                        run_limit_round(result, checkpoint, os.cpu_count() or 1, seconds)
                    elif args.wrk:
                        body, content_type = request_body(result.scenario, pngs[0])
                        body_file = Path(scratch) / f"{where}-{len(body)}.body"
                        body_file.write_bytes(body)
                        run_wrk_round(
                            result, ports[where], pids[where], body_file, content_type,
                            args.seconds,
                        )  # fmt: skip
                    else:
                        run_round(
                            result, ports[where], pids[where], pngs, args.requests, args.warmup
                        )
            rss = peak_rss_mib(server.pid)
        finally:
            pause_all_but(pids, None)
            for process in (server, *peers.values()):
                stop_tree(process)
    if args.wrk:
        each = f"{args.seconds:g} s of wrk per scenario, each after 1 s unmeasured"
    else:
        each = f"{args.requests} requests per scenario, each after {args.warmup} unmeasured"
    note = (
        f"checkpoint {checkpoint.name}, {args.workers} service worker(s), "
        f"{args.peer_api_servers} LitServe API server(s) when compared, its network "
        f"{args.peer_network}; "
        f"{os.cpu_count()} CPUs ({platform.machine()}); "
        f"{args.rounds} interleaved rounds of {each}; "
        f"load average before: {load_before}, after: {_load_average()}"
    )
    print_table(results, ready_seconds, rss, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
