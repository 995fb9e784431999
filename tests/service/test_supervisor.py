"""``python -m service --workers 2``: two serving processes on one port, supervised.

Real processes over real HTTP: every request is answered whichever worker takes it;
connections are shared out evenly by the supervisor (or, with ``kernel`` balancing, the
workers accept on the port themselves);
``/metrics`` sums both workers; a robustness check submitted to either worker runs (on
worker 0, the only one that runs jobs on SQLite); a worker killed with SIGKILL is
replaced while the port keeps answering; a worker that cannot start stops the whole
service with exit status 3; SIGTERM stops everything and leaves no process behind.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from service.placement import worker_cpu
from tests.service.helpers.admin import AUTH, FAST, TOKEN, finished, poll, process_gone
from tests.service.helpers.servers import PNG, STOPPED_BY_SIGTERM, Server, start_server, stop

pytestmark = pytest.mark.slow


def metric(http: httpx.Client, name: str, labels: str = "") -> float:
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", re.MULTILINE)
    found = pattern.search(http.get("/metrics").text)
    assert found, f"{name}{labels} not in /metrics"
    return float(found.group(1))


def wait_for_metric(http: httpx.Client, name: str, labels: str, value: float) -> None:
    """Until a scrape shows ``value`` (any worker's may lag its latest updates a moment)."""
    deadline = time.monotonic() + 60
    while (seen := metric(http, name, labels)) != value:
        assert time.monotonic() < deadline, f"{name}{labels} stayed at {seen}, not {value}"
        time.sleep(0.05)


def worker_pids(server: Server) -> dict[int, int]:
    """Worker index -> pid, from the workers' own 'Started server process' lines."""
    pids: dict[int, int] = {}
    for line in server.log_lines():
        found = re.fullmatch(r"Started server process \[(\d+)\]", line.get("message", ""))
        if found and "worker" in line:
            pids[int(line["worker"])] = int(found.group(1))
    return pids


def wait_for(condition, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached in {timeout} s: {what}")


def classify(url: str) -> int:
    try:
        return httpx.post(f"{url}/classify", content=PNG, timeout=30).status_code
    except httpx.TransportError:
        return 0


def start_supervised(checkpoint: Path, folder: Path) -> Server:
    environment = {
        "QUSEC_CHECKPOINTS": str(checkpoint),
        "QUSEC_ADMIN_TOKEN": TOKEN,
        "QUSEC_ROBUSTNESS_DB": str(folder / "jobs.sqlite3"),
    }
    server = start_server(folder / "server.log", ["--workers", "2"], environment)
    # Readiness above came from whichever worker was ready first; a worker killed while it
    # still starts would stop the service (as a worker that cannot start should).
    wait_for(lambda: serving(server), "the supervisor saw both workers serving")
    assert len(worker_pids(server)) == 2
    return server


def serving(server: Server) -> bool:
    return any(line.get("message") == "all 2 workers serving" for line in server.log_lines())


@pytest.fixture(scope="module")
def shared(checkpoints, tmp_path_factory) -> Iterator[Server]:
    """For the tests that leave the workers as they found them."""
    server = start_supervised(checkpoints["mnist-tq2"], tmp_path_factory.mktemp("shared"))
    yield server
    if server.process.poll() is None:
        stop(server)


@pytest.fixture
def supervised(checkpoints, tmp_path) -> Iterator[Server]:
    """For the tests that kill or stop workers."""
    server = start_supervised(checkpoints["mnist-tq2"], tmp_path)
    yield server
    if server.process.poll() is None:
        stop(server)


def test_both_workers_serve_one_port_and_report_one_set_of_metrics(shared) -> None:
    supervised = shared
    served = '{endpoint="/classify",method="POST",status="200"}'
    first = httpx.post(
        f"{supervised.url}/classify", content=PNG, headers={"X-Request-ID": "first"}, timeout=30
    )
    assert first.status_code == 200
    supervised.wait_for_log_lines(
        lambda line: line.get("logger") == "service.access" and line.get("request_id") == "first",
        "the access line of the first request",
    )
    # Every answer so far, by the access log (each line is written right after its answer).
    before = sum(
        line.get("logger") == "service.access" and line.get("message") == "POST /classify 200"
        for line in supervised.log_lines()
    )
    with httpx.Client(base_url=supervised.url, timeout=30) as http:
        assert metric(http, "qusec_workers") == 2
        # A worker applies its request metrics together a moment later (service.metrics.
        # PendingUpdates): a scrape answered by the other worker may not show them yet.
        wait_for_metric(http, "qusec_http_requests_total", served, before)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(classify, [supervised.url] * 200))
    assert statuses == [200] * 200
    with httpx.Client(base_url=supervised.url, timeout=30) as http:
        wait_for_metric(http, "qusec_http_requests_total", served, before + 200)
        # Summed over both workers, whichever answers the scrape, every time.
        for _ in range(6):
            assert metric(http, "qusec_http_requests_total", served) == before + 200
        assert metric(http, "qusec_ready") == 1
        assert metric(http, "qusec_in_flight_requests") == 0
        assert metric(http, "process_resident_memory_bytes") > 0
    access = [line for line in supervised.log_lines() if line.get("logger") == "service.access"]
    assert {line["worker"] for line in access} <= {0, 1}


def holds_listener(pid: int, port: int) -> bool:
    """Whether process ``pid`` has the listening socket of ``port`` open (Linux ``/proc``)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    assert inodes, f"nothing listens on port {port}"
    descriptors = Path(f"/proc/{pid}/fd")
    return any(os.readlink(descriptors / fd) in inodes for fd in os.listdir(descriptors))


def open_connections(http: httpx.Client) -> dict[int, float]:
    """Each worker's open connections (``qusec_open_connections``), by pid."""
    found = re.findall(
        r'^qusec_open_connections\{pid="(\d+)"\} (\S+)$', http.get("/metrics").text, re.M
    )
    return {int(pid): float(value) for pid, value in found}


def test_connections_are_shared_out_evenly_over_the_workers(shared) -> None:
    """Eight keep-alive connections opened one after another, each kept open: four each
    (``service.edge.handoff``; on the shared socket alone one worker may take nearly all)."""
    supervised = shared
    pids = worker_pids(supervised)
    assert not any(holds_listener(pid, supervised.port) for pid in pids.values())
    with ExitStack() as stack:
        first = stack.enter_context(httpx.Client(base_url=supervised.url, timeout=30))
        # Until ours is the only connection open (the earlier tests' have closed).
        wait_for(lambda: sum(open_connections(first).values()) == 1, "one connection open")
        clients = [first]
        clients += [
            stack.enter_context(httpx.Client(base_url=supervised.url, timeout=30)) for _ in range(7)
        ]
        for number, client in enumerate(clients):
            answer = client.post(
                "/classify", content=PNG, headers={"X-Request-ID": f"conn-{number}"}
            )
            assert answer.status_code == 200
        held = open_connections(first)
        assert {index: held[pid] for index, pid in pids.items()} == {0: 4, 1: 4}
    lines = supervised.wait_for_log_lines(
        lambda line: line.get("request_id") == "conn-7", "the last connection's access line"
    )
    served_by = {
        line["request_id"]: line["worker"]
        for line in supervised.log_lines()
        if line.get("logger") == "service.access" and line.get("request_id", "").startswith("conn-")
    }
    assert lines and sorted(served_by.values()) == [0, 0, 0, 0, 1, 1, 1, 1]


def cpus_allowed(pid: int) -> list[int]:
    return sorted(os.sched_getaffinity(pid))


def test_workers_are_pinned_as_the_cpus_they_may_use_say(shared) -> None:
    """``QUSEC_PIN_WORKERS=auto``: a CPU each when the CPUs number the workers, else free."""
    allowed = cpus_allowed(0)
    for index, pid in worker_pids(shared).items():
        cpu = worker_cpu(index, 2, "auto")
        assert cpus_allowed(pid) == (allowed if cpu is None else [cpu])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin two workers")
def test_kernel_balancing_serves_every_request_on_the_shared_socket(checkpoints, tmp_path):
    """``QUSEC_CONNECTION_BALANCING=kernel``: the workers accept on the port themselves; with
    ``QUSEC_PIN_WORKERS=always`` each runs on a CPU of its own."""
    server = start_server(
        tmp_path / "server.log",
        ["--workers", "2"],
        {
            "QUSEC_CHECKPOINTS": str(checkpoints["mnist-tq2"]),
            "QUSEC_CONNECTION_BALANCING": "kernel",
            "QUSEC_PIN_WORKERS": "always",
        },
    )
    try:
        wait_for(lambda: serving(server), "the supervisor saw both workers serving")
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(classify, [server.url] * 40)) == [200] * 40
        pids = worker_pids(server)
        assert all(holds_listener(pid, server.port) for pid in pids.values())
        first_two = cpus_allowed(0)[:2]
        assert [cpus_allowed(pids[index]) for index in (0, 1)] == [[cpu] for cpu in first_two]
    finally:
        assert stop(server) in STOPPED_BY_SIGTERM


def test_a_check_submitted_to_any_worker_runs_on_worker_zero(shared) -> None:
    supervised = shared
    with httpx.Client(base_url=supervised.url, timeout=30) as http:
        ids = [
            http.post("/robustness-check", headers=AUTH, json=FAST).json()["id"] for _ in range(2)
        ]
        for job_id in ids:
            job = poll(http, job_id, finished)
            assert job["status"] == "done", job
            # Every worker reads the same store: the same job, whichever answers.
            assert all(
                http.get(f"/robustness-check/{job_id}", headers=AUTH).json() == job
                for _ in range(4)
            )
    runners = {
        line.get("worker")
        for line in supervised.log_lines()
        if re.fullmatch(r"job \S+ running in process \d+", line.get("message", ""))
    }
    assert runners == {0}


def test_a_killed_worker_is_replaced_while_the_port_keeps_answering(supervised) -> None:
    old = worker_pids(supervised)
    os.kill(old[1], signal.SIGKILL)
    wait_for(lambda: worker_pids(supervised).get(1, old[1]) != old[1], "worker 1 restarted")
    with httpx.Client(base_url=supervised.url, timeout=30) as http:
        wait_for(lambda: metric(http, "qusec_workers") == 2, "two live workers again")
    assert [classify(supervised.url) for _ in range(50)] == [200] * 50
    assert process_gone(old[1])
    assert worker_pids(supervised)[0] == old[0]  # the other worker served on throughout
    restarts = [line for line in supervised.log_lines() if "exited with" in line.get("message", "")]
    assert len(restarts) == 1 and "restarting it" in restarts[0]["message"]


def test_sigterm_stops_every_worker_and_removes_the_metrics_directory(supervised) -> None:
    pids = worker_pids(supervised)
    metrics_dir = Path(f"/proc/{pids[0]}/environ").read_bytes().split(b"\0")
    directory = next(
        Path(entry.split(b"=", 1)[1].decode())
        for entry in metrics_dir
        if entry.startswith(b"PROMETHEUS_MULTIPROC_DIR=")
    )
    assert directory.is_dir()
    assert stop(supervised) in STOPPED_BY_SIGTERM
    assert all(process_gone(pid) for pid in pids.values())
    assert not directory.exists()


def test_a_worker_that_cannot_start_stops_the_service_with_status_3(checkpoints, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in checkpoints["mnist-tq2"].iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    weights = broken / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # the manifest reads fine; the weights' digest no longer matches
    weights.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match="server exited 3"):
        start_server(
            tmp_path / "server.log", ["--workers", "2"], {"QUSEC_CHECKPOINTS": str(broken)}
        )
