"""A robustness-check request: its JSON shape, the operator's limits, and the job it becomes.

The suite's own rules (known names, no repeats, radius ranges and defaults, which threat
model applies to the served model) belong to ``robustness.request``, which the command
line calls too; this module adds only the operator's limits (samples, radii per request,
time budget). What passes becomes a ``SuiteRequest`` stored with the job as JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt
from pydantic import ValidationError as PydanticValidationError

from robustness.attacks import ATTACKS
from robustness.request import (
    SubjectFacts,
    SuiteRequest,
    applicable_threat_models,
    default_radii,
    parse_radii,
    parse_radius,
)
from robustness.threats import THREAT_MODELS
from service.errors import InvalidJobRequest
from service.jobs.cost import estimate_cost
from service.jobs.qualifying import bar_for, plan_reasons
from service.jobs.spec import JobSpec
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
# A radius as a number or as people write one: "8/255", "0.3" (robustness.request.parse_radius).
Radius = StrictFloat | StrictInt | Annotated[str, Field(max_length=32)]
_RADII_DOC = '; numbers or fractions such as "8/255", echoed as given (radii_as_given)'


class CheckRequest(BaseModel):
    """The JSON body (or the multipart ``request`` field) of ``POST /robustness-check``."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=128, description="loaded model; default model")
    attacks: list[str] = Field(list(DEFAULT_ATTACKS), min_length=1, max_length=len(ATTACKS))
    threat_models: list[str] | None = Field(None, min_length=1, max_length=len(THREAT_MODELS))
    epsilons: list[Radius] | None = Field(
        None,
        max_length=64,
        description="L-inf radii; default: the dataset's, or the generic preset's" + _RADII_DOC,
    )
    l2_epsilons: list[Radius] | None = Field(
        None,
        max_length=64,
        description="L2 radii; default: the dataset's, or the generic preset's" + _RADII_DOC,
    )
    samples: int | None = Field(None, ge=1, description="first N of the set; default: all")
    batch_size: int = Field(100, ge=1, le=1000)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    attack_params: dict[str, dict[str, ParamValue]] = Field(default_factory=dict)
    sample_limits: dict[str, int] = Field(default_factory=dict)
    sanity_epsilon: Radius | None = Field(1.0, description="in (0, 1]; null skips it")
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

    @property
    def facts(self) -> SubjectFacts:
        """What the suite's request rules need to know of this model."""
        problem = None
        if self.surrogate is None:
            problem = self.surrogate_problem or "no undefended surrogate"
        return SubjectFacts(self.dataset, self.input_shape, self.quantized, problem)


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
    """Check ``body`` against the suite's rules for this model, then the operator's limits."""
    facts = target.facts
    attacks = tuple(body.attacks)
    threat_models = (
        applicable_threat_models(facts) if body.threat_models is None else body.threat_models
    )
    linf, l2 = _radii(body, facts, attacks)
    samples = _samples(body.samples, available, settings.robustness_max_samples)
    request = SuiteRequest(
        attacks=attacks,
        threat_models=tuple(threat_models),
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
        sanity_epsilon=_parsed(body.sanity_epsilon, "sanity_epsilon"),
        sanity_samples=body.sanity_samples,
        bpda_backward=body.bpda_backward,
    )
    try:
        request.validate(facts)  # the suite's own messages name the offending value
    except ValueError as exc:
        _refuse(str(exc))
    for name, values in (("epsilons", linf), ("l2_epsilons", l2)):
        if len(values) > settings.robustness_max_epsilons:
            _refuse(f"at most {settings.robustness_max_epsilons} {name} per request")
    budget = body.time_budget_seconds or settings.robustness_time_budget_seconds
    if budget > settings.robustness_time_budget_seconds:
        _refuse(f"time_budget_seconds is at most {settings.robustness_time_budget_seconds:g}")
    cost = estimate_cost(request, target.quantized)
    if cost > settings.robustness_max_cost:
        _refuse(
            f"the check would take up to {cost:,} model evaluations (attacks x threat models x "
            f"radii x samples x iterations); the limit is {settings.robustness_max_cost:,} "
            "(QUSEC_ROBUSTNESS_MAX_COST)"
        )
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
        cost=cost,
        radii_as_given=radii_as_given(body),
        qualification=_qualification(request, target, upload, settings),
    )


def _qualification(
    request: SuiteRequest, target: Target, upload: bool, settings: ServiceSettings
) -> dict[str, Any]:
    """The bar this check is held to (``service.jobs.qualifying``) and why, judged from its
    request alone, it cannot meet it."""
    bar = bar_for(
        target.dataset,
        applicable_threat_models(target.facts),
        target.eval_set_size,
        settings.robustness_qualifying_attacks,
        settings.robustness_qualifying_epsilons,
        settings.robustness_qualifying_samples,
        target.input_shape,
    )
    return {"bar": bar.as_dict(), "reasons": plan_reasons(bar, request.as_dict(), upload)}


def _refuse(message: str) -> None:
    raise InvalidJobRequest(message, message=message)


def _radii(
    body: CheckRequest, facts: SubjectFacts, attacks: tuple[str, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The requested radii (numbers or fractions such as "8/255"), the dataset's where none
    are given."""
    given_linf = _parsed(body.epsilons, "epsilons")
    given_l2 = _parsed(body.l2_epsilons, "l2_epsilons")
    if given_linf is not None and given_l2 is not None:
        return given_linf, given_l2
    try:
        linf, l2 = default_radii(facts.dataset, attacks, facts.input_shape)
    except ValueError as exc:
        _refuse(str(exc))
    return given_linf if given_linf is not None else linf, given_l2 if given_l2 is not None else l2


def _parsed(value: Any, name: str) -> Any:
    """Radii as the suite's own parser reads them (the command line's too); a refusal
    names the field and the value."""
    if value is None:
        return None
    try:
        return parse_radii(value, name) if isinstance(value, list) else parse_radius(value, name)
    except ValueError as exc:
        _refuse(str(exc))


def radii_as_given(body: CheckRequest) -> dict[str, Any] | None:
    """The radii the request named, exactly as written, to be echoed beside the numbers."""
    given = {
        name: getattr(body, name)
        for name in ("epsilons", "l2_epsilons", "sanity_epsilon")
        if name in body.model_fields_set and getattr(body, name) is not None
    }
    return given or None


def _samples(requested: int | None, available: int, limit: int) -> int:
    if requested is not None and requested > limit:
        _refuse(f"at most {limit} samples per job (QUSEC_ROBUSTNESS_MAX_SAMPLES)")
    if requested is not None and requested > available:
        _refuse(f"the sample set holds only {available} images")
    return requested or min(available, limit)
