"""Gradient-masking flags: symptoms that an accuracy number may be an artefact of the attack.

Each flag follows one item of the checklist in Athalye, Carlini and Wagner (arXiv
1802.00420) and Carlini et al., "On Evaluating Adversarial Robustness" (arXiv 1902.06705).
A flag is ``fired: true`` when the symptom shows, ``false`` when checked and absent, and
``null`` when the report lacks the rows to check it. A fired flag is a reason to distrust
the higher numbers, not a verdict on the defense.
"""

from __future__ import annotations

from collections import defaultdict

from robustness.attacks import ATTACKS

# Margins in accuracy points (fractions): above sampling noise for ~1,000 samples
# (one standard error is at most 0.016) so an undefended model does not trip them.
NAIVE_ABOVE_BPDA = 0.10
GRADIENT_FREE_AHEAD = 0.05
LARGE_EPSILON_ACCURACY = 0.10
RISE_TOLERANCE = 0.03
FLAT_TOLERANCE = 0.01
STRONGER_AHEAD = 0.03
# BPDA-PGD, the attack the masking story rests on, per norm; and the attacks that should
# not beat it by much if its straight-through gradient finds what there is to find.
BPDA_PGD = {"linf": "pgd", "l2": "pgd_l2"}
STRONGER_THAN_PGD = ("apgd_ce", "apgd_ce_l2", "apgd_t", "apgd_t_l2", "level", "level_8bit")


def masking_flags(rows: list[dict], probes: dict[str, dict]) -> list[dict]:
    graded = [r for r in rows if r["epsilon"] is not None and not r["sanity"]]
    return [
        _missing_gradients(probes),
        _naive_above_bpda(graded),
        _gradient_free_ahead(graded),
        _not_falling_at_large_epsilon([r for r in rows if r["sanity"]]),
        _not_falling_with_epsilon(graded),
        _stronger_than_bpda_pgd(graded),
    ]


def _flag(name: str, meaning: str, evidence: list[str], checked: bool = True) -> dict:
    return {
        "name": name,
        "fired": bool(evidence) if checked else None,
        "meaning": meaning,
        "evidence": evidence,
    }


def _missing_gradients(probes: dict[str, dict]) -> dict:
    evidence = [
        f"{threat}: input gradient {probe['status']} "
        f"({probe['zero_fraction']:.0%} of probed samples all-zero)"
        for threat, probe in probes.items()
        if threat in ("naive", "bpda") and (probe["status"] != "ok" or probe["zero_fraction"] > 0.5)
    ]
    return _flag(
        "zero_or_missing_gradients",
        "white-box gradients through the model are missing or zero, so gradient attacks "
        "under that threat model are blind",
        evidence,
        checked="naive" in probes,
    )


def _naive_above_bpda(rows: list[dict]) -> dict:
    bpda = {_key(r): r for r in rows if r["threat_model"] == "bpda"}
    evidence = []
    for row in rows:
        other = bpda.get(_key(row)) if row["threat_model"] == "naive" else None
        if other and row["robust_accuracy"] - other["robust_accuracy"] > NAIVE_ABOVE_BPDA:
            evidence.append(
                f"{row['attack']} {row['norm']} eps={row['epsilon']:g}: naive "
                f"{row['robust_accuracy']:.1%} vs BPDA {other['robust_accuracy']:.1%}"
            )
    return _flag(
        "naive_far_above_bpda",
        f"naive white-box accuracy exceeds BPDA's by more than {100 * NAIVE_ABOVE_BPDA:.0f} "
        "points: the naive number is the quantizer hiding gradients",
        evidence,
        checked=bool(bpda),
    )


def _gradient_free_ahead(rows: list[dict]) -> dict:
    best: dict[tuple, dict] = {}
    for row in rows:
        access = ATTACKS[row["attack"]].access
        if access == "none":
            continue  # the noise floor is not an attack to compare against
        group = "gradient_free" if access == "queries" else row["threat_model"]
        if group not in ("gradient_free", "naive", "bpda"):
            continue
        key = (group, row["norm"], row["epsilon"])
        if key not in best or row["robust_accuracy"] < best[key]["robust_accuracy"]:
            best[key] = row
    evidence = []
    for (group, norm, eps), free in best.items():
        if group != "gradient_free":
            continue
        for threat in ("naive", "bpda"):
            white = best.get((threat, norm, eps))
            if white and free["robust_accuracy"] < white["robust_accuracy"] - GRADIENT_FREE_AHEAD:
                evidence.append(
                    f"{norm} eps={eps:g}: {free['attack']} {free['robust_accuracy']:.1%} "
                    f"below the best {threat} gradient attack ({white['attack']} "
                    f"{white['robust_accuracy']:.1%})"
                )
    checked = any(k[0] == "gradient_free" for k in best) and any(
        k[0] != "gradient_free" for k in best
    )
    return _flag(
        "gradient_free_beats_gradient",
        "a gradient-free attack does better than gradient attacks with full access: their "
        "gradients are not pointing anywhere useful",
        evidence,
        checked=checked,
    )


def _not_falling_at_large_epsilon(sanity_rows: list[dict]) -> dict:
    evidence = [
        f"{r['attack']} {r['threat_model']} eps={r['epsilon']:g}: {r['robust_accuracy']:.1%}"
        for r in sanity_rows
        if r["robust_accuracy"] > LARGE_EPSILON_ACCURACY
    ]
    return _flag(
        "accuracy_not_near_zero_at_large_epsilon",
        f"at a radius that allows any image (the sanity epsilon) accuracy stays above "
        f"{LARGE_EPSILON_ACCURACY:.0%}: the attack is failing, not the model succeeding",
        evidence,
        checked=bool(sanity_rows),
    )


def _not_falling_with_epsilon(rows: list[dict]) -> dict:
    series: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        if ATTACKS[row["attack"]].access != "none":
            series[(row["attack"], row["threat_model"], row["norm"])].append(row)
    evidence = []
    for (attack, threat, norm), points in series.items():
        points.sort(key=lambda r: r["epsilon"])
        for low, high in zip(points, points[1:], strict=False):
            if high["robust_accuracy"] > low["robust_accuracy"] + RISE_TOLERANCE:
                evidence.append(
                    f"{attack} {threat} {norm}: {low['robust_accuracy']:.1%} at "
                    f"eps={low['epsilon']:g} rises to {high['robust_accuracy']:.1%} at "
                    f"eps={high['epsilon']:g}"
                )
        last = points[-1]
        white_box_gradient = ATTACKS[attack].access in ("gradients", "model") and threat in (
            "naive",
            "bpda",
        )
        if (
            white_box_gradient
            and last["robust_accuracy"] >= last["clean_accuracy"] - FLAT_TOLERANCE
        ):
            evidence.append(
                f"{attack} {threat} {norm}: no effect even at eps={last['epsilon']:g} "
                f"({last['robust_accuracy']:.1%}, clean {last['clean_accuracy']:.1%})"
            )
    return _flag(
        "accuracy_not_falling_with_epsilon",
        "a larger radius should never help the model, and a white-box gradient attack "
        "should have some effect at the largest radius",
        evidence,
        checked=bool(series),
    )


def _stronger_than_bpda_pgd(rows: list[dict]) -> dict:
    bpda = [r for r in rows if r["threat_model"] == "bpda"]
    pgd = {(r["norm"], r["epsilon"]): r for r in bpda if r["attack"] == BPDA_PGD.get(r["norm"])}
    evidence, compared = [], False
    for row in bpda:
        reference = pgd.get((row["norm"], row["epsilon"]))
        if row["attack"] not in STRONGER_THAN_PGD or reference is None:
            continue
        compared = True
        if row["robust_accuracy"] < reference["robust_accuracy"] - STRONGER_AHEAD:
            evidence.append(
                f"{row['norm']} eps={row['epsilon']:g}: {row['attack']} "
                f"{row['robust_accuracy']:.1%} vs BPDA {reference['attack']} "
                f"{reference['robust_accuracy']:.1%}"
            )
    return _flag(
        "stronger_attack_beats_bpda_pgd",
        f"APGD or the exact level-space attack leaves more than {100 * STRONGER_AHEAD:.0f} "
        "points less accuracy than PGD through BPDA: the straight-through gradient misses "
        "adversarial examples, so numbers resting on BPDA-PGD alone are too high",
        evidence,
        checked=compared,
    )


def _key(row: dict) -> tuple:
    return (row["attack"], row["norm"], row["epsilon"])
