"""Command line: ``python -m robustness {evaluate,reproduce,merge,render,list}``
(``qusec-robustness``).

``evaluate`` runs the suite on one checkpoint; ``reproduce`` runs the paper's comparison
(undefended vs CQ vs TQ) on every shipped checkpoint of each dataset with data present;
``merge`` folds a later run's rows (an attack rerun, say on more samples) into a report;
``render`` rewrites Markdown and plots from JSON reports (and, with ``--html``, a
self-contained HTML page each); ``list`` shows the attack table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import torch

from models.checkpoint import CheckpointError
from models.evalset import EvalSetError, eval_set_path, load_eval_set
from robustness.attacks import ATTACKS
from robustness.cli_options import common_options, request_from_args
from robustness.console import ProgressPrinter, print_summary
from robustness.merge import MergeError, merge_reports
from robustness.render import write_report
from robustness.runner import budget, run_suite, subject_facts
from robustness.subjects import default_surrogate, load_subject
from robustness.threats import THREAT_MODELS

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        return args.handler(args)
    except (ValueError, CheckpointError, EvalSetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qusec-robustness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    evaluate = sub.add_parser("evaluate", help="run the attack suite on one checkpoint")
    evaluate.add_argument("--checkpoint", required=True, type=Path)
    evaluate.add_argument(
        "--surrogate",
        type=Path,
        help="undefended checkpoint for the transfer threat model "
        "(default: <checkpoint's folder>/<dataset>-undefended when it exists)",
    )
    evaluate.add_argument("--eval-set", type=Path, help="default: data/eval/<dataset>-...npz")
    evaluate.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated")
    evaluate.add_argument(
        "--threat-models",
        help=f"comma-separated, of {','.join(THREAT_MODELS)} (default: all; those that do not "
        "apply to the model are listed as skipped in the report, while one named here that "
        "does not apply is refused)",
    )
    evaluate.add_argument("--epsilons", help="L-inf radii, e.g. 0.1,0.2 or 2/255,8/255")
    evaluate.add_argument("--l2-epsilons", help="L2 radii (default: the dataset preset)")
    evaluate.add_argument("--out", type=Path, default=Path("robustness-report"))
    evaluate.add_argument("--stem", help="report file name stem (default: the model's name)")
    evaluate.add_argument("--time-budget", type=float, help="seconds; partial report after")
    common_options(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    reproduce = sub.add_parser("reproduce", help="undefended vs CQ vs TQ, all threat models")
    reproduce.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    reproduce.add_argument("--eval-dir", type=Path, default=eval_set_path("mnist").parent)
    reproduce.add_argument("--datasets", default="mnist,cifar10")
    reproduce.add_argument("--attacks", help="comma-separated (default: the reproduction set)")
    reproduce.add_argument("--out", type=Path, default=Path("docs/results"))
    common_options(reproduce)
    reproduce.set_defaults(handler=_reproduce)

    merge = sub.add_parser(
        "merge",
        help="replace a report's rows for the attacks a later run of the same model, "
        "evaluation set and seed ran (no parts: derive the headline and flags again)",
    )
    merge.add_argument("base", type=Path, help="the report JSON to start from")
    merge.add_argument("parts", nargs="*", type=Path, help="later report JSONs; later wins")
    merge.add_argument(
        "--out", required=True, type=Path, help="merged report JSON (.md and .png beside it)"
    )
    merge.set_defaults(handler=_merge)

    render = sub.add_parser("render", help="rewrite the Markdown and PNG of JSON reports")
    render.add_argument("reports", nargs="+", type=Path)
    render.add_argument("--summary", metavar="DATASET", help="also write summary-DATASET.md/png")
    render.add_argument(
        "--html",
        action="store_true",
        help="also write a self-contained HTML report (charts, flags, examples) per JSON",
    )
    render.set_defaults(handler=_render)

    listing = sub.add_parser("list", help="the registered attacks and their parameters")
    listing.set_defaults(handler=_list)
    for command in (evaluate, reproduce, merge, render, listing):
        command.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def _evaluate(args: argparse.Namespace) -> int:
    target = load_subject(args.checkpoint)
    surrogate_path = args.surrogate or default_surrogate(args.checkpoint, target.dataset)
    surrogate = load_subject(surrogate_path) if surrogate_path else None
    data = load_eval_set(args.eval_set or eval_set_path(target.dataset))
    request = request_from_args(args, target.dataset, tuple(args.attacks.split(",")))
    # The suite's request rules, as the service's admin API applies them.
    facts = subject_facts(target, surrogate, tuple(data.images.shape[1:]))
    request.validate(facts, skip_inapplicable=args.threat_models is None)
    report = run_suite(
        target,
        data,
        request,
        surrogate=surrogate,
        progress=ProgressPrinter(),
        should_stop=budget(args.time_budget) if args.time_budget is not None else None,
    )
    paths = write_report(report, args.out, args.stem or target.name)
    print_summary(report, paths)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from robustness.cli_reproduce import reproduce  # the reproduction plan is only needed here

    return reproduce(args)


def _merge(args: argparse.Namespace) -> int:
    if args.out.suffix != ".json":
        raise ValueError(f"--out must name a .json file, got {args.out}")
    base, *parts = (_read_report(path) for path in (args.base, *args.parts))
    try:
        report = merge_reports(base, *parts)
    except KeyError as exc:
        raise MergeError(f"not a robustness report: no field {exc}") from None
    print_summary(report, write_report(report, args.out.parent, args.out.stem))
    return 0


def _read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(report, dict):
        raise ValueError(f"{path} is not a robustness report")
    return report


def _render(args: argparse.Namespace) -> int:
    from robustness.html import write_html
    from robustness.summary import write_summary

    reports = []
    for path in args.reports:
        report = _read_report(path)
        for written in write_report(report, path.parent, path.stem)[1:]:
            print(f"wrote {written}")
        if args.html:
            print(f"wrote {write_html(report, path.with_suffix('.html'))}")
        reports.append(report)
    if args.summary:
        for written in write_summary(reports, args.reports[0].parent, args.summary):
            print(f"wrote {written}")
    return 0


def _list(args: argparse.Namespace) -> int:
    for name, attack in ATTACKS.items():
        kind = "minimal" if attack.minimal else "bounded"
        params = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(attack).items()) or "-"
        print(f"{name:10} {attack.norm:4} {attack.access:9} {kind:8} {params}")
    return 0
