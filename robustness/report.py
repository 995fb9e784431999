"""The report: a JSON-ready dict with the rows, the worst case per radius, and the flags.

The headline is ``worst_case``: for each norm and radius, the lowest robust accuracy over
every attack and threat model that ran. ``worst_case_8bit`` is the same minimum over the
attacks whose images are 8-bit images (``level_8bit``), what an attacker who can only send
the service 8-bit images achieves. ``worst_case_per_attack`` is the minimum taken per
attack (over threat models), for a job runner to export as gauges.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from datetime import UTC, datetime
from importlib import metadata

import torch

from models.evalset import EvalSet
from robustness.attacks import ATTACKS, Attack
from robustness.flags import masking_flags
from robustness.judge import decode_mask
from robustness.presets import ATTACK_SETS, SUITE, attack_set_of
from robustness.request import SuiteRequest

SCHEMA_VERSION = 1
_LIBRARIES = ("torch", "cleverhans", "torchattacks", "numpy", "scipy")


def build_report(
    *,
    target: dict,
    surrogate: dict | None,
    data: EvalSet,
    request: SuiteRequest,
    attacks: dict[str, Attack],
    clean_correct: torch.Tensor,
    rows: list[dict],
    probes: dict[str, dict],
    skipped: list[dict],
    status: str,
    started: float,
    examples: dict | None = None,
) -> dict:
    params = {name: dataclasses.asdict(a) for name, a in attacks.items()}
    rows = [_with_attack_set(row, params) for row in rows]
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "model": target,
        "surrogate": surrogate,
        "eval_set": {"name": data.name, "sha256": data.sha256, "available": len(data.labels)},
        "samples": len(clean_correct),
        "seed": request.seed,
        "request": request.as_dict(),
        "attack_params": params,
        "clean_accuracy": round(float(clean_correct.float().mean()), 6),
        "gradient_probes": probes,
        **derived_from_rows(rows, probes),
        "results": rows,
        "skipped": skipped,
        # Optional (reports before it lack it): robustness.examples.ExampleCollector.as_dict
        **({"examples": examples} if examples is not None else {}),
        "versions": library_versions(),
        "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
    }


def derived_from_rows(rows: list[dict], probes: dict[str, dict]) -> dict:
    """The fields a report derives from its rows: the headline, its per-attack form and
    the masking flags (a merge of several runs computes them again)."""
    return {
        "worst_case": worst_case(rows),
        "worst_case_8bit": worst_case([r for r in rows if _on_8bit_grid(r)]),
        "worst_case_per_attack": worst_case(rows, per_attack=True),
        "masking_flags": masking_flags(rows, probes),
        # Reports from before attack sets have no set on their rows, and derive as they did.
        **(
            {"worst_case_per_attack_set": worst_case_per_attack_set(rows)}
            if any("attack_set" in row for row in rows)
            else {}
        ),
    }


def _with_attack_set(row: dict, params: dict) -> dict:
    # The sanity run's BIM may run with defaults that are not in the request's parameters.
    return {**row, "attack_set": attack_set_of(row["attack"], params.get(row["attack"], {}))}


def row_attack_set(row: dict) -> str:
    return row.get("attack_set", SUITE)


def worst_case_per_attack_set(rows: list[dict]) -> list[dict]:
    """The headline per attack set; ``complete_set`` says whether every attack of a named
    set for that norm has a row at that radius (a set is only the set when all of it ran)."""
    entries = []
    for name in sorted({row_attack_set(r) for r in rows}, key=lambda n: n != SUITE):
        members = [r for r in rows if row_attack_set(r) == name and not r["sanity"]]
        for entry in worst_case(members):
            at_radius = [
                r for r in members if (r["norm"], r["epsilon"]) == (entry["norm"], entry["epsilon"])
            ]
            ran = {r["attack"] for r in at_radius}
            entries.append(
                {
                    **entry,
                    "complete_set": _set_members(name, entry["norm"], ran) <= ran,
                    "per_sample_accuracy": per_sample_accuracy(at_radius),
                }
            )
    return entries


def _set_members(name: str, norm: str, ran: set[str]) -> set[str]:
    named = ATTACK_SETS.get(name)
    return ran if named is None else {a for a in named.attacks if ATTACKS[a].norm == norm}


def per_sample_accuracy(rows: list[dict]) -> float | None:
    """The fraction of samples that no row's attack fooled (AutoAttack's robust accuracy
    of an ensemble: at most the lowest row's); None unless every row recorded its robust
    samples over the same samples."""
    if not rows or any("robust_samples" not in r for r in rows):
        return None
    counts = {r["samples"] for r in rows}
    if len(counts) != 1:
        return None
    (count,) = counts
    robust = torch.ones(count, dtype=torch.bool)
    for row in rows:
        robust &= decode_mask(row["robust_samples"], count)
    return round(float(robust.float().mean()), 6)


def _on_8bit_grid(row: dict) -> bool:
    """Rows whose crafted images are 8-bit images, as the service receives them."""
    return getattr(ATTACKS[row["attack"]], "grid", False)


def worst_case(rows: list[dict], per_attack: bool = False) -> list[dict]:
    """Minimum robust accuracy per (norm, radius), or per (attack, norm, radius).

    Sanity-radius rows and unbounded rows are left out: they answer other questions.
    """
    best: dict[tuple, dict] = {}
    for row in rows:
        if row["epsilon"] is None or row["sanity"]:
            continue
        key = (row["attack"],) if per_attack else ()
        key += (row["norm"], row["epsilon"])
        if key not in best or row["robust_accuracy"] < best[key]["robust_accuracy"]:
            best[key] = row
    return [
        {
            "attack": row["attack"],
            "norm": row["norm"],
            "epsilon": row["epsilon"],
            "robust_accuracy": row["robust_accuracy"],
            "threat_model": row["threat_model"],
            "samples": row["samples"],
            "complete": row["complete"],
            **({"attack_set": row["attack_set"]} if "attack_set" in row else {}),
        }
        for _, row in sorted(best.items(), key=lambda item: _order(item[0]))
    ]


def _order(key: tuple) -> tuple:
    *attack, norm, eps = key
    return (*(list(ATTACKS).index(a) for a in attack), norm != "linf", eps)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def fired_flags(report: dict) -> list[str]:
    return [flag["name"] for flag in report["masking_flags"] if flag["fired"]]
