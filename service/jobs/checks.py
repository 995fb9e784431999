"""A robustness-check request: its JSON shape, its limits, and the job it becomes.

The request is checked here, before it is queued, against the registered attacks and
threat models, the served model (its dataset's radii, whether it has a quantizer, whether
an undefended surrogate exists for transfer) and the operator's limits; what passes
becomes a ``robustness.request.SuiteRequest`` stored with the job as JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt
from pydantic import ValidationError as PydanticValidationError

from robustness.attacks import ATTACKS
from robustness.presets import PRESETS
from robustness.request import SuiteRequest
from robustness.threats import THREAT_MODELS, applies
from service.errors import InvalidJobRequest
from service.settings import ServiceSettings

# Cheap bounded L-inf attacks, one gradient-free floor: minutes on 1,000 MNIST images.
DEFAULT_ATTACKS = ("noise", "fgsm", "bim", "pgd")
# The costly attacks run on the first N samples unless the request sets their limit, so a
# check that names them still fits the default time budget on a 2-core CPU: per 1,000 MNIST
# images and radius, one loaded thread, APGD-T and the level-space attacks take about
# 1,000-1,100 s and Square about 3,500 s (benchmarks/bench_attacks.py, docs/results.md).
DEFAULT_SAMPLE_LIMITS = {
    "level": 200,
    "level_8bit": 200,
    "apgd_t": 200,
    "apgd_t_l2": 200,
    "square": 50,
    "square_l2": 50,
}
ParamValue = StrictBool | StrictInt | StrictFloat


class CheckRequest(BaseModel):
    """The JSON body (or the multipart ``request`` field) of ``POST /robustness-check``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=128, description="loaded model; default model")
    attacks: list[str] = Field(list(DEFAULT_ATTACKS), min_length=1, max_length=len(ATTACKS))
    threat_models: list[str] | None = Field(None, min_length=1, max_length=len(THREAT_MODELS))
    epsilons: list[float] | None = Field(None, description="L-inf radii; default: dataset's")
    l2_epsilons: list[float] | None = Field(None, description="L2 radii; default: dataset's")
    samples: int | None = Field(None, ge=1, description="first N of the set; default: all")
    batch_size: int = Field(100, ge=1, le=1000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    attack_params: dict[str, dict[str, ParamValue]] = Field(default_factory=dict)
    sample_limits: dict[str, int] = Field(default_factory=dict)
    sanity_epsilon: float | None = Field(1.0, gt=0, le=1)
    sanity_samples: int = Field(200, ge=1)
    bpda_backward: Literal["identity", "soft"] = "identity"
    time_budget_seconds: float | None = Field(None, gt=0)


@dataclass(frozen=True)
class Target:
    """A served model as the job system sees it, with what is available to attack it."""

    name: str
    dataset: str
    checkpoint: Path
    weights_sha256: str
    input_shape: tuple[int, int, int]
    classes: int
    quantized: bool
    surrogate: Path | None
    surrogate_problem: str | None  # why transfer is unavailable, when it is
    eval_set: Path | None
    eval_set_size: int
    eval_set_problem: str | None  # why the bundled set is unavailable, when it is


@dataclass(frozen=True)
class JobSpec:
    """What a job runs: stored as JSON with the job and read back by the job process."""

    model: str
    checkpoint: str
    weights_sha256: str
    input_shape: tuple[int, int, int]
    classes: int
    surrogate: str | None
    eval_set: str | None  # None: the sample set uploaded with the job
    request: dict
    time_budget_seconds: float

    def as_dict(self) -> dict:
        return {**asdict(self), "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, raw: dict) -> JobSpec:
        return cls(**{**raw, "input_shape": tuple(raw["input_shape"])})


def parse_request(raw: bytes | str) -> CheckRequest:
    try:
        return CheckRequest.model_validate_json(raw or b"{}")
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise InvalidJobRequest(
            str(exc.errors()[:3]), message=f"invalid {where}: {first['msg']}"
        ) from None


def plan_job(
    body: CheckRequest, target: Target, available: int, upload: bool, settings: ServiceSettings
) -> JobSpec:
    """Check ``body`` against the model, the samples at hand and the limits."""
    attacks = _attacks(body.attacks)
    threat_models = _threat_models(body.threat_models, target)
    if not any(applies(t, ATTACKS[a]) for a in attacks for t in threat_models):
        _refuse("none of the requested attacks runs under the requested threat models")
    linf, l2 = _radii(body, target, attacks, settings.robustness_max_epsilons)
    samples = _samples(body.samples, available, settings.robustness_max_samples)
    budget = body.time_budget_seconds or settings.robustness_time_budget_seconds
    if budget > settings.robustness_time_budget_seconds:
        _refuse(f"time_budget_seconds is at most {settings.robustness_time_budget_seconds:g}")
    request = SuiteRequest(
        attacks=attacks,
        threat_models=threat_models,
        epsilons=linf,
        l2_epsilons=l2,
        samples=samples,
        batch_size=body.batch_size,
        seed=body.seed,
        attack_params=body.attack_params,
        sample_limits={
            **{a: n for a, n in DEFAULT_SAMPLE_LIMITS.items() if a in attacks},
            **body.sample_limits,
        },
        sanity_epsilon=body.sanity_epsilon,
        sanity_samples=body.sanity_samples,
        bpda_backward=body.bpda_backward,
    )
    try:
        request.validate()
    except ValueError as exc:  # the suite's own messages name the offending value
        _refuse(str(exc))
    return JobSpec(
        model=target.name,
        checkpoint=str(target.checkpoint),
        weights_sha256=target.weights_sha256,
        input_shape=target.input_shape,
        classes=target.classes,
        surrogate=str(target.surrogate) if "transfer" in threat_models else None,
        eval_set=None if upload else str(target.eval_set),
        request=request.as_dict(),
        time_budget_seconds=budget,
    )


def _refuse(message: str) -> None:
    raise InvalidJobRequest(message, message=message)


def _attacks(names: list[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in ATTACKS]
    if unknown:
        _refuse(f"unknown attack {unknown[0][:64]!r}; valid attacks: {', '.join(ATTACKS)}")
    if len(set(names)) != len(names):
        _refuse("an attack is named twice")
    return tuple(names)


def _threat_models(names: list[str] | None, target: Target) -> tuple[str, ...]:
    if names is None:  # every threat model this model and its surroundings allow
        return tuple(
            t
            for t in THREAT_MODELS
            if not (t == "transfer" and target.surrogate is None)
            and not (t == "bpda" and not target.quantized)
        )
    unknown = [name for name in names if name not in THREAT_MODELS]
    if unknown:
        _refuse(f"unknown threat model {unknown[0][:64]!r}; valid: {', '.join(THREAT_MODELS)}")
    if len(set(names)) != len(names):
        _refuse("a threat model is named twice")
    if "transfer" in names and target.surrogate is None:
        _refuse(f"transfer is unavailable for {target.name}: {target.surrogate_problem}")
    return tuple(names)


def _radii(
    body: CheckRequest, target: Target, attacks: tuple[str, ...], max_count: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    preset = PRESETS.get(target.dataset)
    wants_l2 = any(ATTACKS[a].norm == "l2" for a in attacks)
    if preset is None and (body.epsilons is None or (wants_l2 and body.l2_epsilons is None)):
        _refuse(f"no default radii for dataset {target.dataset!r}; give epsilons")
    linf = preset.epsilons if body.epsilons is None else body.epsilons
    l2 = body.l2_epsilons
    if l2 is None:
        l2 = preset.l2_epsilons if wants_l2 else ()
    # The largest L2 distance between two images in [0, 1]^(C*H*W).
    l2_ceiling = math.sqrt(math.prod(target.input_shape))
    for name, values, ceiling in (("epsilons", linf, 1.0), ("l2_epsilons", l2, l2_ceiling)):
        if len(values) > max_count:
            _refuse(f"at most {max_count} {name} per request")
        for eps in values:
            if not (math.isfinite(eps) and 0 < eps <= ceiling):
                _refuse(f"{name} must lie in (0, {ceiling:g}], got {eps!r}")
        if len(set(values)) != len(values):
            _refuse(f"{name} repeat a radius")
    if not linf and not l2:
        _refuse("no radii requested")
    return tuple(linf), tuple(l2)


def _samples(requested: int | None, available: int, limit: int) -> int:
    if requested is not None and requested > limit:
        _refuse(f"at most {limit} samples per job (QUSEC_ROBUSTNESS_MAX_SAMPLES)")
    if requested is not None and requested > available:
        _refuse(f"the sample set holds only {available} images")
    return requested or min(available, limit)
