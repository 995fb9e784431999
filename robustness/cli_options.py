"""The options ``evaluate`` and ``reproduce`` share, and how they become a suite request."""

from __future__ import annotations

import argparse

from robustness.attacks import ATTACKS
from robustness.cli_config import DEFAULTS
from robustness.presets import attack_set, preset
from robustness.request import SuiteRequest, parse_radii
from robustness.threats import THREAT_MODELS


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's paragraphs; every option's help states its default, except
    where there is none to state (flags, and options whose default is worked out)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is None and not action.required:
            default = DEFAULTS.get(action.dest)  # filled in after parsing
        unstated = default is None or default is False or default == [] or default == "==SUPPRESS=="
        if "(default" in text or unstated or not action.option_strings:
            return text
        return f"{text} (default: {default})"


def common_options(command: argparse.ArgumentParser) -> None:
    # Defaults are None here and filled in by robustness.cli_config.apply_config, so a
    # config file can set what the command line leaves unset; the help shows DEFAULTS.
    command.add_argument("--samples", type=int, help="evaluate the first N images of the set")
    command.add_argument("--batch-size", type=int, help="images crafted per attack call")
    command.add_argument("--seed", type=int, help="base seed; each unit seeds itself from it")
    command.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ATTACK.PARAM=VALUE",
        help="override an attack parameter, e.g. pgd.restarts=5 (repeatable; "
        "`python -m robustness list` shows the parameters)",
    )
    command.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="ATTACK=N",
        help="run ATTACK on the first N samples only, e.g. spsa=100 (repeatable)",
    )
    command.add_argument(
        "--sanity-epsilon",
        help="L-inf radius of the BIM sanity run, where accuracy should reach ~0, or 'none'",
    )
    command.add_argument("--sanity-samples", type=int, help="images the sanity run uses")
    command.add_argument(
        "--bpda-backward",
        choices=("identity", "soft"),
        help="BPDA's backward pass through the quantizer: straight through, or the soft "
        "staircase's derivative",
    )
    command.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's own choice)"
    )


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


def evaluate_request(
    args: argparse.Namespace,
    dataset: str,
    quantized: bool,
    input_shape: tuple[int, ...] | None = None,
) -> SuiteRequest:
    """``evaluate``'s request: a preset's attacks, budgets and threat models (``--preset``),
    the attacks named beside them, and the file's and the flags' parameters on top."""
    named = attack_set(args.preset) if args.preset else None
    extra = tuple(args.attacks.split(",")) if args.attacks else ()
    if named is None:
        return request_from_args(args, dataset, extra or tuple(ATTACKS), input_shape=input_shape)
    attacks = named.attacks + tuple(a for a in extra if a not in named.attacks)
    threat_models = args.threat_models or ",".join(named.threat_models_for(quantized))
    resolved = argparse.Namespace(**{**vars(args), "threat_models": threat_models})
    return request_from_args(
        resolved, dataset, attacks, base_params=named.params, input_shape=input_shape
    )


def request_from_args(
    args: argparse.Namespace,
    dataset: str,
    attacks: tuple[str, ...],
    base_params: dict | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> SuiteRequest:
    """Radii not given are the dataset's preset, or the generic one for ``input_shape``."""
    defaults = preset(dataset, input_shape)
    sanity = None if args.sanity_epsilon.lower() == "none" else parse_epsilons(args.sanity_epsilon)
    params: dict[str, dict] = {}
    # The preset's budgets, then the config file's, then --set: later wins.
    sources = (base_params or {}, getattr(args, "config_params", {}), parse_overrides(args.set))
    for source in sources:
        for attack, values in source.items():
            params[attack] = {**params.get(attack, {}), **values}
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
        attack_params=params,
        sample_limits={**getattr(args, "config_limits", {}), **parse_limits(args.limit)},
        sanity_epsilon=sanity[0] if sanity else None,
        sanity_samples=args.sanity_samples,
        bpda_backward=args.bpda_backward,
    )
