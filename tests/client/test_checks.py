"""Robustness checks through the client against a real service: the smallest check the API
accepts (one bundled image or an uploaded set of two, the uniform-noise floor at one
radius), followed to its end with a progress callback, then its report."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from client import AsyncClient, Client, QuSecError, RobustnessJob
from tests.client.conftest import ADMIN_TOKEN
from tests.test_samples import SAMPLES

pytestmark = pytest.mark.slow

# The cheapest check the API accepts: the uniform-noise floor on one image at one radius,
# without the gradient sanity probe.
TINY = {
    "attacks": ["noise"],
    "samples": 1,
    "batch_size": 1,
    "epsilons": [0.1],
    "sanity_epsilon": None,
}


def assert_followed_to_the_end(job: RobustnessJob, seen: list[RobustnessJob]) -> None:
    assert job.status == "done", job.error
    assert seen, "the progress callback was never called"
    assert seen[-1].status == "done" and seen[-1].progress.fraction == 1.0
    fractions = [update.progress.fraction for update in seen]
    assert fractions == sorted(fractions)
    assert job.report is not None and job.report["model"]["name"] == job.model
    assert job.report["worst_case"] and job.worst_case


def test_a_check_is_submitted_followed_and_its_report_fetched(server) -> None:
    seen: list[RobustnessJob] = []
    with Client(server.url, admin_token=ADMIN_TOKEN) as qusec:
        submitted = qusec.submit_check("mnist-tq2", **TINY)
        assert submitted.status in ("queued", "running") and submitted.location
        assert submitted.report is None and submitted.request["samples"] == 1
        job = qusec.wait_for_check(submitted.id, seen.append, poll_seconds=0.1)
        assert_followed_to_the_end(job, seen)
        assert job.samples.startswith("mnist-test") and job.report["samples"] == 1
        assert qusec.get_check(job.id) == job
        assert job.id in [listed.id for listed in qusec.list_checks(status="done")]
        with pytest.raises(QuSecError) as raised:
            qusec.cancel_check(job.id)
        assert (raised.value.status, raised.value.reason) == (409, "job_finished")


def two_digits_npz() -> bytes:
    images = []
    for name in ("digit.png", "mnist-test-1.png"):
        with Image.open(SAMPLES / name) as image:
            images.append(np.asarray(image))
    out = io.BytesIO()
    np.savez(out, images=np.stack(images), labels=np.array([7, 2]))
    return out.getvalue()


def test_the_async_client_runs_a_check_on_an_uploaded_set(server) -> None:
    seen: list[RobustnessJob] = []

    async def on_progress(job: RobustnessJob) -> None:
        seen.append(job)

    async def run() -> RobustnessJob:
        async with AsyncClient(server.url, admin_token=ADMIN_TOKEN) as qusec:
            return await qusec.run_check(
                "mnist-tq2",
                upload=two_digits_npz(),
                on_progress=on_progress,
                poll_seconds=0.1,
                **{**TINY, "samples": 2},
            )

    job = asyncio.run(run())
    assert_followed_to_the_end(job, seen)
    assert job.samples == "uploaded" and job.report["clean_accuracy"] == 1.0
