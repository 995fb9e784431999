"""The `reproduce` subcommand: the paper's comparison, undefended vs CQ vs TQ, every threat model.

For each dataset whose evaluation subset is present, every checkpoint named
``<dataset>-*`` is evaluated (the undefended one first; it is also the transfer
surrogate), transfer examples are crafted once and reused across the defended models, and
a per-dataset summary puts the paper's setting (transfer) beside the worst case.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from models.evalset import eval_set_path, load_eval_set
from robustness.cli_options import request_from_args
from robustness.console import ProgressPrinter, print_summary
from robustness.presets import (
    REPRODUCTION_ATTACK_PARAMS,
    REPRODUCTION_ATTACKS,
    REPRODUCTION_SAMPLE_LIMITS,
)
from robustness.render import write_report
from robustness.runner import TransferCache, run_suite
from robustness.subjects import load_subject
from robustness.summary import write_summary

logger = logging.getLogger(__name__)


def discover_checkpoints(folder: Path, dataset: str) -> list[Path]:
    """``<dataset>-*`` checkpoint folders, undefended first, then by name."""
    found = sorted(p.parent for p in folder.glob(f"{dataset}-*/manifest.json"))
    return sorted(found, key=lambda p: (not p.name.endswith("-undefended"), p.name))


def reproduce(args: argparse.Namespace) -> int:
    attacks = tuple(args.attacks.split(",")) if args.attacks else REPRODUCTION_ATTACKS
    args = _with_reproduction_budget(args, attacks)
    ran = 0
    for dataset in args.datasets.split(","):
        eval_path = eval_set_path(dataset, args.eval_dir)
        folders = discover_checkpoints(args.checkpoints, dataset)
        if not eval_path.is_file() or not folders:
            print(f"{dataset}: skipped (evaluation subset or checkpoints not present)")
            continue
        data = load_eval_set(eval_path)
        request = request_from_args(args, dataset, attacks)
        surrogate_path = args.checkpoints / f"{dataset}-undefended"
        surrogate = load_subject(surrogate_path) if surrogate_path in folders else None
        cache: TransferCache = {}
        reports = []
        for folder in folders:
            target = load_subject(folder)
            report = run_suite(
                target,
                data,
                request,
                surrogate=surrogate,
                progress=ProgressPrinter(f"{target.name} "),
                transfer_cache=cache,
            )
            print_summary(report, write_report(report, args.out, target.name))
            reports.append(report)
        for path in write_summary(reports, args.out, dataset):
            print(f"wrote {path}")
        ran += 1
    return 0 if ran else 1


def _with_reproduction_budget(args: argparse.Namespace, attacks: tuple[str, ...]):
    """The documented budget, under whatever the command line overrides."""
    limits = [f"{a}={n}" for a, n in REPRODUCTION_SAMPLE_LIMITS.items() if a in attacks]
    params = [
        f"{a}.{k}={v}"
        for a, values in REPRODUCTION_ATTACK_PARAMS.items()
        if a in attacks
        for k, v in values.items()
    ]
    return argparse.Namespace(
        **{**vars(args), "limit": limits + args.limit, "set": params + args.set}
    )
