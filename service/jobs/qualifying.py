"""Which robustness checks may set a deployed model's robustness figures.

The gauges, the dashboard's panels and the alerts show one number per model and radius,
so that number must come from a check that could have found the model's weaknesses. A
check qualifies when it meets the bar (``QualifyingBar``), fixed for each job when it is
submitted from the operator's settings and the model:

1. it ran on the model's bundled evaluation set, not an uploaded one;
2. every threat model that applies to the model ran (``transfer`` when there is an
   undefended surrogate, ``naive``, ``bpda`` when there is a quantizer, ``gradient_free``),
   each with at least one complete row at every required radius;
3. each of the strong attacks (``QUSEC_ROBUSTNESS_QUALIFYING_ATTACKS``, default PGD and
   APGD-CE, which under BPDA are the adaptive white-box attacks) ran under every one of
   those threat models it can run under, at every required radius;
4. the required radii are the dataset's L-inf radii (``robustness/presets.py``; the generic
   preset's for the model's input shape when the dataset has none) unless
   ``QUSEC_ROBUSTNESS_QUALIFYING_EPSILONS`` names others;
5. every row of those attacks covers at least the required samples: the whole bundled
   set unless ``QUSEC_ROBUSTNESS_QUALIFYING_SAMPLES`` says fewer;
6. the check finished ``done``, with no unit skipped and no row incomplete.

Any other check is stored and shown as what it is: ``qualifying: false`` with the reasons,
in the job and in its report. ``plan_reasons`` judges a request when it is submitted (so
the operator knows at once); ``judge`` judges the finished check on its rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from robustness.attacks import ATTACKS
from robustness.presets import preset
from robustness.request import format_eps
from robustness.threats import applies


@dataclass(frozen=True)
class QualifyingBar:
    threat_models: tuple[str, ...]  # every threat model that applies to the model
    attacks: tuple[str, ...]  # the strong attacks, those of them that can run on it
    epsilons: tuple[float, ...]  # L-inf radii every required row must cover
    samples: int  # rows of the strong attacks must cover at least this many samples

    def as_dict(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> QualifyingBar:
        return cls(
            threat_models=tuple(raw["threat_models"]),
            attacks=tuple(raw["attacks"]),
            epsilons=tuple(raw["epsilons"]),
            samples=int(raw["samples"]),
        )

    def units(self) -> list[tuple[str, str]]:
        """(attack, threat model) pairs the bar requires rows of."""
        return [
            (attack, threat_model)
            for attack in self.attacks
            for threat_model in self.threat_models
            if applies(threat_model, ATTACKS[attack])
        ]


def bar_for(
    dataset: str,
    threat_models: tuple[str, ...],
    eval_set_size: int,
    attacks: list[str],
    epsilons: list[float] | None,
    samples: int | None,
    input_shape: tuple[int, ...] = (),
) -> QualifyingBar:
    """The bar for a model of ``dataset`` (input ``input_shape``, for a dataset without a
    preset of its own) to which ``threat_models`` apply."""
    if epsilons is None:
        try:
            epsilons = list(preset(dataset, input_shape or None).epsilons)
        except ValueError:
            epsilons = []
    runnable = [a for a in attacks if any(applies(t, ATTACKS[a]) for t in threat_models)]
    return QualifyingBar(
        threat_models=tuple(threat_models),
        attacks=tuple(runnable),
        epsilons=tuple(epsilons),
        samples=samples if samples is not None else eval_set_size,
    )


def plan_reasons(bar: QualifyingBar, request: dict[str, Any], uploaded: bool) -> list[str]:
    """Why a check of this request cannot qualify, judged before it runs (empty: it can)."""
    reasons = []
    if uploaded:
        reasons.append("it runs on an uploaded sample set, not the model's evaluation set")
    missing = [t for t in bar.threat_models if t not in request["threat_models"]]
    if missing:
        reasons.append(f"threat models that apply to the model are missing: {', '.join(missing)}")
    absent = [a for a in bar.attacks if a not in request["attacks"]]
    if absent:
        reasons.append(f"strong attacks are missing: {', '.join(absent)}")
    for threat_model in request["threat_models"]:
        if not any(applies(threat_model, ATTACKS[a]) for a in request["attacks"]):
            reasons.append(f"no requested attack runs under {threat_model}")
    radii = [e for e in bar.epsilons if not _has_radius(request["epsilons"], e)]
    if radii:
        reasons.append(f"L-inf radii are missing: {', '.join(format_eps(e) for e in radii)}")
    samples = request["samples"]
    if samples < bar.samples:
        reasons.append(f"it runs on {samples} samples; the bar is {bar.samples}")
    for attack in (a for a in bar.attacks if a in request["attacks"]):
        limit = request.get("sample_limits", {}).get(attack, samples)
        if limit < bar.samples <= samples:
            reasons.append(f"{attack} is limited to {limit} samples; the bar is {bar.samples}")
    return reasons


def judge(
    bar: QualifyingBar, planned: list[str], status: str, report: dict[str, Any] | None
) -> dict[str, Any]:
    """The finished check against the bar: ``{"qualifying", "reasons", "bar"}``."""
    reasons = list(planned)
    if status != "done" or report is None:
        reasons.append(f"the check ended {status}, not done")
    elif not planned:
        reasons += _result_reasons(bar, report)
    return {"qualifying": not reasons, "reasons": reasons, "bar": bar.as_dict()}


def _result_reasons(bar: QualifyingBar, report: dict[str, Any]) -> list[str]:
    reasons = []
    if report.get("skipped"):
        reasons.append(f"{len(report['skipped'])} planned units were skipped")
    rows = [r for r in report["results"] if not r["sanity"] and r["epsilon"] is not None]
    if any(not row["complete"] for row in rows):
        reasons.append("some rows are incomplete")
    # Without radii of its own (a dataset with no preset), the bar holds at the check's.
    for epsilon in bar.epsilons or tuple(report["request"]["epsilons"]):
        label = format_eps(epsilon)
        for threat_model in bar.threat_models:
            if not _rows(rows, threat_model, epsilon):
                reasons.append(f"no complete row under {threat_model} at {label}")
        for attack, threat_model in bar.units():
            found = _rows(rows, threat_model, epsilon, attack)
            if not found:
                reasons.append(f"no {attack} row under {threat_model} at {label}")
            elif min(row["samples"] for row in found) < bar.samples:
                reasons.append(
                    f"{attack} under {threat_model} at {label} covers fewer than "
                    f"{bar.samples} samples"
                )
    return reasons


def _rows(rows: list[dict], threat_model: str, epsilon: float, attack: str | None = None):
    return [
        row
        for row in rows
        if row["threat_model"] == threat_model
        and row["norm"] == "linf"
        and row["complete"]
        and math.isclose(row["epsilon"], epsilon, rel_tol=1e-6)
        and (attack is None or row["attack"] == attack)
    ]


def _has_radius(radii: list[float], epsilon: float) -> bool:
    return any(math.isclose(radius, epsilon, rel_tol=1e-6) for radius in radii)


def qualified(
    qualification: dict[str, Any] | None, status: str, report: dict[str, Any] | None
) -> dict[str, Any] | None:
    """``report`` with its ``qualification`` judged against the bar its job was submitted
    with (a job from before the bar existed has none, and never qualifies)."""
    if report is None or qualification is None:
        return report
    bar = QualifyingBar.from_dict(qualification["bar"])
    return {**report, "qualification": judge(bar, qualification["reasons"], status, report)}
