"""Robustness-check jobs as the tests submit and watch them: token, requests, polling."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

TOKEN = "admin-token-for-tests-0123456789"


AUTH = {"Authorization": f"Bearer {TOKEN}"}


FAST = {
    "attacks": ["noise", "fgsm"],
    "samples": 20,
    "batch_size": 5,
    "epsilons": [0.1, 0.3],
    "sanity_epsilon": None,
}
# A bar that FAST meets (FAST runs every threat model that applies by default): tests
# whose checks must set the gauges lower it so (service/jobs/qualifying.py).
SMALL_BAR = {
    "robustness_qualifying_attacks": ["fgsm"],
    "robustness_qualifying_epsilons": [0.1, 0.3],
    "robustness_qualifying_samples": 20,
}
SMALL_BAR_ENV = {
    "QUSEC_ROBUSTNESS_QUALIFYING_ATTACKS": "fgsm",
    "QUSEC_ROBUSTNESS_QUALIFYING_EPSILONS": "0.1,0.3",
    "QUSEC_ROBUSTNESS_QUALIFYING_SAMPLES": "20",
}


def slow(samples: int = 40, steps: int = 100, **extra) -> dict:
    """About half a second per batch of 5 on one thread of the development machine."""
    return {
        "attacks": ["pgd"],
        "threat_models": ["transfer"],
        "attack_params": {"pgd": {"nb_iter": steps}},
        "samples": samples,
        "batch_size": 5,
        "epsilons": [0.3],
        "sanity_epsilon": None,
        **extra,
    }


def tiny_npz(count: int = 20, shape: tuple = (28, 28), seed: int = 0, **arrays) -> bytes:
    rng = np.random.default_rng(seed)
    content = {
        "images": rng.integers(0, 256, (count, *shape), dtype=np.uint8),
        "labels": rng.integers(0, 10, count),
        **arrays,
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **content)
    return buffer.getvalue()


def wait_for(
    client,
    job_id: str,
    done: Callable[[dict], bool],
    timeout: float = 300,
    seen: list | None = None,
) -> dict:
    """Poll the job until ``done(job)``; every answer is appended to ``seen``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/robustness-check/{job_id}", headers=AUTH).json()
        if seen is not None:
            seen.append(job)
        if done(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached the condition; last seen: {job}")


def finished(job: dict) -> bool:
    return job["status"] not in ("queued", "running")


def metric_value(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not exported")


def robustness_metrics(client) -> str:
    """The admin scrape, where every robustness series is (never the public /metrics)."""
    answer = client.get("/admin/metrics", headers=AUTH)
    assert answer.status_code == 200, answer.text
    return answer.text


def wait_for_metrics(client, line: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while (text := robustness_metrics(client)) and line not in text.splitlines():
        if time.monotonic() > deadline:
            raise AssertionError(f"{line!r} never appeared in /admin/metrics")
        time.sleep(0.05)
    return text


def assert_gauges_match(client, report: dict, done: int = 1) -> None:
    """Every exported robust accuracy equals the report's row or headline it comes from."""
    # The service publishes the gauges once it has seen the job process exit.
    text = wait_for_metrics(client, f'qusec_robustness_jobs_total{{status="done"}} {done}.0')
    model = report["model"]["name"]
    expected = {
        (w["attack"], "worst", w["epsilon"]): w for w in report["worst_case_per_attack"]
    } | {("worst", "worst", w["epsilon"]): w for w in report["worst_case"]}
    expected |= {
        (r["attack"], r["threat_model"], r["epsilon"]): r
        for r in report["results"]
        if r["epsilon"] is not None and not r["sanity"]
    }
    assert len(expected) > 3
    for (attack, threat_model, eps), source in expected.items():
        value = metric_value(
            text,
            "qusec_robust_accuracy_ratio",
            model=model,
            attack=attack,
            threat_model=threat_model,
            norm=source["norm"],
            epsilon=f"{eps:.6g}",
        )
        assert value == pytest.approx(source["robust_accuracy"])
    exported = [line for line in text.splitlines() if line.startswith("qusec_robust_accuracy")]
    assert len(exported) == len(expected)
    assert metric_value(text, "qusec_robustness_report_timestamp_seconds", model=model) > 0


def admin_factory(serve, checkpoints, tmp_path: Path) -> Callable[..., TestClient]:
    """``start(**settings)``: an app with admin access, serving the TQ model (whose
    undefended sibling folder is the transfer surrogate) and a fresh job database."""

    def start(**overrides) -> TestClient:
        values = {
            "checkpoints": [checkpoints["mnist-tq2"]],
            "admin_token": TOKEN,
            "robustness_db": tmp_path / "jobs.sqlite3",
            "robustness_stop_grace_seconds": 20,
            "robustness_max_samples": 100,
            **overrides,
        }
        return serve(**values)

    return start


def poll(http: httpx.Client, job_id: str, condition, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/robustness-check/{job_id}", headers=AUTH).json()
        if condition(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id}: condition not reached; last seen {job}")


def process_gone(pid: int) -> bool:
    """Gone, or a zombie: orphans are reaped by whoever adopted them, maybe never here."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status
