"""The one runner: plans (attack, threat model, epsilon) units, crafts in batches, judges.

The runner owns the invariants so attacks need not repeat them: eval-mode frozen copies of
the models, input checks, clamping every crafted batch to [0, 1] and into its eps ball,
seeding each unit, and judging every threat model on the deployed model as served (hard
staircase). A job runner calls ``run_suite`` with a ``progress`` callback and a
``should_stop`` hook; when the hook says stop, the report comes back with what was done
and ``status = "stopped"``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch

from models.cnn import QuantizedClassifier
from models.evalset import EvalSet
from robustness.attacks import Attack
from robustness.attacks.bim import BIM
from robustness.examples import ExampleCollector
from robustness.judge import judge_unit, predict, project
from robustness.plan import Subject, Unit, plan_units

# Re-exported: robustness.cli reads the target's facts from the runner.
from robustness.plan import subject_facts as subject_facts
from robustness.report import build_report
from robustness.request import SuiteRequest
from robustness.threats import (
    BPDAClassifier,
    ZeroGradientBridge,
    frozen_copy,
    probe_gradients,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    done_batches: int
    total_batches: int
    attack: str
    threat_model: str
    epsilon: float | None


ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool]
# Transfer examples depend only on the surrogate, the attack and the samples, so one
# evaluation of several defended models can craft them once:
# key -> (crafted images, seconds it took to craft them).
TransferCache = dict[tuple, tuple[torch.Tensor, float]]


@dataclass
class _Context:
    request: SuiteRequest
    attacks: dict[str, Attack]
    target: QuantizedClassifier
    surfaces: dict[str, torch.nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    clean_correct: torch.Tensor
    surrogate_sha: str | None
    transfer_cache: TransferCache | None
    progress: ProgressFn | None
    should_stop: StopFn
    total_batches: int = 0
    done_batches: int = 0
    stopped: bool = False
    rows: list[dict] = field(default_factory=list)
    examples: ExampleCollector = field(default_factory=ExampleCollector)


def budget(seconds: float, cancelled: StopFn | None = None) -> StopFn:
    """A ``should_stop`` hook: true once ``seconds`` have passed or ``cancelled()`` says so."""
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline or bool(cancelled and cancelled())


def run_suite(
    target: Subject,
    data: EvalSet,
    request: SuiteRequest,
    *,
    surrogate: Subject | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    transfer_cache: TransferCache | None = None,
    only_units: Collection[int] | None = None,
) -> dict:
    """Run the request against ``target``; returns the report (a JSON-ready dict).

    ``only_units`` (positions in ``plan_units``' plan) runs a part of the plan: the rows
    of the other units are left to other runs, whose reports ``merge.assemble_parts``
    puts together (units seed themselves, so the rows are the same as in one run)."""
    request.validate()
    started = time.time()
    model = frozen_copy(target.model)
    x, y = _checked_inputs(data, request.samples, model)
    with torch.no_grad():
        clean_correct = predict(model, x, request.batch_size) == y
    attacks = request.resolved_attacks()
    units, skipped = plan_units(request, attacks, target, surrogate)
    if only_units is not None:
        wanted = set(only_units)
        units = [unit for index, unit in enumerate(units) if index in wanted]
    surfaces = _surfaces(model, surrogate, request)
    probes = {
        name: probe_gradients(raw, x[: request.batch_size], y[: request.batch_size]).as_dict()
        for name, raw in _probe_models(model, surrogate, surfaces).items()
    }
    ctx = _Context(
        request,
        attacks,
        model,
        surfaces,
        x,
        y,
        clean_correct,
        surrogate.sha256 if surrogate else None,
        transfer_cache,
        progress,
        should_stop or (lambda: False),
    )
    ctx.total_batches = sum(math.ceil(u.samples / request.batch_size) for u in units)
    for unit in units:
        if ctx.stopped or ctx.should_stop():
            ctx.stopped = True
            skipped.append(_skip(unit, "not run: stopped (cancelled or out of time)"))
            continue
        _run_unit(ctx, unit)
    return build_report(
        target=target.describe(),
        surrogate=surrogate.describe() if surrogate else None,
        data=data,
        request=request,
        attacks=attacks,
        clean_correct=clean_correct,
        rows=ctx.rows,
        probes=probes,
        skipped=skipped,
        examples=ctx.examples.as_dict(),
        status="stopped" if ctx.stopped else "complete",
        started=started,
    )


def _skip(unit: Unit, reason: str) -> dict:
    return {
        "attack": unit.attack,
        "threat_model": unit.threat_model,
        "epsilon": unit.epsilon,
        "sanity": unit.sanity,
        "reason": reason,
    }


def _surfaces(
    model: QuantizedClassifier, surrogate: Subject | None, request: SuiteRequest
) -> dict[str, torch.nn.Module]:
    """The model each threat model's attacker crafts on."""
    surfaces: dict[str, torch.nn.Module] = {
        "naive": ZeroGradientBridge(model),
        "gradient_free": model,
    }
    if surrogate is not None:
        surfaces["transfer"] = ZeroGradientBridge(frozen_copy(surrogate.model))
    if model.quantizer is not None:
        surfaces["bpda"] = BPDAClassifier(model, request.bpda_backward)
    return surfaces


def _probe_models(model, surrogate, surfaces) -> dict[str, torch.nn.Module]:
    # The naive probe looks at the served model itself, without the zero bridge: that is
    # where a missing gradient shows.
    probed = {"naive": model}
    if "transfer" in surfaces:
        probed["transfer"] = surfaces["transfer"].model
    if "bpda" in surfaces:
        probed["bpda"] = surfaces["bpda"]
    return probed


def _checked_inputs(data: EvalSet, samples: int, model: QuantizedClassifier):
    x, y = data.images[:samples], data.labels[:samples]
    if x.ndim != 4 or y.shape != (len(x),):
        raise ValueError(f"expected images (N, C, H, W) and labels (N,), got {tuple(x.shape)}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError("images must be finite and lie in [0, 1]")
    with torch.no_grad():
        logits = model(x[:1])
    if logits.ndim != 2 or not 0 <= int(y.min()) <= int(y.max()) < logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]})")
    return x.float(), y.long()


def _run_unit(ctx: _Context, unit: Unit) -> None:
    attack = ctx.attacks.get(unit.attack) or BIM()
    torch.manual_seed(unit.seed(ctx.request.seed))
    key = _transfer_key(ctx, unit, attack)
    cached = ctx.transfer_cache.get(key) if key is not None else None
    if cached is not None:
        # Rows report what crafting cost when it was done, not the lookup.
        (adv, seconds), done = cached, unit.samples
        ctx.done_batches += math.ceil(unit.samples / ctx.request.batch_size)
        logger.info(
            "%s/%s eps=%s: transfer examples reused", unit.attack, unit.threat_model, unit.epsilon
        )
    else:
        start = time.perf_counter()
        adv, done = _craft(ctx, unit, attack)
        seconds = time.perf_counter() - start
        if key is not None and done == unit.samples:
            ctx.transfer_cache[key] = (adv, seconds)
    if done == 0:
        return
    with torch.no_grad():
        rows = judge_unit(
            unit,
            attack,
            ctx.target,
            ctx.x[:done],
            adv[:done],
            ctx.y[:done],
            ctx.clean_correct[:done],
            ctx.request,
            seconds,
            complete=done == unit.samples,
        )
    ctx.rows.extend(rows)
    ctx.examples.add_unit(
        unit,
        attack,
        ctx.target,
        ctx.x[:done],
        adv[:done],
        ctx.y[:done],
        ctx.clean_correct[:done],
        ctx.request,
    )


def _transfer_key(ctx: _Context, unit: Unit, attack: Attack) -> tuple | None:
    if unit.threat_model != "transfer" or ctx.transfer_cache is None:
        return None
    return (ctx.surrogate_sha, repr(attack), unit.epsilon, unit.samples, ctx.request.seed)


def _craft(ctx: _Context, unit: Unit, attack: Attack) -> tuple[torch.Tensor, int]:
    """Craft batch by batch; returns the images (unattacked ones unchanged) and how many
    leading samples were processed before a stop."""
    x, y = ctx.x[: unit.samples], ctx.y[: unit.samples]
    # Transfer crafts on every sample, so its examples serve any target; elsewhere only the
    # samples the target gets right are attacked (the others are already lost).
    attack_mask = (
        torch.ones_like(y, dtype=torch.bool)
        if unit.threat_model == "transfer"
        else ctx.clean_correct[: unit.samples]
    )
    adv = x.clone()
    # An exact attack gets the deployed model itself; the others their threat's surface.
    surface = ctx.target if attack.access == "model" else ctx.surfaces[unit.threat_model]
    step = ctx.request.batch_size
    for start in range(0, unit.samples, step):
        if ctx.should_stop():
            ctx.stopped = True
            return adv, start
        index = start + attack_mask[start : start + step].nonzero().squeeze(1)
        if len(index):
            adv[index] = _craft_batch(attack, surface, x[index], y[index], unit.epsilon)
        ctx.done_batches += 1
        if ctx.progress is not None:
            ctx.progress(
                Progress(
                    ctx.done_batches,
                    ctx.total_batches,
                    unit.attack,
                    unit.threat_model,
                    unit.epsilon,
                )
            )
    return adv, unit.samples


def _craft_batch(attack: Attack, surface, x, y, eps: float | None) -> torch.Tensor:
    if attack.access in ("gradients", "model"):
        adv = attack.craft(surface, x, y, eps)
    else:
        with torch.no_grad():
            adv = attack.craft(surface, x, y, eps)
    adv = adv.detach()
    if adv.shape != x.shape:
        raise RuntimeError(f"{attack.name} returned shape {tuple(adv.shape)} for {tuple(x.shape)}")
    if not torch.isfinite(adv).all():
        raise RuntimeError(f"{attack.name} returned non-finite pixels")
    adv = adv.clamp(0.0, 1.0)
    if eps is not None:
        adv = project(adv, x, attack.norm, eps)
    return adv
