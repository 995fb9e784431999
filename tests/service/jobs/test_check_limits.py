"""Costly attacks get a default sample limit in an admin check; the request's own wins."""

from __future__ import annotations

from pathlib import Path

from service.jobs.planning import DEFAULT_SAMPLE_LIMITS, CheckRequest, Target, plan_job
from service.settings import ServiceSettings

TARGET = Target(
    name="mnist-tq2",
    dataset="mnist",
    checkpoint=Path("checkpoints/mnist-tq2"),
    weights_sha256="0" * 64,
    input_shape=(1, 28, 28),
    classes=10,
    quantized=True,
    surrogate=None,
    surrogate_problem="none here",
    eval_set=Path("data/eval/mnist-test-first1000.npz"),
    eval_set_size=1000,
    eval_set_problem=None,
)


def _plan(**body):
    return plan_job(CheckRequest(**body), TARGET, 1000, False, ServiceSettings())


def test_new_attacks_are_accepted_with_default_limits():
    attacks = ["pgd", "apgd_ce", "apgd_t", "level", "level_8bit", "square", "square_l2"]
    spec = _plan(attacks=attacks)
    assert spec.request["attacks"] == attacks
    assert spec.request["sample_limits"] == {
        name: DEFAULT_SAMPLE_LIMITS[name] for name in attacks if name in DEFAULT_SAMPLE_LIMITS
    }
    assert spec.request["samples"] == 1000  # the cheap attacks still see every sample


def test_a_requested_limit_replaces_the_default():
    spec = _plan(attacks=["square", "level"], sample_limits={"square": 500})
    assert spec.request["sample_limits"] == {"square": 500, "level": 200}


def test_the_default_check_is_unchanged():
    assert _plan().request["sample_limits"] == {}
