"""Command line: ``python -m robustness {evaluate,reproduce,merge,render,list}``
(``qusec-robustness``).

``evaluate`` runs the suite on one checkpoint; ``reproduce`` runs the paper's comparison
(undefended vs CQ vs TQ) on every shipped checkpoint of each dataset with data present;
``merge`` folds a later run's rows (an attack rerun, say on more samples) into a report;
``render`` rewrites Markdown and plots from JSON reports (and, with ``--html``, a
self-contained HTML page each); ``list`` shows the attack table.

``python -m robustness COMMAND --help`` shows a command's options and their defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import torch

from models.checkpoint import CheckpointError, read_manifest
from models.evalset import (
    EvalSet,
    EvalSetError,
    default_eval_set,
    eval_set_path,
    folder_as_eval_set,
    load_eval_set,
)
from models.memory import keep_freed_memory
from robustness.attacks import ATTACKS
from robustness.cli_config import apply_config
from robustness.cli_options import HelpFormatter, common_options, evaluate_request
from robustness.console import ProgressPrinter, print_summary
from robustness.merge import MergeError, merge_reports
from robustness.plan import Subject
from robustness.presets import ATTACK_SETS
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
    try:
        apply_config(args)
        if getattr(args, "threads", None):
            torch.set_num_threads(args.threads)
        keep_freed_memory()  # every attack step allocates and frees activations and gradients
        return args.handler(args)
    except (ValueError, CheckpointError, EvalSetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qusec-robustness", description=__doc__, formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=summary, description=summary, formatter_class=HelpFormatter
        )

    evaluate = command("evaluate", "run the attack suite on one checkpoint")
    _evaluate_options(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    reproduce = command("reproduce", "undefended vs CQ vs TQ, all threat models")
    reproduce.add_argument(
        "--checkpoints",
        type=Path,
        default=Path("checkpoints"),
        help="folder holding the <dataset>-* checkpoint folders",
    )
    reproduce.add_argument(
        "--eval-dir",
        type=Path,
        default=eval_set_path("mnist").parent,
        help="folder holding the evaluation subsets",
    )
    reproduce.add_argument("--datasets", default="mnist,cifar10", help="comma-separated")
    reproduce.add_argument(
        "--attacks", help="comma-separated (default: the reproduction set, robustness/presets.py)"
    )
    reproduce.add_argument(
        "--out", type=Path, default=Path("docs/results"), help="folder the reports go to"
    )
    common_options(reproduce)
    reproduce.set_defaults(handler=_reproduce)

    merge = command(
        "merge",
        "replace a report's rows for the attacks a later run of the same model, "
        "evaluation set and seed ran (no parts: derive the headline and flags again)",
    )
    merge.add_argument("base", type=Path, help="the report JSON to start from")
    merge.add_argument("parts", nargs="*", type=Path, help="later report JSONs; later wins")
    merge.add_argument(
        "--out", required=True, type=Path, help="merged report JSON (.md and .png beside it)"
    )
    merge.set_defaults(handler=_merge)

    render = command("render", "rewrite the Markdown and PNG of JSON reports")
    render.add_argument("reports", nargs="+", type=Path, help="report JSON files")
    render.add_argument("--summary", metavar="DATASET", help="also write summary-DATASET.md/png")
    render.add_argument(
        "--checkpoints",
        type=Path,
        metavar="DIR",
        help="with --summary, lead it with the verdict table: each model's training and its "
        "cost from DIR/<model>/manifest.json, whose weights must be the ones the report "
        "attacked (default: no verdict table)",
    )
    render.add_argument(
        "--html",
        action="store_true",
        help="also write a self-contained HTML report (charts, flags, examples) per JSON",
    )
    render.set_defaults(handler=_render)

    listing = command("list", "the registered attacks and their parameters")
    listing.set_defaults(handler=_list)
    for each in (evaluate, reproduce, merge, render, listing):
        each.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def _evaluate_options(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file with any of these options (underscores for dashes, plus [params.ATTACK] "
        "and [limits] tables); flags given here win over it (see docs/robustness.md)",
    )
    evaluate.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint folder to attack (manifest.json and weights); required, here or in "
        "the config file",
    )
    evaluate.add_argument(
        "--surrogate",
        type=Path,
        help="undefended checkpoint of the same input shape and classes for the transfer "
        "threat model (default: the folder <dataset>-undefended beside the checkpoint, when "
        "it exists)",
    )
    evaluate.add_argument(
        "--eval-set",
        type=Path,
        help="labelled images: an .npz, or a folder with one sub-folder per class named as "
        "the model's classes, fitted to its input (default: the checkpoint's own "
        "eval-set.npz, else data/eval/<dataset>-test-first1000.npz)",
    )
    evaluate.add_argument(
        "--preset",
        choices=tuple(ATTACK_SETS),
        help="a named attack set with its budgets and threat models: 'standard' is "
        "AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square; L-inf and L2)",
    )
    evaluate.add_argument(
        "--attacks",
        help="comma-separated attack names (default: every attack `list` shows; with "
        "--preset, the preset's attacks and these beside them)",
    )
    evaluate.add_argument(
        "--threat-models",
        help=f"comma-separated, of {','.join(THREAT_MODELS)} (default: all, or the preset's; "
        "those that do not apply to the model are listed as skipped in the report, while one "
        "named here that does not apply is refused)",
    )
    evaluate.add_argument(
        "--epsilons",
        help="L-inf radii, e.g. 0.1,0.2 or 2/255,8/255 (default: the dataset's, "
        "robustness/presets.py)",
    )
    evaluate.add_argument("--l2-epsilons", help="L2 radii, e.g. 0.5,1 (default: the dataset's)")
    evaluate.add_argument("--out", type=Path, help="folder the report files go to")
    evaluate.add_argument("--stem", help="report file name stem (default: the model's name)")
    evaluate.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="stop after this long and write a partial report (default: no limit)",
    )
    evaluate.add_argument(
        "--html",
        action="store_true",
        help="also write the report as one self-contained HTML page",
    )
    common_options(evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    if args.checkpoint is None:
        raise ValueError("no checkpoint: give --checkpoint or checkpoint in the --config file")
    target = load_subject(args.checkpoint)
    surrogate_path = args.surrogate or default_surrogate(args.checkpoint, target.dataset)
    surrogate = load_subject(surrogate_path) if surrogate_path else None
    data = _eval_data(args.eval_set, args.checkpoint, target)
    quantized = target.model.quantizer is not None
    request = evaluate_request(args, target.dataset, quantized, target.input_shape)
    # The suite's request rules, as the service's admin API applies them; threat models
    # the user did not name (all, or the preset's) are skipped where they do not apply.
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
    if args.html:
        from robustness.html import write_html

        paths.append(write_html(report, paths[0].with_suffix(".html")))
    print_summary(report, paths)
    return 0


def _eval_data(given: Path | None, checkpoint: Path, target: Subject) -> EvalSet:
    """``--eval-set`` (an .npz, or a labelled folder fitted to the model's input), else the
    checkpoint's own evaluation set, else its dataset's shipped one."""
    if given is None:
        return load_eval_set(default_eval_set(checkpoint, target.dataset))
    if given.is_dir():
        class_names = read_manifest(checkpoint).class_names
        return folder_as_eval_set(given, target.input_shape, class_names)
    return load_eval_set(given)


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
    from robustness.verdict import read_manifests

    reports = []
    for path in args.reports:
        report = _read_report(path)
        for written in write_report(report, path.parent, path.stem)[1:]:
            print(f"wrote {written}")
        if args.html:
            print(f"wrote {write_html(report, path.with_suffix('.html'))}")
        reports.append(report)
    if args.checkpoints is not None and not args.summary:
        raise ValueError("--checkpoints needs --summary")
    if args.summary:
        manifests = None if args.checkpoints is None else read_manifests(reports, args.checkpoints)
        written_files = write_summary(reports, args.reports[0].parent, args.summary, manifests)
        for written in written_files:
            print(f"wrote {written}")
    return 0


def _list(args: argparse.Namespace) -> int:
    print(f"{'attack':10} {'norm':4} {'access':9} {'kind':8} parameters (defaults)")
    for name, attack in ATTACKS.items():
        kind = "minimal" if attack.minimal else "bounded"
        params = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(attack).items()) or "-"
        print(f"{name:10} {attack.norm:4} {attack.access:9} {kind:8} {params}")
    return 0
