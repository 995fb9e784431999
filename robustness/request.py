"""A suite request: what to run, validated before anything runs.

Plain values only (names, numbers, parameter overrides), so a job runner can take one
from JSON, store it beside the job and show it back. This module owns the suite's request
rules (known names and no repeats, radius ranges, default radii, which threat model applies
to which model); the command line and the service's admin API both call them, and the
service adds only its operator's limits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.radii import parse_fraction
from robustness.attacks import ATTACKS, Attack, get_attack
from robustness.presets import preset
from robustness.threats import THREAT_MODELS, applies

NO_QUANTIZER = "no quantizer: BPDA equals naive white-box"


@dataclass(frozen=True)
class SubjectFacts:
    """What the request rules need to know of the model a request is for."""

    dataset: str
    input_shape: tuple[int, ...]  # (C, H, W); empty when unknown
    quantized: bool
    surrogate_problem: str | None = None  # why transfer cannot run; None when it can

    @property
    def l2_ceiling(self) -> float:
        """The largest L2 distance between two images in [0, 1]^(C*H*W)."""
        return math.sqrt(math.prod(self.input_shape))


def inapplicable(threat_model: str, facts: SubjectFacts) -> str | None:
    """Why ``threat_model`` cannot run against this model, or None when it can."""
    if threat_model == "transfer":
        return facts.surrogate_problem
    if threat_model == "bpda" and not facts.quantized:
        return NO_QUANTIZER
    return None


def surrogate_problem(
    target_sha256: str,
    target_dataset: str,
    surrogate_sha256: str | None,
    surrogate_dataset: str,
    *,
    same_quantizer: bool = True,
    target_io: tuple[tuple[int, ...], int] | None = None,
    surrogate_io: tuple[tuple[int, ...], int] | None = None,
) -> str | None:
    """Why a surrogate cannot serve transfer attacks on the target, or None when it can.

    The same weights behind a different quantizer (an exported program imported once
    undefended and once defended) are a surrogate; ``target_io``/``surrogate_io`` are
    ((C, H, W), classes) when known, and must agree.
    """
    if surrogate_sha256 is None:
        return "no surrogate (undefended checkpoint of the same dataset) given"
    if surrogate_sha256 == target_sha256 and same_quantizer:
        return "the model is its own surrogate: transfer equals naive white-box"
    if surrogate_dataset != target_dataset:
        return f"surrogate is a {surrogate_dataset} model, target is {target_dataset}"
    if target_io is not None and surrogate_io is not None and target_io != surrogate_io:
        (shape, classes), (own_shape, own_classes) = surrogate_io, target_io
        return (
            f"surrogate maps {'x'.join(map(str, shape))} images to {classes} classes, the "
            f"target {'x'.join(map(str, own_shape))} images to {own_classes}"
        )
    return None


def applicable_threat_models(facts: SubjectFacts) -> tuple[str, ...]:
    return tuple(t for t in THREAT_MODELS if inapplicable(t, facts) is None)


def default_radii(
    dataset: str, attacks: tuple[str, ...], input_shape: tuple[int, ...] = ()
) -> tuple[tuple[float, ...], ...]:
    """The dataset's (L-inf, L2) radii (a dataset without a preset gets the generic radii
    for its input shape); L2 only when an L2 attack is requested."""
    chosen = preset(dataset, input_shape or None)
    wants_l2 = any(ATTACKS[a].norm == "l2" for a in attacks if a in ATTACKS)
    return chosen.epsilons, chosen.l2_epsilons if wants_l2 else ()


@dataclass(frozen=True)
class SuiteRequest:
    """``epsilons`` are L-inf radii, ``l2_epsilons`` L2 radii, both on [0, 1] pixels; each
    may be given as a number or a string such as "8/255" (``parse_radius``).

    ``sample_limits`` caps the samples of an expensive attack (the first k of the set);
    ``sanity_epsilon`` adds a BIM run at a radius where any working attack reaches ~0%
    accuracy, under each white-box threat model, on ``sanity_samples`` images (None: skip).
    """

    attacks: tuple[str, ...] = tuple(ATTACKS)
    threat_models: tuple[str, ...] = THREAT_MODELS
    epsilons: tuple[float, ...] = (0.1, 0.2, 0.3)
    l2_epsilons: tuple[float, ...] = ()
    samples: int = 1000
    batch_size: int = 100
    seed: int = 0
    attack_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sample_limits: Mapping[str, int] = field(default_factory=dict)
    sanity_epsilon: float | None = 1.0
    sanity_samples: int = 200
    bpda_backward: str = "identity"

    def __post_init__(self) -> None:
        # Radii as people write them ("8/255", "0.3"), however the request was built.
        for name in ("epsilons", "l2_epsilons"):
            object.__setattr__(self, name, parse_radii(getattr(self, name), name))
        if isinstance(self.sanity_epsilon, str):
            parsed = parse_radius(self.sanity_epsilon, "sanity_epsilon")
            object.__setattr__(self, "sanity_epsilon", parsed)

    def validate(self, facts: SubjectFacts | None = None, *, skip_inapplicable=False) -> None:
        """Raise ValueError naming the first thing wrong; attacks are resolved to check
        their parameter overrides too. With ``facts`` about the model, also the L2 radii's
        ceiling and that every requested threat model applies to it (unless
        ``skip_inapplicable``: the runner then lists those as skipped in the report)."""
        self._check_names()
        self._check_radii()
        if self.sanity_epsilon is not None and not 0 < self.sanity_epsilon <= 1:
            raise ValueError("sanity_epsilon must lie in (0, 1]")
        for name, value in (("samples", self.samples), ("batch_size", self.batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, limit in self.sample_limits.items():
            get_attack(name)
            if not isinstance(limit, int) or limit < 1:
                raise ValueError(f"sample limit for {name} must be a positive integer")
        if self.bpda_backward not in ("identity", "soft"):
            raise ValueError("bpda_backward must be 'identity' or 'soft'")
        if facts is not None:
            self._check_subject(facts, skip_inapplicable)
        self.resolved_attacks()

    def _check_names(self) -> None:
        if not self.attacks:
            raise ValueError("no attacks requested")
        for name in self.attacks:
            get_attack(name[:64])
        if len(set(self.attacks)) != len(self.attacks):
            raise ValueError("an attack is named twice")
        if not self.threat_models:
            raise ValueError("no threat models requested")
        for name in self.threat_models:
            if name not in THREAT_MODELS:
                raise ValueError(
                    f"unknown threat model {name[:64]!r}; valid: {', '.join(THREAT_MODELS)}"
                )
        if len(set(self.threat_models)) != len(self.threat_models):
            raise ValueError("a threat model is named twice")
        if not any(applies(t, ATTACKS[a]) for a in self.attacks for t in self.threat_models):
            raise ValueError("none of the requested attacks runs under the requested threat models")

    def _check_radii(self) -> None:
        for name, values in (("epsilons", self.epsilons), ("l2_epsilons", self.l2_epsilons)):
            for eps in values:
                if not (isinstance(eps, int | float) and math.isfinite(eps) and eps > 0):
                    rule = (
                        "lie in (0, 1] (positive finite numbers)"
                        if name == "epsilons"
                        else "be positive finite numbers"
                    )
                    raise ValueError(f"{name} must {rule}, got {eps!r}")
        if any(eps > 1 for eps in self.epsilons):
            raise ValueError("epsilons must lie in (0, 1]: L-inf radii above 1 mean nothing")
        for name, values in (("epsilons", self.epsilons), ("l2_epsilons", self.l2_epsilons)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} repeat a radius")
        if not self.epsilons and not self.l2_epsilons:
            raise ValueError("no epsilons requested")

    def _check_subject(self, facts: SubjectFacts, skip_inapplicable: bool) -> None:
        for name in self.threat_models:
            reason = inapplicable(name, facts)
            if reason is not None and not skip_inapplicable:
                raise ValueError(f"{name} is unavailable for this model: {reason}")
        ceiling = facts.l2_ceiling
        for eps in self.l2_epsilons if facts.input_shape else ():
            if eps > ceiling:
                raise ValueError(f"l2_epsilons must lie in (0, {ceiling:g}], got {eps!r}")

    def resolved_attacks(self) -> dict[str, Attack]:
        """The requested attacks with their parameter overrides applied, in table order."""
        unknown = set(self.attack_params) - set(self.attacks)
        if unknown:
            raise ValueError(f"parameters given for attacks not requested: {sorted(unknown)}")
        resolved = {name: get_attack(name) for name in self.attacks}
        for name, overrides in self.attack_params.items():
            resolved[name] = with_params(resolved[name], overrides)
        return {name: resolved[name] for name in ATTACKS if name in resolved}

    def samples_for(self, attack: str) -> int:
        return min(self.samples, self.sample_limits.get(attack, self.samples))

    def as_dict(self) -> dict[str, Any]:
        """JSON-native: lists, not tuples, so a stored request reads back equal."""
        raw = dataclasses.asdict(self)
        for name in ("attacks", "threat_models", "epsilons", "l2_epsilons"):
            raw[name] = list(raw[name])
        raw["attack_params"] = {k: dict(v) for k, v in self.attack_params.items()}
        raw["sample_limits"] = dict(self.sample_limits)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SuiteRequest:
        """The inverse of ``as_dict``; unknown keys are refused. Radii may also be given
        as strings, "8/255" or "0.03" (``parse_radius``). Call ``validate`` after."""
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown request fields: {', '.join(sorted(unknown))}")
        values = dict(raw)
        for name in ("attacks", "threat_models"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)  # radii given as strings are parsed on construction


def parse_radius(value: Any, label: str = "radius") -> Any:
    """A radius as given: a number, or a string such as "0.3" or "8/255" (a fraction is
    parsed, never evaluated). Other values come back as they are, for ``validate`` to
    name."""
    if not isinstance(value, str):
        return value
    try:
        return parse_fraction(value)
    except ValueError:
        raise ValueError(f"{label}: not a radius: {value[:32]!r}") from None


def format_eps(eps: float | None) -> str:
    """A radius as people write it: a short decimal when it is one (0.3, 0.25), else a whole
    number of 255ths when it is one (8/255, 32/255), else six significant digits; the inverse
    of ``parse_radius`` for the radii people use. The console's ``formatEpsilon``
    (service/api/routes/console_files/js/format.js) follows the same rule."""
    if eps is None:
        return "unbounded"
    decimal = f"{eps:.6g}"
    if float(decimal) == eps:
        return decimal
    in_255ths = eps * 255
    if abs(in_255ths - round(in_255ths)) < 1e-6:
        return f"{round(in_255ths)}/255"
    return decimal


def parse_radii(values: Any, label: str = "radii") -> tuple:
    """A list of radii (numbers or strings like "8/255"), or one comma-separated string."""
    if isinstance(values, str):
        values = [part for part in (item.strip() for item in values.split(",")) if part]
    if not isinstance(values, list | tuple):
        raise ValueError(f"{label} must be a list of radii, got {type(values).__name__}")
    return tuple(parse_radius(value, label) for value in values)


def with_params(attack: Attack, overrides: Mapping[str, Any]) -> Attack:
    """A copy of ``attack`` with some parameters changed; values are coerced to the
    field's type (so "40" from a command line becomes 40) and unknown names refused."""
    fields = {f.name: f for f in dataclasses.fields(attack)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise ValueError(f"{attack.name} has no parameter {key!r}; valid: {valid}")
        changes[key] = _coerce(fields[key].type, value, f"{attack.name}.{key}")
    return dataclasses.replace(attack, **changes)


def _coerce(type_name: Any, value: Any, label: str) -> Any:
    kind = {"int": int, "float": float, "bool": bool}.get(str(type_name))
    if kind is None:
        raise ValueError(f"{label}: parameters of type {type_name} cannot be overridden")
    if kind is bool and isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{label} must be true or false, got {value!r}")
        return value.lower() in ("true", "1")
    try:
        coerced = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be {kind.__name__}, got {value!r}") from None
    if kind is int and isinstance(value, float) and value != coerced:
        raise ValueError(f"{label} must be an integer, got {value!r}")
    return coerced
