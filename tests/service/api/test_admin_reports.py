"""The admin routes the console's report views use: the list filtered by model, and a
job's report downloaded as a JSON file or as the self-contained HTML page. No job process
runs: a queued job is finished through the store with a published report."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.service.helpers.admin import AUTH, FAST

RESULTS = Path(__file__).resolve().parents[3] / "docs" / "results"


def _finish_with_a_report(client, job_id: str) -> dict:
    store = client.app.state.jobs.store
    claimed = store.claim_next("test")
    assert claimed is not None and claimed.id == job_id
    report = json.loads((RESULTS / "mnist-tq2.json").read_text())
    assert store.finish(job_id, claimed.lease, "done", report)
    return report


def test_the_list_is_filtered_by_model(queue_only_admin, checkpoints) -> None:
    client = queue_only_admin(
        checkpoints=[checkpoints["mnist-tq2"], checkpoints["mnist-undefended"]]
    )
    ids = {}
    for model in ("mnist-tq2", "mnist-undefended", "mnist-tq2"):
        answer = client.post("/robustness-check", headers=AUTH, json={**FAST, "model": model})
        assert answer.status_code == 202, answer.text
        ids.setdefault(model, []).append(answer.json()["id"])
    listed = client.get("/robustness-check?model=mnist-tq2", headers=AUTH).json()["jobs"]
    assert [job["id"] for job in listed] == ids["mnist-tq2"][::-1]  # newest first
    only = client.get("/robustness-check?model=mnist-undefended&status=queued", headers=AUTH).json()
    assert [job["id"] for job in only["jobs"]] == ids["mnist-undefended"]
    none = client.get("/robustness-check?model=mnist-cq9", headers=AUTH).json()
    assert none == {"jobs": []}


def test_a_report_downloads_as_json_and_as_a_page(queue_only_admin) -> None:
    client = queue_only_admin()
    job_id = client.post("/robustness-check", headers=AUTH, json=FAST).json()["id"]
    report = _finish_with_a_report(client, job_id)
    name = re.compile(rf'attachment; filename="mnist-tq2-\d{{8}}-{job_id[:8]}\.(json|html)"')

    as_json = client.get(f"/robustness-check/{job_id}/report.json", headers=AUTH)
    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    assert name.fullmatch(as_json.headers["content-disposition"]).group(1) == "json"
    assert json.loads(as_json.content) == report

    page = client.get(f"/robustness-check/{job_id}/report.html", headers=AUTH)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert name.fullmatch(page.headers["content-disposition"]).group(1) == "html"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<h1>Robustness report: mnist-tq2</h1>" in page.text and "<script" not in page.text


def test_a_report_that_does_not_exist_yet_is_refused_with_its_reason(queue_only_admin) -> None:
    client = queue_only_admin()
    job_id = client.post("/robustness-check", headers=AUTH, json=FAST).json()["id"]
    for kind in ("json", "html"):
        queued = client.get(f"/robustness-check/{job_id}/report.{kind}", headers=AUTH)
        assert queued.status_code == 409 and queued.json()["reason"] == "no_report"
        unknown = client.get(f"/robustness-check/{'0' * 32}/report.{kind}", headers=AUTH)
        assert unknown.status_code == 404 and unknown.json()["reason"] == "unknown_job"
        anonymous = client.get(f"/robustness-check/{job_id}/report.{kind}")
        assert anonymous.status_code == 401
