"""Wall time of one multi-unit robustness check: one worker, whole, against N workers
splitting it into its units.

Queues the check straight into a job store (a temporary SQLite file by default, or the
PostgreSQL database ``--jobs-url`` names), starts ``python -m service.jobs.worker --loop``
processes, and times from the moment the check is queued (workers already idle and
polling) until it is finished. Rounds: one worker running the check whole, one worker
running its parts one after another (the price of splitting), and ``--workers`` workers
sharing the parts. Prints a Markdown table and checks that the split reports' rows equal
the whole one's.

    .venv/bin/python benchmarks/bench_workers.py --checkpoint checkpoints/mnist-tq2
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from models.checkpoint import load_checkpoint
from models.evalset import eval_set_path, load_eval_set
from robustness.request import SuiteRequest
from service.jobs import split
from service.jobs.planning import JobSpec
from service.jobs.store import FINISHED, JobStore, open_store

log = logging.getLogger("bench_workers")
ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints/mnist-tq2")
    parser.add_argument("--jobs-url", help="a postgresql:// store (default: temporary SQLite)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--pgd-steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument(
        "--repeat", type=int, default=1, help="cycles of the three rounds, interleaved"
    )
    return parser.parse_args(argv)


def check_spec(checkpoint: Path, args: argparse.Namespace) -> tuple[JobSpec, object, str]:
    """The check: FGSM and PGD under the naive and BPDA threat models at three radii."""
    loaded = load_checkpoint(checkpoint)
    manifest = loaded.manifest
    request = SuiteRequest(
        attacks=("fgsm", "pgd"),
        threat_models=("naive", "bpda"),
        epsilons=(0.1, 0.2, 0.3),
        samples=args.samples,
        batch_size=100,
        attack_params={"pgd": {"nb_iter": args.pgd_steps}},
        sanity_epsilon=None,
    )
    request.validate()
    spec = JobSpec(
        model=manifest.name or checkpoint.name,
        checkpoint=str(checkpoint.resolve()),
        weights_sha256=manifest.weights_sha256,
        input_shape=tuple(manifest.input_shape),  # type: ignore[arg-type]
        classes=len(manifest.class_names),
        surrogate=None,
        eval_set=str(eval_set_path(manifest.dataset).resolve()),
        request=request.as_dict(),
        time_budget_seconds=3600,
    )
    load_eval_set(spec.eval_set)  # fail here, not in a worker, if it is missing
    return spec, loaded.model, manifest.dataset


def start_workers(count: int, environment: dict[str, str], logs: Path) -> list[subprocess.Popen]:
    workers = []
    for index in range(count):
        log_path = logs / f"worker-{len(list(logs.iterdir()))}-{index}.log"
        with open(log_path, "wb") as sink:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "service.jobs.worker", "--loop"],
                    cwd=ROOT,
                    env=environment,
                    stdout=sink,
                    stderr=sink,
                )
            )
        deadline = time.monotonic() + 180
        while b"worker started" not in log_path.read_bytes():
            if workers[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start: {log_path.read_text()}")
            time.sleep(0.1)
    return workers


def time_round(store: JobStore, spec: JobSpec, parts: list[JobSpec] | None) -> tuple[float, dict]:
    started = time.perf_counter()
    job = store.submit(
        spec.model, spec.as_dict(), None, 100, [p.as_dict() for p in parts] if parts else None
    )
    while (current := store.get(job["id"]))["status"] not in FINISHED:
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    if current["status"] != "done":
        raise RuntimeError(f"the check ended {current['status']}: {current['error']}")
    return seconds, current["report"]


def run_round(store, spec, parts, workers: int, environment, logs) -> tuple[float, dict]:
    processes = start_workers(workers, environment, logs)
    try:
        return time_round(store, spec, parts)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=120)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec, model, dataset = check_spec(args.checkpoint, args)
    parts = split.plan_parts(spec, dataset, model)
    assert parts is not None
    with tempfile.TemporaryDirectory(prefix="qusec-bench-workers-") as scratch:
        store = open_store(args.jobs_url, Path(scratch) / "jobs.sqlite3")
        store.initialise()
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("QUSEC_")},
            "QUSEC_ROBUSTNESS_DB": str(Path(scratch) / "jobs.sqlite3"),
            "QUSEC_ROBUSTNESS_THREADS": str(args.threads),
            "QUSEC_ROBUSTNESS_NICE": "0",
            "QUSEC_LOG_FORMAT": "json",
            **({"QUSEC_JOBS_URL": args.jobs_url} if args.jobs_url else {}),
        }
        logs = Path(scratch) / "logs"
        logs.mkdir()
        rounds = [("whole", None, 1), ("split", parts, 1), ("split", parts, args.workers)]
        results = []
        for name, round_parts, workers in rounds * args.repeat:
            log.info("round: %s on %d worker(s)", name, workers)
            seconds, report = run_round(store, spec, round_parts, workers, environment, logs)
            results.append((name, workers, seconds, report))
    whole_rows = _rows(results[0][3])
    for name, workers, _, report in results[1:]:
        assert _rows(report) == whole_rows, f"{name} on {workers} differs from the whole run"
    print(
        f"\n{platform.node()}: {os.cpu_count()} CPUs, {args.threads} torch thread(s) per worker; "
        f"{len(parts)} units (FGSM, PGD x{args.pgd_steps}; naive, BPDA; 3 radii) on "
        f"{args.samples} samples; store: {store.describe().split()[0]}\n"
    )
    print("| cycle | check | workers | wall time (s) | work summed over parts (s) | rows equal |")
    print("|---:|---|---:|---:|---:|---|")
    for index, (name, workers, seconds, report) in enumerate(results):
        cycle = index // len(rounds) + 1
        print(f"| {cycle} | {name} | {workers} | {seconds:.1f} | {report['seconds']:.1f} | yes |")
    return 0


def _rows(report: dict) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in report["results"]]


if __name__ == "__main__":
    sys.exit(main())
