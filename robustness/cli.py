"""Command line: ``python -m robustness {evaluate,reproduce,merge,render,list}``
(``qusec-robustness``).

``evaluate`` runs the suite on one checkpoint; ``reproduce`` runs the paper's comparison
(undefended vs CQ vs TQ) on every shipped checkpoint of each dataset with data present;
``merge`` folds a later run's rows (an attack rerun, say on more samples) into a report;
``render`` rewrites Markdown and plots from JSON reports; ``list`` shows the attack table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import torch

from models.checkpoint import CheckpointError, load_checkpoint
from models.evalset import EvalSetError, eval_set_path, load_eval_set
from robustness.attacks import ATTACKS
from robustness.merge import MergeError, merge_reports
from robustness.presets import preset
from robustness.render import format_eps, write_report
from robustness.report import fired_flags
from robustness.request import SuiteRequest
from robustness.runner import Progress, Subject, budget, run_suite
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
    evaluate.add_argument("--threat-models", default=",".join(THREAT_MODELS))
    evaluate.add_argument("--epsilons", help="L-inf radii, e.g. 0.1,0.2 or 2/255,8/255")
    evaluate.add_argument("--l2-epsilons", help="L2 radii (default: the dataset preset)")
    evaluate.add_argument("--out", type=Path, default=Path("robustness-report"))
    evaluate.add_argument("--stem", help="report file name stem (default: the model's name)")
    evaluate.add_argument("--time-budget", type=float, help="seconds; partial report after")
    _common_options(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    reproduce = sub.add_parser("reproduce", help="undefended vs CQ vs TQ, all threat models")
    reproduce.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    reproduce.add_argument("--eval-dir", type=Path, default=eval_set_path("mnist").parent)
    reproduce.add_argument("--datasets", default="mnist,cifar10")
    reproduce.add_argument("--attacks", help="comma-separated (default: the reproduction set)")
    reproduce.add_argument("--out", type=Path, default=Path("docs/results"))
    _common_options(reproduce)
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
    render.set_defaults(handler=_render)

    listing = sub.add_parser("list", help="the registered attacks and their parameters")
    listing.set_defaults(handler=_list)
    for command in (evaluate, reproduce, merge, render, listing):
        command.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def _common_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--samples", type=int, default=1000)
    command.add_argument("--batch-size", type=int, default=100)
    command.add_argument("--seed", type=int, default=0)
    command.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ATTACK.PARAM=VALUE",
        help="override an attack parameter, e.g. pgd.restarts=5 (repeatable)",
    )
    command.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="ATTACK=N",
        help="run ATTACK on the first N samples only, e.g. spsa=100 (repeatable)",
    )
    command.add_argument("--sanity-epsilon", default="1.0", help="L-inf radius, or 'none'")
    command.add_argument("--sanity-samples", type=int, default=200)
    command.add_argument("--bpda-backward", choices=("identity", "soft"), default="identity")
    command.add_argument("--threads", type=int, help="torch CPU threads")


def parse_epsilons(text: str | None) -> tuple[float, ...] | None:
    """'0.1,0.3' or '2/255,8/255' -> floats; fractions are parsed, never evaluated."""
    if text is None:
        return None
    values = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        numerator, _, denominator = item.partition("/")
        try:
            values.append(float(numerator) / float(denominator or 1))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"not a radius: {item!r}") from None
    return tuple(values)


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    overrides: dict[str, dict[str, str]] = {}
    for item in items:
        target, _, value = item.partition("=")
        attack, _, param = target.partition(".")
        if not (attack and param and value):
            raise ValueError(f"--set expects ATTACK.PARAM=VALUE, got {item!r}")
        overrides.setdefault(attack, {})[param] = value
    return overrides


def parse_limits(items: list[str]) -> dict[str, int]:
    limits = {}
    for item in items:
        attack, _, count = item.partition("=")
        if not attack or not count.isdigit():
            raise ValueError(f"--limit expects ATTACK=N, got {item!r}")
        limits[attack] = int(count)
    return limits


def request_from_args(args: argparse.Namespace, dataset: str, attacks: tuple[str, ...]):
    defaults = preset(dataset)
    sanity = None if args.sanity_epsilon.lower() == "none" else parse_epsilons(args.sanity_epsilon)
    return SuiteRequest(
        attacks=attacks,
        threat_models=tuple(getattr(args, "threat_models", ",".join(THREAT_MODELS)).split(",")),
        epsilons=parse_epsilons(getattr(args, "epsilons", None)) or defaults.epsilons,
        l2_epsilons=parse_epsilons(getattr(args, "l2_epsilons", None)) or defaults.l2_epsilons,
        samples=args.samples,
        batch_size=args.batch_size,
        seed=args.seed,
        attack_params=parse_overrides(args.set),
        sample_limits=parse_limits(args.limit),
        sanity_epsilon=sanity[0] if sanity else None,
        sanity_samples=args.sanity_samples,
        bpda_backward=args.bpda_backward,
    )


class ProgressPrinter:
    """Stderr lines for a person watching: one when a unit starts, and one at least every
    ``every`` seconds within a long unit (a query attack's unit can run for half an hour)."""

    def __init__(self, label: str = "", every: float = 60.0, clock=time.monotonic) -> None:
        self.label, self.every, self.clock = label, every, clock
        self.last_unit, self.last_time = None, clock()

    def __call__(self, progress: Progress) -> None:
        unit = (progress.attack, progress.threat_model, progress.epsilon)
        now = self.clock()
        if unit == self.last_unit and now - self.last_time < self.every:
            return
        self.last_unit, self.last_time = unit, now
        print(
            f"{self.label}[{progress.done_batches}/{progress.total_batches} batches] "
            f"{progress.attack} / {progress.threat_model} eps={format_eps(progress.epsilon)}",
            file=sys.stderr,
            flush=True,
        )


def load_subject(path: Path) -> Subject:
    return Subject.from_checkpoint(load_checkpoint(path))


def default_surrogate(checkpoint: Path, dataset: str) -> Path | None:
    candidate = checkpoint.parent / f"{dataset}-undefended"
    return candidate if (candidate / "manifest.json").is_file() else None


def _evaluate(args: argparse.Namespace) -> int:
    target = load_subject(args.checkpoint)
    surrogate_path = args.surrogate or default_surrogate(args.checkpoint, target.dataset)
    surrogate = load_subject(surrogate_path) if surrogate_path else None
    data = load_eval_set(args.eval_set or eval_set_path(target.dataset))
    request = request_from_args(args, target.dataset, tuple(args.attacks.split(",")))
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


def print_summary(report: dict, paths: list[Path]) -> None:
    print(
        f"{report['model']['name']}: status {report['status']}, "
        f"clean accuracy {100 * report['clean_accuracy']:.1f}% on {report['samples']} images"
    )
    for w in report["worst_case"]:
        print(
            f"  worst case {w['norm']:4} eps={format_eps(w['epsilon']):>7}: "
            f"{100 * w['robust_accuracy']:5.1f}%  ({w['attack']} / {w['threat_model']}, "
            f"n={w['samples']})"
        )
    for w in report.get("worst_case_8bit") or []:
        print(
            f"  8-bit grid {w['norm']:4} eps={format_eps(w['epsilon']):>7}: "
            f"{100 * w['robust_accuracy']:5.1f}%  ({w['attack']} / {w['threat_model']}, "
            f"n={w['samples']})"
        )
    print(f"  masking flags fired: {', '.join(fired_flags(report)) or 'none'}")
    for path in paths:
        print(f"  wrote {path}")


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
    from robustness.summary import write_summary

    reports = []
    for path in args.reports:
        report = _read_report(path)
        for written in write_report(report, path.parent, path.stem)[1:]:
            print(f"wrote {written}")
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
