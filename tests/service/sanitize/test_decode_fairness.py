"""Decoding is fair: costly decodes take turns in their own lane, over real HTTP.

Two clients (127.0.0.3 and 127.0.0.4) each send a JPEG that takes many CPU-seconds to
decode, with the admin token so that the anonymous ceiling lets it through; an honest
client (127.0.0.2) sends uploads that need a decode worker. The honest uploads are all
answered while both costly ones are still in flight, a client's second costly upload is
refused at once, and the same file without the token is refused before any decoding.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from tests.service.helpers.admin import AUTH, TOKEN
from tests.service.helpers.hostile_files import progressive_jpeg
from tests.service.helpers.images import encode
from tests.service.helpers.raw_http import WAIT, client_from
from tests.service.helpers.servers import STOPPED_BY_SIGTERM, Server, start_server, stop

pytestmark = pytest.mark.slow

EXPENSIVE = progressive_jpeg(1990)  # 190 KB, many CPU-seconds to decode
NEEDS_A_WORKER = encode(Image.new("L", (1000, 1000)), "PNG")  # light: 1 MB of samples
SETTINGS = {
    "QUSEC_ADMIN_TOKEN": TOKEN,
    "QUSEC_ROBUSTNESS_RUN_JOBS": "false",
    "QUSEC_MAX_JPEG_SCANS": "2000",  # let it past the scan cap
    "QUSEC_DECODE_TIMEOUT_SECONDS": "15",
    "QUSEC_REQUEST_TIMEOUT_SECONDS": str(WAIT),
    "QUSEC_DECODE_MAX_COST_BYTES_PER_CLIENT": str(1 << 30),
}


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("decode-fairness")
    settings = {**SETTINGS, "QUSEC_ROBUSTNESS_DB": str(folder / "jobs.sqlite3")}
    running = start_server(
        folder / "server.log", ["--checkpoint", str(checkpoints["mnist-tq2"])], settings
    )
    yield running
    assert stop(running) in STOPPED_BY_SIGTERM, (folder / "server.log").read_text()[-4000:]


def in_flight(server: Server) -> float:
    for line in httpx.get(f"{server.url}/metrics", timeout=WAIT).text.splitlines():
        if line.startswith("qusec_in_flight_requests "):
            return float(line.split()[1])
    raise AssertionError("qusec_in_flight_requests not exported")


def post_from(source: str, server: Server, body: bytes, **options) -> httpx.Response:
    with client_from(source, server.url) as http:
        return http.post("/classify", content=body, **options)


def test_costly_decodes_take_turns_and_cheap_ones_pass(server: Server) -> None:
    with ThreadPoolExecutor(2) as threads:
        costly = [
            threads.submit(post_from, source, server, EXPENSIVE, headers=AUTH)
            for source in ("127.0.0.3", "127.0.0.4")
        ]
        deadline = time.monotonic() + WAIT
        while in_flight(server) < 2:
            assert time.monotonic() < deadline, "the costly uploads were never admitted"
            time.sleep(0.05)
        # The first client already has a costly decode in flight: its second is refused.
        second = post_from("127.0.0.3", server, EXPENSIVE, headers=AUTH)
        assert (second.status_code, second.json()["reason"]) == (429, "client_decode_limit")
        assert second.headers["retry-after"] == "1"
        # Uploads that need a worker are served while both costly ones are still in flight.
        honest = [post_from("127.0.0.2", server, NEEDS_A_WORKER).status_code for _ in range(5)]
        assert honest == [200] * 5
        assert in_flight(server) >= 2
        # Without the admin token the costly file is refused before any decoding.
        anonymous = post_from("127.0.0.2", server, EXPENSIVE)
        assert (anonymous.status_code, anonymous.json()["reason"]) == (
            413,
            "decode_cost_too_high",
        )
        results = [future.result() for future in costly]
    # Decoded, or stopped at the deadline, depending on how busy the machine is.
    for result in results:
        assert result.status_code == 200 or result.json()["reason"] == "decode_budget_exceeded"
