"""A job database that cannot be used takes only the admin routes down, saying why; one
damaged job row never breaks the list."""

from __future__ import annotations

import sqlite3

import pytest

from service.jobs.store.sqlite import SqliteJobStore
from tests.service.helpers.images import digit, encode

TOKEN = "admin-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PNG = encode(digit(), "PNG")


def corrupt_file(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(b"this is not an SQLite database, it is garbage " * 100)
    return path


def under_a_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return blocker / "jobs.sqlite3"  # its folder cannot be created


@pytest.mark.parametrize("database", [corrupt_file, under_a_file], ids=["corrupt", "unopenable"])
def test_an_unusable_job_database_leaves_classification_up(serve, tmp_path, database) -> None:
    path = database(tmp_path)
    client = serve(admin_token=TOKEN, robustness_db=path)
    assert client.post("/classify", content=PNG).status_code == 200
    for answer in (
        client.get("/robustness-check", headers=AUTH),
        client.get("/robustness-check/abc", headers=AUTH),
        client.post("/robustness-check", json={}, headers=AUTH),
    ):
        assert answer.status_code == 503
        body = answer.json()
        assert body["reason"] == "jobs_unavailable"
        assert str(path) in body["error"] and "QUSEC_ROBUSTNESS_DB" in body["error"]
        assert answer.headers["Retry-After"]
    # The token is still checked first.
    assert client.get("/robustness-check").status_code == 401


def test_one_damaged_row_never_breaks_the_job_list(serve, tmp_path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SqliteJobStore(path)
    store.initialise()
    good = {
        "model": "mnist-tq2",
        "checkpoint": "x",
        "weights_sha256": "0" * 64,
        "input_shape": [1, 28, 28],
        "classes": 10,
        "surrogate": None,
        "eval_set": None,
        "request": {},
        "time_budget_seconds": 60.0,
    }
    kept = store.submit("mnist-tq2", good, None, 10)
    broken_json = store.submit("mnist-tq2", good, None, 10)
    missing_field = store.submit("mnist-tq2", {"model": "mnist-tq2"}, None, 10)
    for job in (kept, broken_json, missing_field):
        store.request_stop(job.id, "cancel")  # a queued job is cancelled at once: never run
    with sqlite3.connect(path) as db:
        db.execute("UPDATE jobs SET spec = '{not json' WHERE id = ?", (broken_json.id,))
    client = serve(admin_token=TOKEN, robustness_db=path)
    answer = client.get("/robustness-check", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert [job["id"] for job in answer.json()["jobs"]] == [kept.id]
