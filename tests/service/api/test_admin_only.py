"""What is admin-only stays admin-only, over real HTTP against ``python -m service``: the
public ``/models`` and ``/metrics`` show no training history, paths or robustness figures;
``/admin/models`` and ``/admin/metrics`` show them to the admin and (the scrape) to the
scrape token."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.service.helpers.admin import (
    AUTH,
    FAST,
    TOKEN,
)
from tests.service.helpers.servers import STOPPED_BY_SIGTERM, Server, start_server, stop

SCRAPE_TOKEN = "prometheus-scrape-token-0123456789"
SCRAPE = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
# The tiny checkpoints' manifests record where their "training" read its data.
TRAINING_ONLY = ("manifest", "training", "history", "data_dir", "device", "path")


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("admin-only")
    environment = {
        "QUSEC_CHECKPOINTS": str(checkpoints["mnist-tq2"]),
        "QUSEC_ADMIN_TOKEN": TOKEN,
        "QUSEC_SCRAPE_TOKEN": SCRAPE_TOKEN,
        "QUSEC_ROBUSTNESS_DB": str(folder / "jobs.sqlite3"),
    }
    running = start_server(folder / "server.log", [], environment)
    yield running
    assert stop(running) in STOPPED_BY_SIGTERM, (folder / "server.log").read_text()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_models_shows_a_client_what_it_needs_and_the_admin_everything(http) -> None:
    public = http.get("/models")
    assert public.status_code == 200
    (model,) = public.json()["models"]
    assert model["name"] == "mnist-tq2" and model["dataset"] == "mnist"
    assert model["input_shape"] == [1, 28, 28] and len(model["class_names"]) == 10
    assert model["defence"]["kind"] == "tq" and len(model["weights_sha256"]) == 64
    for word in TRAINING_ONLY:
        assert f'"{word}"' not in public.text, word
    assert http.get("/admin/models").status_code == 401
    assert http.get("/admin/models", headers=SCRAPE).status_code == 403  # read-only scrape
    full = http.get("/admin/models", headers=AUTH)
    assert full.status_code == 200
    (described,) = full.json()["models"]
    assert described["manifest"]["weights_sha256"] == model["weights_sha256"]
    assert {"device", "path", "manifest"} <= set(described)
    assert {key: described[key] for key in model} == model


def test_robustness_series_are_on_the_admin_scrape_only(http) -> None:
    public = http.get("/metrics").text
    assert "qusec_robust" not in public and "qusec_http_requests_total" in public
    assert http.get("/admin/metrics").status_code == 401
    wrong = {"Authorization": "Bearer " + "x" * 40}
    assert http.get("/admin/metrics", headers=wrong).status_code == 403
    for token in (SCRAPE, AUTH):
        scraped = http.get("/admin/metrics", headers=token)
        assert scraped.status_code == 200
        assert scraped.headers["Content-Type"].startswith("text/plain")
        assert 'qusec_robustness_jobs_total{status="done"}' in scraped.text
        assert "qusec_http_requests_total" not in scraped.text  # serving stays public
    # The scrape token opens nothing else: no checks started, none listed.
    assert http.get("/robustness-check", headers=SCRAPE).status_code == 403
    assert http.post("/robustness-check", headers=SCRAPE, json=FAST).status_code == 403
