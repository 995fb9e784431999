"""What is admin-only stays admin-only, over real HTTP against ``python -m service``: the
public ``/models`` and ``/metrics`` show no training history, paths or robustness figures;
``/admin/models`` and ``/admin/metrics`` show them to the admin and (the scrape) to the
scrape token; and only a check that meets the bar sets the robustness gauges."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.service.helpers.admin import (
    AUTH,
    FAST,
    SMALL_BAR_ENV,
    TOKEN,
    assert_gauges_match,
    finished,
    poll,
    robustness_metrics,
    wait_for_metrics,
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
        **SMALL_BAR_ENV,
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


def _gauges(http: httpx.Client) -> list[str]:
    text = robustness_metrics(http)
    return sorted(line for line in text.splitlines() if line.startswith("qusec_robust"))


def _run(http: httpx.Client, body: dict, done: int) -> dict:
    job_id = http.post("/robustness-check", headers=AUTH, json=body).json()["id"]
    job = poll(http, job_id, finished)
    assert job["status"] == "done", job
    # The service has seen the job finish (and so refreshed the gauges) once this counts it.
    wait_for_metrics(http, f'qusec_robustness_jobs_total{{status="done"}} {done}.0')
    return job


@pytest.mark.slow  # runs real job processes
def test_only_a_qualifying_check_sets_the_robustness_gauges(http) -> None:
    # A small transfer-only check, its radii written as fractions: stored, shown as not
    # qualifying with its reasons, and never exported.
    small = {"attacks": ["fgsm"], "threat_models": ["transfer"], "samples": 10}
    small |= {"epsilons": ["0.1", "77/255"], "batch_size": 5, "sanity_epsilon": None}
    submitted = http.post("/robustness-check", headers=AUTH, json=small).json()
    assert submitted["qualifying"] is None
    assert submitted["radii_as_given"] == {"epsilons": ["0.1", "77/255"]}
    planned = submitted["qualification"]["reasons"]
    assert (
        planned[0]
        == "threat models that apply to the model are missing: naive, bpda, gradient_free"
    )
    transfer_only = poll(http, submitted["id"], finished)
    assert transfer_only["status"] == "done" and transfer_only["qualifying"] is False
    assert transfer_only["qualification"]["reasons"] == planned
    assert transfer_only["report"]["qualification"]["qualifying"] is False
    labels = {row["epsilon_label"] for row in transfer_only["report"]["results"]}
    assert labels == {"0.1", "77/255"}
    wait_for_metrics(http, 'qusec_robustness_jobs_total{status="done"} 1.0')
    assert not any(line.startswith("qusec_robust_accuracy") for line in _gauges(http))

    # A check that meets the bar sets every gauge from its rows.
    qualifying = _run(http, FAST, done=2)
    assert qualifying["qualifying"] is True and qualifying["qualification"]["reasons"] == []
    assert_gauges_match(http, qualifying["report"], done=2)
    shown = _gauges(http)

    # Another small check afterwards moves nothing: the gauges still show the qualifying one.
    later = _run(http, small, done=3)
    assert later["qualifying"] is False
    assert _without_counts(_gauges(http)) == _without_counts(shown)
    assert "qusec_robust" not in http.get("/metrics").text


def _without_counts(lines: list[str]) -> list[str]:
    return [line for line in lines if "jobs_total" not in line and "jobs_created" not in line]
