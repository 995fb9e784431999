"""``--workers N``: N serving processes on one listening socket, kept running.

One event loop runs the request path of one process (decoding, quantizing, encoding,
HTTP), so a single process serves on about one core however many the host has. With
``QUSEC_WORKERS=N`` this supervisor binds the port once and starts N workers, each the
whole service (``service.server.serve``). By default
(``QUSEC_CONNECTION_BALANCING=least``) the supervisor accepts every connection and hands
it to the worker holding the fewest (``service.edge.handoff``); with ``kernel`` the
workers accept on the socket themselves, and the kernel spreads connections across them
as they happen to wake.

* Workers are ``spawn``ed: each imports and loads everything itself, nothing of the
  supervisor's state is shared. Each is its own process group (a terminal's Ctrl-C
  reaches only the supervisor, which then stops the workers once, gracefully) and
  dies with the supervisor (``PR_SET_PDEATHSIG``).
* Each worker may run on a CPU of its own (``QUSEC_PIN_WORKERS``, ``service.placement``):
  by default when the service may use exactly as many CPUs as it has workers.
* Worker 0 runs robustness-check jobs when the settings say so; the others serve and
  answer the admin routes from the same job store (``service.jobs``).
* Metrics: prometheus_client's multiprocess mode. Each worker writes its samples to a
  fresh directory made here; ``/metrics`` on any worker reports them summed
  (``service.metrics``). The directory is removed on exit.
* Startup: when a worker fails to start (a bad checkpoint, a full disk), every worker is
  stopped and the supervisor exits 3, as a single process would. A worker that dies
  after starting is logged and restarted while the others keep serving.
* SIGTERM or SIGINT: each worker drains its requests as a single process does, then
  the supervisor exits 0.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import uvicorn

from service.edge.handoff import Dispatcher, Lane, WorkerEnd, lane
from service.logs import configure_logging
from service.metrics import METRICS_DIR_ENV, forget_worker
from service.placement import pin_worker
from service.settings import ServiceSettings

log = logging.getLogger("service.supervisor")

# Seconds between the last worker's death and its replacement: restarts never spin.
RESTART_DELAY_SECONDS = 1.0
# After this long past its graceful-shutdown budget, a worker that has not exited is killed.
STOP_MARGIN_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    started: Any  # a multiprocessing Event, set once the worker listens
    lane: Lane | None = None  # its channel, when the supervisor hands out connections


def supervise(settings: ServiceSettings) -> int:
    """Run ``settings.workers`` serving processes until told to stop; the exit status."""
    metrics_dir = Path(tempfile.mkdtemp(prefix="qusec-metrics-"))
    # Read by prometheus_client when a worker imports it: set before any worker starts.
    os.environ[METRICS_DIR_ENV] = str(metrics_dir)
    stop = _StopSignal()
    try:
        listener = _bind(settings)
        supervisor = _Supervisor(settings, listener, metrics_dir, stop)
        return supervisor.run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


class _StopSignal:
    """SIGTERM and SIGINT, noted rather than acted on inside the handler."""

    def __init__(self) -> None:
        self.signum: int | None = None
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


class _Supervisor:
    def __init__(
        self,
        settings: ServiceSettings,
        listener: socket.socket,
        metrics_dir: Path,
        stop: _StopSignal,
    ) -> None:
        self.settings = settings
        self.listener = listener
        self.metrics_dir = metrics_dir
        self.stop = stop
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, _Worker] = {}
        self.exit_status = 0
        balancing = settings.connection_balancing == "least"
        self.dispatcher = Dispatcher(listener) if balancing else None

    def run(self) -> int:
        log.info("starting %d workers", self.settings.workers)
        if self.dispatcher is not None:
            self.dispatcher.start()
        try:
            return self._supervise()
        finally:
            if self.dispatcher is not None:
                self.dispatcher.stop()

    def _supervise(self) -> int:
        for index in range(self.settings.workers):
            self.workers[index] = self._spawn(index)
        failed = self._wait_started(list(self.workers.values()))
        if failed is not None:
            log.error("worker %d failed to start (exit %s)", failed.index, failed.process.exitcode)
            self._stop_all()
            return 3
        log.info("all %d workers serving", len(self.workers))
        while not self.stop.requested:
            self._replace_dead()
        log.info("stopping %d workers (signal %s)", len(self.workers), self.stop.signum)
        if self.dispatcher is not None:  # new connections are refused from here on
            self.dispatcher.stop()
            self.listener.close()
        self._stop_all()
        return self.exit_status

    def _spawn(self, index: int) -> _Worker:
        started = self.context.Event()
        # Only one process may run jobs on a store it alone owns (SQLite), and run crash
        # recovery there: worker 0.
        settings = self.settings.model_copy(
            update={"robustness_run_jobs": self.settings.robustness_run_jobs and index == 0}
        )
        ours: Lane | None = None
        source: socket.socket | WorkerEnd = self.listener
        if self.dispatcher is not None:
            ours, source = lane(self.context, index)
        process = self.context.Process(
            target=_worker_main,
            args=(settings, source, index, started, os.getpid()),
            name=f"qusec-worker-{index}",
        )
        process.start()
        if isinstance(source, WorkerEnd):
            source.channel.close()  # the worker has its copy; its death closes the channel
        return _Worker(index, process, started, ours)

    def _wait_started(self, workers: list[_Worker]) -> _Worker | None:
        """Wait until every one of ``workers`` listens; the first to exit instead, if any."""
        waiting = list(workers)
        while waiting:
            if self.stop.requested:
                return None
            for worker in list(waiting):
                if worker.started.is_set():
                    waiting.remove(worker)
                    if self.dispatcher is not None and worker.lane is not None:
                        self.dispatcher.open_lane(worker.lane)
                elif not worker.process.is_alive():
                    return worker
            wait([w.process.sentinel for w in waiting], timeout=0.2)
        return None

    def _replace_dead(self) -> None:
        sentinels = [w.process.sentinel for w in self.workers.values()]
        wait(sentinels, timeout=1.0)
        for index, worker in list(self.workers.items()):
            if worker.process.is_alive() or self.stop.requested:
                continue
            log.error(
                "worker %d (pid %s) exited with %s; restarting it",
                index,
                worker.process.pid,
                worker.process.exitcode,
            )
            if self.dispatcher is not None:
                self.dispatcher.close_lane(index)
            if worker.process.pid is not None:
                forget_worker(self.metrics_dir, worker.process.pid)
            time.sleep(RESTART_DELAY_SECONDS)
            replacement = self._spawn(index)
            self.workers[index] = replacement
            if self._wait_started([replacement]) is not None:
                log.error("worker %d failed to start again; stopping", index)
                self.stop.signum = signal.SIGTERM
                self.exit_status = 3

    def _stop_all(self) -> None:
        for worker in self.workers.values():
            if worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.settings.graceful_shutdown_seconds + STOP_MARGIN_SECONDS
        for worker in self.workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                log.error("worker %d did not stop in time; killing it", worker.index)
                worker.process.kill()
                worker.process.join()


def _bind(settings: ServiceSettings) -> socket.socket:
    """The listening socket, bound as uvicorn binds its own (address family, options)."""
    config = uvicorn.Config(
        "service.app:create_app", host=settings.host, port=settings.port, log_config=None
    )
    listener = config.bind_socket()
    listener.listen(config.backlog)  # the workers' servers would; the dispatcher accepts on it
    listener.set_inheritable(True)
    return listener


def _worker_main(
    settings: ServiceSettings,
    source: socket.socket | WorkerEnd,
    index: int,
    started: Any,
    supervisor_pid: int,
) -> None:
    """One worker: the whole service on the supervisor's socket, or on the connections the
    supervisor hands it (``source``)."""
    os.setpgrp()  # a terminal's Ctrl-C goes to the supervisor alone, which stops us once
    _die_with(supervisor_pid)
    cpu = pin_worker(index, settings.workers, settings.pin_workers)  # before any thread starts
    configure_logging(settings.log_level, settings.log_format, fields={"worker": index})
    if cpu is not None:
        log.info("worker %d runs on CPU %d", index, cpu)
    from service.server import serve

    if isinstance(source, WorkerEnd):
        sys.exit(serve(settings, handoff=source, on_started=started.set))
    sys.exit(serve(settings, sockets=[source], on_started=started.set))


def _die_with(supervisor_pid: int) -> None:
    """Be sent SIGTERM when the supervisor dies, however it dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own stop must do
        return
    if os.getppid() != supervisor_pid:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
