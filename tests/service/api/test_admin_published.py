"""The report published with a served model's weights: its figures on /admin/metrics until
a qualifying check replaces them, its summary in /admin/models, and the whole report at
/admin/models/{name}/published-report. The service serves the shipped mnist-tq2, whose
report is docs/results/mnist-tq2.json, beside a tiny random-weight model that has none."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from service.settings import BUNDLED_CHECKPOINTS_DIR, BUNDLED_REPORTS_DIR
from tests.service.helpers.admin import AUTH, FAST, metric_value, robustness_metrics

PUBLISHED = json.loads((BUNDLED_REPORTS_DIR / "mnist-tq2.json").read_text())
SHIPPED = BUNDLED_CHECKPOINTS_DIR / "mnist-tq2"
WEIGHTS = json.loads((SHIPPED / "manifest.json").read_text())["weights_sha256"]
RATIO = "qusec_robust_accuracy_ratio"
SOURCE = "qusec_robustness_report_source"
FINISHED = datetime.fromisoformat(PUBLISHED["started_at"]).timestamp() + PUBLISHED["seconds"]


@pytest.fixture
def start(queue_only_admin, checkpoints):
    """A service with admin access serving the shipped mnist-tq2 and a tiny model."""

    def started(**overrides):
        served = [SHIPPED, checkpoints["mnist-undefended"]]
        return queue_only_admin(checkpoints=served, **overrides)

    return started


def headline(text: str, epsilon: str) -> float:
    return metric_value(
        text, RATIO, model="mnist-tq2", attack="worst", threat_model="worst", epsilon=epsilon
    )


def test_a_fresh_service_shows_the_published_figures_of_the_served_weights(start) -> None:
    client = start()
    text = robustness_metrics(client)
    for entry in PUBLISHED["worst_case"]:
        label = f"{entry['epsilon']:.6g}"
        labels = {"norm": entry["norm"], "epsilon": label}
        value = metric_value(
            text, RATIO, model="mnist-tq2", attack="worst", threat_model="worst", **labels
        )
        assert value == pytest.approx(entry["robust_accuracy"])
    assert headline(text, "0.3") == pytest.approx(0.776)
    timestamp = metric_value(text, "qusec_robustness_report_timestamp_seconds", model="mnist-tq2")
    assert timestamp == pytest.approx(FINISHED)
    assert metric_value(text, SOURCE, model="mnist-tq2", source="published") == 1
    assert metric_value(text, SOURCE, model="mnist-tq2", source="check") == 0
    # The tiny model's weights have no published report: no figures at all.
    assert 'model="mnist-undefended"' not in text
    # Still admin-only: the public scrape has none of it.
    assert "qusec_robust" not in client.get("/metrics").text

    models = {m["name"]: m for m in client.get("/admin/models", headers=AUTH).json()["models"]}
    summary = models["mnist-tq2"]["published_report"]
    assert summary["file"] == "mnist-tq2.json" and summary["weights_match"] is True
    assert summary["weights_sha256"] == WEIGHTS == models["mnist-tq2"]["weights_sha256"]
    assert summary["worst_case"] == PUBLISHED["worst_case"] and summary["in_gauges"] is True
    assert summary["started_at"] == PUBLISHED["started_at"] and summary["samples"] == 1000
    assert str(BUNDLED_REPORTS_DIR) not in json.dumps(summary)
    assert models["mnist-undefended"]["published_report"] is None


def test_the_published_report_is_served_whole_to_the_admin_only(start) -> None:
    client = start()
    answer = client.get("/admin/models/mnist-tq2/published-report", headers=AUTH)
    assert answer.status_code == 200
    body = answer.json()
    assert body["model"] == "mnist-tq2" and body["file"] == "mnist-tq2.json"
    assert body["report"] == PUBLISHED and body["in_gauges"] is True

    none = client.get("/admin/models/mnist-undefended/published-report", headers=AUTH)
    assert none.status_code == 404 and none.json()["reason"] == "no_published_report"
    assert "mnist-undefended" in none.json()["error"]
    unknown = client.get("/admin/models/mnist-cq9/published-report", headers=AUTH)
    assert unknown.status_code == 404 and unknown.json()["reason"] == "unknown_model"
    assert client.get("/admin/models/mnist-tq2/published-report").status_code == 401


def test_a_qualifying_check_replaces_the_published_figures(start) -> None:
    client = start()
    job_id = client.post("/robustness-check", headers=AUTH, json=FAST).json()["id"]
    store = client.app.state.jobs.store
    claimed = store.claim_next("test")
    assert claimed is not None and claimed.id == job_id
    # The check's own numbers, told apart from the published ones, judged as meeting its bar.
    worst = [{**entry, "robust_accuracy": 0.125} for entry in PUBLISHED["worst_case"]]
    qualification = {"qualifying": True, "reasons": [], "bar": claimed.spec["qualification"]["bar"]}
    report = {**PUBLISHED, "worst_case": worst, "qualification": qualification}
    assert store.finish(job_id, claimed.lease, "done", report)
    client.app.state.jobs.gauges.publish_latest()  # what the settle and every upkeep do

    text = robustness_metrics(client)
    assert headline(text, "0.3") == 0.125
    finished_at = store.get(job_id, with_report=False).finished_at
    timestamp = metric_value(text, "qusec_robustness_report_timestamp_seconds", model="mnist-tq2")
    assert timestamp == pytest.approx(finished_at) and timestamp != pytest.approx(FINISHED)
    assert metric_value(text, SOURCE, model="mnist-tq2", source="check") == 1
    assert metric_value(text, SOURCE, model="mnist-tq2", source="published") == 0
    # The published report is still there to read, no longer what the gauges show.
    models = client.get("/admin/models", headers=AUTH).json()["models"]
    assert models[0]["published_report"]["in_gauges"] is False
    answer = client.get("/admin/models/mnist-tq2/published-report", headers=AUTH).json()
    assert (
        answer["in_gauges"] is False and answer["report"]["worst_case"] == PUBLISHED["worst_case"]
    )


def test_a_check_below_the_bar_leaves_the_published_figures(start) -> None:
    client = start()
    job_id = client.post("/robustness-check", headers=AUTH, json=FAST).json()["id"]
    store = client.app.state.jobs.store
    claimed = store.claim_next("test")
    bar = claimed.spec["qualification"]["bar"]
    judged = {"qualifying": False, "reasons": ["it runs on 20 samples"], "bar": bar}
    worst = [{**entry, "robust_accuracy": 0.125} for entry in PUBLISHED["worst_case"]]
    report = {**PUBLISHED, "worst_case": worst, "qualification": judged}
    assert store.finish(job_id, claimed.lease, "done", report)
    client.app.state.jobs.gauges.publish_latest()
    text = robustness_metrics(client)
    assert headline(text, "0.3") == pytest.approx(0.776)
    assert metric_value(text, SOURCE, model="mnist-tq2", source="published") == 1


def test_without_published_reports_nothing_is_seeded(start) -> None:
    client = start(published_reports=None)
    text = robustness_metrics(client)
    assert RATIO + "{" not in text and SOURCE + "{" not in text
    models = client.get("/admin/models", headers=AUTH).json()["models"]
    assert [m["published_report"] for m in models] == [None, None]
    answer = client.get("/admin/models/mnist-tq2/published-report", headers=AUTH)
    assert answer.status_code == 404 and answer.json()["reason"] == "no_published_report"


def test_the_published_figures_show_while_the_job_store_cannot_be_opened(start, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    client = start(robustness_db=blocker / "jobs.sqlite3")  # its folder cannot be created
    listed = client.get("/robustness-check", headers=AUTH)
    assert listed.status_code == 503 and listed.json()["reason"] == "jobs_unavailable"
    text = robustness_metrics(client)
    assert headline(text, "0.3") == pytest.approx(0.776)
    assert metric_value(text, SOURCE, model="mnist-tq2", source="published") == 1
    answer = client.get("/admin/models/mnist-tq2/published-report", headers=AUTH)
    assert answer.status_code == 200 and answer.json()["in_gauges"] is True
