"""The options ``evaluate`` and ``reproduce`` share, and how they become a suite request."""

from __future__ import annotations

import argparse

from robustness.presets import preset
from robustness.request import SuiteRequest, parse_radii
from robustness.threats import THREAT_MODELS


def common_options(command: argparse.ArgumentParser) -> None:
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
    return parse_radii(text, "--epsilons")


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
        threat_models=tuple(
            (getattr(args, "threat_models", None) or ",".join(THREAT_MODELS)).split(",")
        ),
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
