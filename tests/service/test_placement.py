"""Workers pinned to CPUs (``service.placement``): the rule, and real processes pinned and
their children unpinned (Linux affinity, in subprocesses, so pytest's own stays as it is)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from service import placement
from service.placement import UNPINNED_CPUS_ENV, worker_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def cpus(monkeypatch):
    """Set the CPUs this process may use, as ``sched_getaffinity`` reports them."""

    def allow(*allowed: int) -> None:
        monkeypatch.setattr(placement.os, "sched_getaffinity", lambda pid: set(allowed))

    return allow


def test_auto_pins_only_when_the_workers_match_the_cpus(cpus) -> None:
    cpus(2, 5)
    assert [worker_cpu(i, 2, "auto") for i in range(2)] == [2, 5]
    assert worker_cpu(0, 1, "auto") is None  # one worker on two CPUs: free to move
    cpus(*range(8))  # a quota on a large host, say: every CPU is allowed
    assert worker_cpu(0, 2, "auto") is None


def test_always_pins_while_there_are_cpus_enough_and_never_does_not(cpus) -> None:
    cpus(*range(8))
    assert [worker_cpu(i, 3, "always") for i in range(3)] == [0, 1, 2]
    assert worker_cpu(0, 9, "always") is None
    assert worker_cpu(0, 2, "never") is None


_PIN_THEN_START_A_CHILD = """
import json, os, subprocess, sys
from service.placement import pin_worker
cpu = pin_worker(1, 2, "always")
child = subprocess.run(
    [sys.executable, "-c",
     "import json, os; from service.placement import unpin_child; unpin_child(); "
     "print(json.dumps(sorted(os.sched_getaffinity(0))))"],
    capture_output=True, text=True, check=True,
)
print(json.dumps({"cpu": cpu, "pinned": sorted(os.sched_getaffinity(0)),
                  "child": json.loads(child.stdout)}))
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two CPUs",
)
def test_a_pinned_worker_runs_on_one_cpu_and_its_children_on_all_again() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    environment = {k: v for k, v in os.environ.items() if k != UNPINNED_CPUS_ENV}
    ran = subprocess.run(
        [sys.executable, "-c", _PIN_THEN_START_A_CHILD],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**environment, "PYTHONPATH": ROOT},
    )
    seen = json.loads(ran.stdout)
    assert seen == {"cpu": allowed[1], "pinned": [allowed[1]], "child": allowed}
