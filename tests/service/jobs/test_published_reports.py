"""Finding the published report of each served model's weights (service/jobs/published.py)."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path

import pytest

from service.jobs import published
from service.jobs.published import find_published, seed_gauges
from service.metrics import ServiceMetrics
from service.settings import BUNDLED_CHECKPOINTS, BUNDLED_CHECKPOINTS_DIR, BUNDLED_REPORTS_DIR

SERVED = "a" * 64
RETRAINED = "b" * 64
ELSEWHERE = "c" * 64


def report(
    sha256: str = SERVED,
    name: str = "mnist-tq2",
    started_at: str = "2026-12-01T10:00:00+00:00",
    seconds: float = 60.0,
    threat_models: tuple[str, ...] = ("naive", "bpda"),
    samples: int = 1000,
    accuracy: float = 0.5,
) -> dict:
    rows = [
        {
            "attack": "pgd",
            "threat_model": threat_model,
            "norm": "linf",
            "epsilon": 0.3,
            "sanity": False,
            "robust_accuracy": accuracy,
            "samples": samples,
            "complete": True,
        }
        for threat_model in threat_models
    ]
    worst = {"attack": "pgd", "norm": "linf", "epsilon": 0.3, "robust_accuracy": accuracy}
    return {
        "model": {"name": name, "sha256": sha256},
        "status": "complete",
        "samples": samples,
        "started_at": started_at,
        "seconds": seconds,
        "results": rows,
        "worst_case_per_attack": [worst],
        "worst_case": [{**worst, "threat_model": threat_models[0]}],
    }


def write(folder: Path, relative: str, content: dict | str) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_the_report_of_the_served_weights_is_chosen_and_one_of_other_weights_never(
    tmp_path, caplog
) -> None:
    write(tmp_path, "mnist-tq2.json", report(RETRAINED, accuracy=0.9))  # the name, stale
    write(tmp_path, "nested/deeper/current.json", report(SERVED, accuracy=0.7))
    write(tmp_path, "cifar10-cq4.json", report(ELSEWHERE, name="cifar10-cq4"))
    with caplog.at_level(logging.DEBUG, logger=published.__name__):
        found = find_published(tmp_path, {"mnist-tq2": SERVED, "mnist-pgd": "d" * 64})
    assert set(found) == {"mnist-tq2"}
    chosen = found["mnist-tq2"]
    assert chosen.file == "nested/deeper/current.json" and chosen.weights_sha256 == SERVED
    assert chosen.report["worst_case"][0]["robust_accuracy"] == 0.7
    start = datetime.fromisoformat("2026-12-01T10:00:00+00:00").timestamp()
    assert chosen.finished_at == start + 60
    stale = [r for r in caplog.records if "mnist-tq2.json skipped" in r.getMessage()]
    assert [r.levelno for r in stale] == [logging.WARNING]
    assert "bbbbbbbbbbbb..., not the weights aaaaaaaaaaaa..." in stale[0].getMessage()
    other = [r for r in caplog.records if "cifar10-cq4.json skipped" in r.getMessage()]
    assert other and "no served model has its weights" in other[0].getMessage()
    assert "model mnist-pgd: no published report of its weights" in caplog.text


def test_damaged_oversized_and_foreign_files_are_skipped_with_a_warning(tmp_path, caplog) -> None:
    write(tmp_path, "good.json", report())
    write(tmp_path, "truncated.json", json.dumps(report())[:-40])
    write(tmp_path, "not-a-report.json", {"model": "mnist-tq2", "results": []})
    write(tmp_path, "no-time.json", {**report(), "started_at": "yesterday"})
    write(tmp_path, "bad-rows.json", {**report(), "results": [{"attack": "pgd"}]})
    write(tmp_path, "big.json", {**report(), "padding": "x" * 5000})
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00 not text")
    write(tmp_path, "notes.txt", "not JSON, not looked at")
    os.mkfifo(tmp_path / "pipe.json")  # opening it would block: it is never opened
    with caplog.at_level(logging.WARNING, logger=published.__name__):
        found = find_published(tmp_path, {"mnist-tq2": SERVED}, max_bytes=4000)
    assert found["mnist-tq2"].file == "good.json"
    skipped = {
        r.getMessage().split()[2]: r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("published report ")
    }
    assert set(skipped) == {
        "truncated.json",
        "not-a-report.json",
        "no-time.json",
        "bad-rows.json",
        "big.json",
        "binary.json",
        "pipe.json",
    }
    assert "over the limit of 4000" in skipped["big.json"]
    assert "not valid JSON" in skipped["truncated.json"]
    assert "not a regular file" in skipped["pipe.json"]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_of_several_reports_of_the_weights_the_broadest_wins_then_the_newest(tmp_path) -> None:
    every = ("transfer", "naive", "bpda")
    later = "2026-12-02T00:00:00+00:00"
    write(tmp_path, "full.json", report(threat_models=every))
    # Newer, but of one threat model (a follow-up run of one attack) or on fewer images.
    write(tmp_path, "extra/one-attack.json", report(started_at=later, threat_models=("bpda",)))
    write(tmp_path, "extra/subset.json", report(started_at=later, threat_models=every, samples=200))
    assert find_published(tmp_path, {"m": SERVED})["m"].file == "full.json"
    rerun = report(started_at="2026-12-03T00:00:00+00:00", threat_models=every)
    write(tmp_path, "rerun.json", rerun)
    assert find_published(tmp_path, {"m": SERVED})["m"].file == "rerun.json"


def test_the_scan_is_bounded_and_a_missing_or_disabled_folder_gives_none(
    tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(published, "MAX_FILES", 2)
    for index in range(3):  # read in name order: the third is never looked at
        write(tmp_path, f"{index}.json", report(started_at=f"2026-12-0{index + 1}T00:00:00"))
    with caplog.at_level(logging.WARNING, logger=published.__name__):
        assert find_published(tmp_path, {"m": SERVED})["m"].file == "1.json"
    assert "only the first 2 JSON files are read" in caplog.text
    assert find_published(None, {"m": SERVED}) == {}
    assert find_published(tmp_path / "absent", {"m": SERVED}) == {}
    assert "is not a folder" in caplog.text


def test_the_summary_names_the_file_only_and_the_gauges_take_the_series(tmp_path) -> None:
    write(tmp_path, "sub/mnist-tq2.json", report(accuracy=0.25))
    chosen = find_published(tmp_path, {"served-name": SERVED})
    summary = chosen["served-name"].summary(in_gauges=True)
    assert summary["file"] == "sub/mnist-tq2.json" and str(tmp_path) not in json.dumps(summary)
    assert summary["weights_sha256"] == SERVED and summary["weights_match"] is True
    assert summary["finished_at"] == "2026-12-01T10:01:00Z"
    metrics = ServiceMetrics()
    seed_gauges(metrics, chosen)
    text = metrics.robustness_exposition().decode()
    assert (
        'qusec_robust_accuracy_ratio{attack="worst",epsilon="0.3",model="served-name",'
        'norm="linf",threat_model="worst"} 0.25'
    ) in text
    assert 'qusec_robustness_report_source{model="served-name",source="published"} 1.0' in text
    assert 'qusec_robustness_report_source{model="served-name",source="check"} 0.0' in text
    assert metrics.report_source("served-name") == "published"


def _bundled_weights(*names: str) -> dict[str, str]:
    manifests = {name: BUNDLED_CHECKPOINTS_DIR / name / "manifest.json" for name in names}
    return {name: json.loads(p.read_text())["weights_sha256"] for name, p in manifests.items()}


def test_each_bundled_model_gets_its_published_evaluation_not_a_follow_up_run() -> None:
    """docs/results/extra holds narrower runs of the same weights (one attack on all 1,000
    images, sweeps on 300): the full evaluation wins over them, however new they are."""
    if not BUNDLED_REPORTS_DIR.is_dir():
        pytest.skip("no docs/results beside the packages (an installed package)")
    weights = _bundled_weights(*BUNDLED_CHECKPOINTS)
    found = find_published(BUNDLED_REPORTS_DIR, weights)
    assert {name: chosen.file for name, chosen in found.items()} == {
        "mnist-pgd": "adversarial/mnist-pgd.json",
        "cifar10-resnet20-fgsm": "adversarial/cifar10-resnet20-fgsm.json",
        "mnist-tq2": "mnist-tq2.json",
        "cifar10-tq4": "cifar10-tq4.json",
        "cifar10-resnet20": "resnet/cifar10-resnet20.json",
    }
    for name, chosen in found.items():
        assert chosen.weights_sha256 == weights[name]
