"""The robustness plan: which (attack, threat model, radius) units a check runs.

The one owner of the plan's rules (which pairs apply, which are skipped and why, the
sanity units), used by the runner (``robustness.runner``), by the service's split of a
check into parts and by its cost estimate, so the three never disagree.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from models.checkpoint import LoadedCheckpoint
from models.cnn import QuantizedClassifier
from robustness.attacks import Attack
from robustness.request import SubjectFacts, SuiteRequest, inapplicable, surrogate_problem
from robustness.threats import applies

# The sanity run uses BIM: no random start, so if it moves the input at all, the gradient
# moved it, and a blind attacker shows up as accuracy that does not fall.
SANITY_ATTACK = "bim"
SANITY_THREAT_MODELS = ("naive", "bpda")


@dataclass(frozen=True)
class Subject:
    """A model under evaluation (or the transfer surrogate) and what identifies it."""

    name: str
    dataset: str
    sha256: str
    model: QuantizedClassifier
    class_names: tuple[str, ...] = ()  # from the manifest; reports print labels by name
    input_shape: tuple[int, ...] = ()  # (C, H, W), when known
    classes: int = 0  # when known

    @classmethod
    def from_checkpoint(cls, checkpoint: LoadedCheckpoint) -> Subject:
        manifest = checkpoint.manifest
        name = manifest.name or checkpoint.path.name
        return cls(
            name,
            manifest.dataset,
            manifest.weights_sha256,
            checkpoint.model,
            tuple(manifest.class_names),
            tuple(manifest.input_shape),
            len(manifest.class_names),
        )

    @property
    def io(self) -> tuple[tuple[int, ...], int] | None:
        """((C, H, W), classes), or None when either is unknown."""
        return (self.input_shape, self.classes) if self.input_shape and self.classes else None

    def describe(self) -> dict:
        quantizer = self.model.quantizer
        return {
            "name": self.name,
            "dataset": self.dataset,
            "sha256": self.sha256,
            "quantizer": quantizer.spec() if quantizer is not None else {"kind": "none"},
            **({"class_names": list(self.class_names)} if self.class_names else {}),
        }


@dataclass(frozen=True)
class Unit:
    """One crafting run. ``epsilon`` is None for minimal-perturbation attacks, which run
    once and are judged at every requested radius."""

    attack: str
    threat_model: str
    epsilon: float | None
    samples: int
    sanity: bool = False

    def seed(self, base: int) -> int:
        # Each unit seeds itself, so its result does not depend on what ran before it.
        return zlib.crc32(f"{base}/{self.attack}/{self.threat_model}/{self.epsilon}".encode())


def plan_units(
    request: SuiteRequest,
    attacks: dict[str, Attack],
    target: Subject,
    surrogate: Subject | None,
) -> tuple[list[Unit], list[dict]]:
    """Every applicable (attack, threat model, epsilon), cheapest attacks first, and the
    combinations left out with the reason."""
    units, skipped = [], []
    for name, attack, threat, radii in requested_pairs(request, attacks):
        reason = (
            _no_level_space(attack, target)
            or _too_few_classes(attack, target)
            or _not_applicable(threat, target, surrogate)
        )
        if reason is None and not radii:
            reason = f"no {attack.norm} epsilons requested"
        if reason is not None:
            skipped.append({"attack": name, "threat_model": threat, "reason": reason})
            continue
        units += [Unit(name, threat, eps, request.samples_for(name)) for eps in radii]
    units += sanity_units(request, quantized=target.model.quantizer is not None)
    return units, skipped


def requested_pairs(
    request: SuiteRequest, attacks: dict[str, Attack]
) -> Iterator[tuple[str, Attack, str, list[float | None]]]:
    """Each (attack, threat model) the request names that the attack runs under, with the
    radii it runs at: ``[None]`` for a minimal-perturbation attack (one run, judged at
    every radius), else the request's radii of the attack's norm (possibly none)."""
    for name, attack in attacks.items():
        radii = request.epsilons if attack.norm == "linf" else request.l2_epsilons
        for threat in request.threat_models:
            if applies(threat, attack):
                yield name, attack, threat, [None] if attack.minimal else list(radii)


def sanity_units(request: SuiteRequest, quantized: bool) -> list[Unit]:
    """BIM under each requested white-box threat model (BPDA only where a quantizer is)."""
    if request.sanity_epsilon is None:
        return []
    samples = min(request.samples, request.sanity_samples)
    threats = [t for t in SANITY_THREAT_MODELS if t in request.threat_models]
    if not quantized:
        threats = [t for t in threats if t == "naive"]
    return [Unit(SANITY_ATTACK, t, request.sanity_epsilon, samples, sanity=True) for t in threats]


def _not_applicable(threat: str, target: Subject, surrogate: Subject | None) -> str | None:
    return inapplicable(threat, subject_facts(target, surrogate))


def subject_facts(
    target: Subject, surrogate: Subject | None, input_shape: tuple[int, ...] = ()
) -> SubjectFacts:
    """What the request rules (``robustness.request``) need to know of a target; without
    ``input_shape`` (C, H, W) the L2 radii are not checked against their ceiling."""
    problem = surrogate_problem(
        target.sha256,
        target.dataset,
        surrogate.sha256 if surrogate is not None else None,
        surrogate.dataset if surrogate is not None else "",
        same_quantizer=surrogate is not None
        and target.describe()["quantizer"] == surrogate.describe()["quantizer"],
        target_io=target.io,
        surrogate_io=surrogate.io if surrogate is not None else None,
    )
    return SubjectFacts(target.dataset, input_shape, target.model.quantizer is not None, problem)


def _too_few_classes(attack: Attack, target: Subject) -> str | None:
    needed = getattr(attack, "min_classes", 2)
    if target.classes and target.classes < needed:
        return f"it needs at least {needed} classes; the model has {target.classes}"
    return None


def _no_level_space(attack: Attack, target: Subject) -> str | None:
    if attack.access == "model" and target.model.quantizer is None:
        return "no quantizer: no level space (APGD and PGD attack the input directly)"
    return None
