"""Which CPUs a supervised worker runs on (``QUSEC_PIN_WORKERS``; Linux).

A worker's two busy threads, its event loop and its inference thread, share the work of one
core. Left to the scheduler, two workers' four threads wander over two cores, and each
core's caches keep being refilled with the other worker's model and buffers. Pinned, worker
``i`` runs on the ``i``-th CPU the service may use, as the batched-forward limit's
processes in effect do (docs/service.md, "Workers pinned to cores", has the runs).

``auto`` (the default) pins only when the service may use exactly as many CPUs as it has
workers (a container given two CPUs of its own, this 2-core machine): on a host whose CPUs
are shared through a quota, not a CPU set, the CPUs a process may use are all the host's,
and pinning two workers to the first two would put them beside whatever else runs there.
``always`` pins whenever there are CPUs enough; ``never`` leaves placement to the kernel.

What a pinned worker starts (decode processes, robustness-check jobs) runs on every CPU the
service may use again (``unpin_child``): a job's attacks want all of them, and a niced
heavy decode should not take its turns on its own worker's core.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

# The CPUs the service may use, as a pinned worker found them: its children go back to them.
UNPINNED_CPUS_ENV = "QUSEC_UNPINNED_CPUS"


def worker_cpu(index: int, workers: int, mode: str) -> int | None:
    """The CPU worker ``index`` of ``workers`` is pinned to under ``mode``, or None."""
    if mode == "never" or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if mode == "auto" and len(allowed) != workers:
        return None
    if workers > len(allowed):
        return None
    return allowed[index]


def pin_worker(index: int, workers: int, mode: str) -> int | None:
    """Pin this process (before it starts any thread) as ``worker_cpu`` says; its CPU."""
    cpu = worker_cpu(index, workers, mode)
    if cpu is None:
        return None
    os.environ[UNPINNED_CPUS_ENV] = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    os.sched_setaffinity(0, {cpu})
    return cpu


def unpin_child() -> None:
    """In a process a pinned worker started: run on every CPU the service may use again."""
    cpus = os.environ.get(UNPINNED_CPUS_ENV)
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, {int(cpu) for cpu in cpus.split(",")})
    except (OSError, ValueError) as exc:  # a CPU set changed since: stay where we are
        log.warning("could not move off the worker's CPU: %s", exc)
