"""The real service: ``python -m service`` in a subprocess on a free loopback port, over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from models.checkpoint import load_checkpoint
from service.logs import iso_time
from service.sanitize.imaging import ImagePolicy, decode_image
from tests.service.helpers.images import all_cases, encode
from tests.service.helpers.servers import (
    PNG,
    ROOT,
    STOPPED_BY_SIGTERM,
    Server,
    free_port,
    start_server,
    stop,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    running = start_server(
        log,
        [
            "--checkpoint",
            str(checkpoints["mnist-tq2"]),
            "--checkpoint",
            str(checkpoints["cifar-cq3"]),
        ],
        {"QUSEC_MAX_BATCH_WAIT_SECONDS": "0.02", "QUSEC_MAX_BATCH_SIZE": "16"},
    )
    yield running
    assert stop(running) in STOPPED_BY_SIGTERM, log.read_text()


def test_endpoints_answer_over_http(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json()["models"] == ["mnist-tq2", "cifar-cq3"]
        assert [m["name"] for m in http.get("/models").json()["models"]] == [
            "mnist-tq2",
            "cifar-cq3",
        ]
        raw = http.post("/classify", content=PNG, headers={"Content-Type": "image/png"})
        form = http.post("/classify", files={"file": ("d.png", PNG, "image/png")})
        assert raw.status_code == form.status_code == 200
        assert raw.json()["probabilities"] == form.json()["probabilities"]
        assert http.post("/classify?model=cifar-cq3", content=PNG).json()["defence"]["kind"] == "cq"
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").status_code == 200
        assert http.get("/v2/models/cifar-cq3").json()["inputs"][0]["shape"] == [-1, 3, 32, 32]
        infer = {
            "inputs": [
                {"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 1568}
            ]
        }
        outputs = http.post("/v2/models/mnist-tq2/infer", json=infer).json()["outputs"]
        assert outputs[0]["shape"] == [2, 10]
        assert "qusec_batch_size_bucket" in http.get("/metrics").text


@pytest.mark.parametrize("case", all_cases(), ids=repr)
def test_corpus_over_http(server: Server, case) -> None:
    headers = {"Content-Type": case.content_type} if case.content_type else {}
    response = httpx.post(f"{server.url}/classify", content=case.body, headers=headers, timeout=30)
    assert response.status_code == case.status, response.text
    if case.reason is not None:
        assert response.json()["reason"] == case.reason


def test_rejections_are_counted(server: Server) -> None:
    httpx.post(f"{server.url}/classify", content=b"\x00" * 64, timeout=30)
    text = httpx.get(f"{server.url}/metrics").text
    line = next(
        x for x in text.splitlines() if 'rejections_total{reason="unsupported_format"}' in x
    )
    assert float(line.split()[-1]) >= 1


def test_concurrent_requests_are_batched_and_match_direct_inference(server, checkpoints) -> None:
    rng = np.random.default_rng(5)
    uploads = [
        encode(Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)), "PNG")
        for _ in range(32)
    ]
    model = load_checkpoint(checkpoints["mnist-tq2"]).model
    policy = ImagePolicy((1, 28, 28), 4096 * 4096, 8192)
    with torch.inference_mode():
        direct = [
            torch.softmax(model(torch.from_numpy(decode_image(u, policy).pixels)[None]), 1)[0]
            for u in uploads
        ]
    largest_batch = 0
    with httpx.Client(
        base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=32)
    ) as http:
        for _ in range(5):  # batching depends on timing; a few rounds make it certain in practice
            with ThreadPoolExecutor(16) as pool:
                bodies = list(pool.map(lambda u: http.post("/classify", content=u).json(), uploads))
            for body, expected in zip(bodies, direct, strict=True):
                served = torch.tensor([body["probabilities"][str(d)] for d in range(10)])
                assert body["label"] == int(torch.argmax(expected))
                torch.testing.assert_close(served, expected, rtol=0, atol=1e-6)
            largest_batch = max(largest_batch, *(b["batch_rows"] for b in bodies))
            if largest_batch > 1:
                break
    assert largest_batch > 1


def test_logs_are_json_with_request_ids(server: Server) -> None:
    httpx.post(f"{server.url}/classify", content=PNG, headers={"X-Request-ID": "trace-42"})
    mine = server.wait_for_log_lines(
        lambda line: (
            line.get("logger") == "service.access" and line.get("request_id") == "trace-42"
        ),
        "the access line of the request traced trace-42",
    )
    assert [line["status"] for line in mine] == [200]
    assert mine[0]["message"] == "POST /classify 200" and mine[0]["level"] == "info"
    # The time stamp, written by hand for speed, reads as datetime's own ISO form.
    stamp = datetime.fromisoformat(mine[0]["time"])
    assert stamp.tzinfo is not None and stamp.utcoffset().total_seconds() == 0
    assert stamp.isoformat(timespec="milliseconds") == mine[0]["time"]


@pytest.mark.parametrize(
    "created", [0.0, 1.0005, 1.9999996, 1629488006.504, 1629488006.9, 1764559999.9995]
)
def test_log_time_stamps_match_datetime(created: float) -> None:
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert iso_time(created) == expected


def test_graceful_shutdown_finishes_the_request_in_flight(checkpoints, tmp_path) -> None:
    running = start_server(
        tmp_path / "server.log", [], {"QUSEC_CHECKPOINTS": str(checkpoints["mnist-tq2"])}
    )
    head = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(PNG)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
        sock.sendall(head + PNG[:50])  # the request is now in flight, its body half sent
        time.sleep(0.3)
        running.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert running.process.poll() is None  # still waiting for our request
        sock.sendall(PNG[50:])
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    assert running.process.wait(timeout=60) in STOPPED_BY_SIGTERM
    messages = [line.get("message", "") for line in running.log_lines()]
    assert "stopped" in messages
    # uvicorn's last line, logged on the event loop just before it re-raises SIGTERM: lines
    # batched for the loop's turn are written before the signal ends the process.
    assert messages[-1].startswith("Finished server process"), messages[-3:]


def test_container_healthcheck_follows_readiness(server: Server) -> None:
    def healthcheck(port: int) -> int:
        env = {**os.environ, "QUSEC_PORT": str(port)}
        command = [sys.executable, "-m", "service.healthcheck"]
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, timeout=30
        ).returncode

    assert healthcheck(server.port) == 0
    assert healthcheck(free_port()) == 1


def test_bad_checkpoint_stops_startup_with_the_reason(tmp_path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    result = subprocess.run(
        [sys.executable, "-m", "service", "--port", str(free_port()), "--checkpoint", str(missing)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("QUSEC_")},
    )
    assert result.returncode == 3
    assert "manifest not found" in result.stderr
