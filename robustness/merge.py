"""Folding a later run's rows into a report: an expensive attack rerun on more samples.

The runner seeds each (attack, threat model, epsilon) unit from the request's seed alone,
so a unit's rows do not depend on what else ran in the same process. A report assembled
from two runs of the same model, evaluation set and seed therefore holds the rows
one run would have produced; only wall-clock times differ. ``merge_reports`` checks that
premise field by field and refuses when it does not hold. Library versions must agree
where both runs record one; a run of attacks from a library the other did not use (say
torchattacks) adds its version.

The later run's (attack, threat model) pairs replace the earlier report's rows for those
pairs at every radius the later run requested (a minimal attack has a row per radius, and
its unbounded row is always replaced), and the rows keep the runner's order. A later run
may request only some of the earlier report's radii (an expensive attack split into one
run per radius): its rows replace those radii's and leave the others. A later run at radii
the earlier one did not run adds their rows, and the merged request lists every radius
either run asked for (the attacks that ran only in the earlier run have no rows there, and
the tables show them as not run). Everything derived
from rows (the worst case, its per-attack form, the masking flags) is computed again, and
``merged_from`` records each run's start, duration and attacks.
"""

from __future__ import annotations

from datetime import datetime

from robustness.attacks import ATTACKS
from robustness.report import SCHEMA_VERSION, derived_from_rows
from robustness.threats import THREAT_MODELS

# Fields that must agree for the rows of two runs to belong in one report.
_SAME_REPORT = ("schema_version", "samples", "seed", "clean_accuracy")
_SAME_REQUEST = ("batch_size", "bpda_backward")
# The request's radii of each norm: a merged report asks for those of every run.
_RADII = {"linf": "epsilons", "l2": "l2_epsilons"}


class MergeError(ValueError):
    """The reports cannot be merged; the message says which field disagrees."""


def merge_reports(base: dict, *parts: dict) -> dict:
    """``base`` with each part's rows in place of its rows for the same (attack, threat
    model); later parts win. Neither input is modified. With no parts, ``base`` with its
    derived fields computed again by today's code."""
    if base.get("schema_version") != SCHEMA_VERSION:
        raise MergeError(f"base report has schema {base.get('schema_version')!r}")
    merged = {**base, "merged_from": base.get("merged_from") or [_provenance(base)]}
    for part in parts:
        _check_compatible(merged, part)
        merged = _fold(merged, part)
    return {
        **merged,
        **derived_from_rows(merged["results"], merged["gradient_probes"]),
        "seconds": round(sum(run["seconds"] for run in merged["merged_from"]), 1),
    }


def assemble_parts(parts: list[dict]) -> dict:
    """One report from the reports of runs that split one request's plan between them
    (``run_suite(only_units=...)``), given in plan order.

    Unlike ``merge_reports`` nothing is replaced: each part holds its own units' rows, so
    the rows are concatenated in plan order, the units a stopped part did not run are
    listed as skipped, and the derived fields are computed again. The parts must agree
    as ``merge_reports`` requires, and on the whole request.
    """
    if not parts:
        raise MergeError("no parts to assemble")
    base = parts[0]
    for part in parts[1:]:
        _check_compatible(base, part)
        _same("request", base["request"], part["request"])
    rows = [row for part in parts for row in part["results"]]
    # The combinations that do not apply are listed by every part; stop notes by one.
    skipped = list(base["skipped"])
    skipped += [s for part in parts[1:] for s in part["skipped"] if s not in base["skipped"]]
    started = min(parts, key=lambda part: datetime.fromisoformat(part["started_at"]))
    complete = all(part["status"] == "complete" for part in parts)
    return {
        **base,
        "status": "complete" if complete else "stopped",
        "surrogate": next((p["surrogate"] for p in parts if p.get("surrogate")), None),
        "results": rows,
        "skipped": skipped,
        **derived_from_rows(rows, base["gradient_probes"]),
        "started_at": started["started_at"],
        # Work done, summed over the parts; the wall time is shorter when they overlap.
        "seconds": round(sum(part["seconds"] for part in parts), 1),
        "parts": len(parts),
    }


def _check_compatible(base: dict, part: dict) -> None:
    for key in _SAME_REPORT:
        _same(key, base.get(key), part.get(key))
    # A library one run did not record (it had none of its attacks) cannot disagree.
    ours, theirs = base.get("versions") or {}, part.get("versions") or {}
    shared = set(ours) & set(theirs)
    _same("versions", {k: ours[k] for k in shared}, {k: theirs[k] for k in shared})
    _same("model sha256", base["model"]["sha256"], part["model"]["sha256"])
    _same("model quantizer", base["model"]["quantizer"], part["model"]["quantizer"])
    _same("evaluation set sha256", base["eval_set"]["sha256"], part["eval_set"]["sha256"])
    for key in _SAME_REQUEST:
        _same(f"request {key}", base["request"].get(key), part["request"].get(key))
    if _uses_surrogate(part):
        surrogate, theirs = base.get("surrogate"), part.get("surrogate")
        _same(
            "surrogate sha256",
            surrogate and surrogate["sha256"],
            theirs and theirs["sha256"],
        )


def _check_same_settings(base: dict, part: dict, kept: list[dict], replaced: set) -> None:
    """A part that replaces only some radii of a pair must have run the attack with the
    base's parameters, or the pair's rows would mix two attacks under one name. (Sample
    counts may differ: every row records its own.)"""
    for attack in sorted({row["attack"] for row in kept if _pair(row) in replaced}):
        _same(
            f"request attack_params of {attack}, whose other radii stay,",
            base["attack_params"].get(attack),
            part["attack_params"].get(attack),
        )


def _same(what: str, ours, theirs) -> None:
    if ours != theirs:
        raise MergeError(f"{what} differs: {ours!r} in the base report, {theirs!r} in the part")


def _uses_surrogate(report: dict) -> bool:
    return any(row["threat_model"] == "transfer" for row in report["results"])


def _fold(base: dict, part: dict) -> dict:
    replaced = {_pair(row) for row in part["results"]}
    requested = part["request"]
    kept = [row for row in base["results"] if not _reran(row, replaced, requested)]
    _check_same_settings(base["request"], requested, kept, replaced)
    request = dict(base["request"])
    for key in _RADII.values():
        request[key] = sorted(set(request.get(key) or []) | set(requested.get(key) or []))
    # The runner's plan order: attack, then threat model, sanity runs last; within a pair,
    # a minimal attack's unbounded row, then the L-inf radii, then the L2 radii.
    radii = request
    rows = sorted(kept + part["results"], key=lambda row: _plan_order(row, radii))
    skipped = [s for s in base["skipped"] if _pair(s) not in replaced]
    skipped += [s for s in part["skipped"] if s not in skipped]
    request["attacks"] = _union(request["attacks"], part["request"]["attacks"])
    request["threat_models"] = _union(request["threat_models"], part["request"]["threat_models"])
    # The request reads as the one that would have produced the merged rows.
    rerun = set(part["request"]["attacks"])
    for key in ("sample_limits", "attack_params"):
        others = {a: v for a, v in request[key].items() if a not in rerun}
        request[key] = others | part["request"][key]
    statuses = {base["status"], part["status"]}
    examples = _fold_examples(
        base.get("examples"), part.get("examples"), replaced, requested, radii
    )
    return {
        **base,
        "status": "complete" if statuses == {"complete"} else "stopped",
        "surrogate": base.get("surrogate") or part.get("surrogate"),
        "request": request,
        "attack_params": base["attack_params"] | part["attack_params"],
        "versions": base["versions"] | part["versions"],
        "results": rows,
        "skipped": skipped,
        "merged_from": base["merged_from"] + [_provenance(part)],
        **({"examples": examples} if examples is not None else {}),
    }


def _fold_examples(
    base: dict | None, part: dict | None, replaced: set, requested: dict, radii: dict
) -> dict | None:
    """The part's example groups in place of the base's for the units it reran."""
    if base is None and part is None:
        return None
    groups = [g for g in (base or {}).get("groups", []) if not _reran(g, replaced, requested)]
    return {
        "per_group": max((r or {}).get("per_group", 0) for r in (base, part)),
        "groups": sorted(
            groups + (part or {}).get("groups", []), key=lambda g: _plan_order(g, radii)
        ),
        "dropped_groups": sum((r or {}).get("dropped_groups", 0) for r in (base, part)),
    }


def _pair(row: dict) -> tuple:
    return (row["attack"], row["threat_model"], bool(row.get("sanity")))


def _reran(row: dict, replaced: set, requested: dict) -> bool:
    """Whether a part that reran ``replaced`` pairs under request ``requested`` replaces
    ``row``: it ran the row's pair, and the row is a sanity run, a minimal attack's
    unbounded row, or at a radius the part requested."""
    if _pair(row) not in replaced:
        return False
    if row.get("sanity") or row["epsilon"] is None:
        return True
    return row["epsilon"] in requested.get(_RADII[row["norm"]], [])


def _plan_order(row: dict, request: dict) -> tuple:
    return (
        bool(row.get("sanity")),
        list(ATTACKS).index(row["attack"]),
        THREAT_MODELS.index(row["threat_model"]),
        _radius_order(row, request),
    )


def _radius_order(row: dict, request: dict) -> tuple:
    if row.get("sanity") or row["epsilon"] is None:
        return (0, 0)
    norms = list(_RADII)
    radii = request.get(_RADII[row["norm"]], [])
    position = radii.index(row["epsilon"]) if row["epsilon"] in radii else len(radii)
    return (1 + norms.index(row["norm"]), position)


def _union(first: list, second: list) -> list:
    return list(first) + [item for item in second if item not in first]


def _provenance(report: dict) -> dict:
    return {
        "started_at": report["started_at"],
        "seconds": report["seconds"],
        "attacks": list(report["request"]["attacks"]),
        "sample_limits": dict(report["request"]["sample_limits"]),
    }
