"""The verdict table: one row per model of a dataset, its defence, how it was trained, clean
accuracy, the worst case per radius (L-inf and L2, naming the attack and its attack set) and
what training it cost.

The reports say what was attacked; the checkpoints' manifests say how each model was trained.
A manifest is used only when its weights are the ones the report attacked (same sha256), so a
retrained checkpoint never lends its training to an older report.
"""

from __future__ import annotations

import json
from pathlib import Path

from robustness.render import format_eps


class VerdictError(ValueError):
    """A manifest is missing, unreadable, or not the one the report attacked."""


def read_manifests(reports: list[dict], checkpoints_dir: Path | str) -> dict[str, dict]:
    """The manifest of each report's model, from ``checkpoints_dir/<model name>/``."""
    manifests = {}
    for report in reports:
        name, digest = report["model"]["name"], report["model"].get("sha256")
        path = Path(checkpoints_dir) / name / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except OSError as exc:
            raise VerdictError(f"cannot read {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise VerdictError(f"{path} is not JSON: {exc}") from None
        if manifest.get("weights_sha256") != digest:
            raise VerdictError(
                f"{path} describes weights {str(manifest.get('weights_sha256'))[:16]}..., "
                f"but the report attacked {str(digest)[:16]}...: the checkpoint changed since "
                "the evaluation"
            )
        manifests[name] = manifest
    return manifests


def defence(report: dict) -> str:
    quantizer = report["model"].get("quantizer") or {}
    kind = quantizer.get("kind", "none")
    if kind == "none":
        return "none"
    return f"{kind.upper()}, {quantizer.get('levels')} levels"


def training_method(manifest: dict | None) -> str:
    if manifest is None:
        return "-"
    training = manifest.get("training") or {}
    method = training.get("adversarial", "none")
    if method in (None, "none"):
        return "standard"
    return f"{method} at {format_eps(float(training['adv_epsilon']))}"


def training_cost(manifest: dict | None, manifests: dict[str, dict]) -> str:
    """This run's wall time, plus the run its weights started from when that is known."""
    if manifest is None:
        return "-"
    seconds = (manifest.get("metrics") or {}).get("train_seconds")
    if seconds is None:
        return "-"
    text = _hours(seconds)
    if (manifest.get("metrics") or {}).get("train_seconds_covers"):
        text += " (last session only)"
    if (manifest.get("training") or {}).get("device") == "cuda":
        # The wall time of a GPU is not this machine's; a resumed run's earlier sessions may
        # have run elsewhere, so say only what the manifest knows.
        text += " (last session on a GPU)"
    base = Path(str((manifest.get("training") or {}).get("init_from") or "")).name
    if base:
        earlier = (manifests.get(base) or {}).get("metrics", {}).get("train_seconds")
        text += f" + {_hours(earlier)} ({base})" if earlier is not None else f" (from {base})"
    return text


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def _radii(reports: list[dict], norm: str) -> list[float]:
    return sorted(
        {w["epsilon"] for rep in reports for w in rep.get("worst_case") or [] if w["norm"] == norm}
    )


def _worst(report: dict, norm: str, eps: float) -> str:
    entry = next(
        (w for w in report.get("worst_case") or [] if w["norm"] == norm and w["epsilon"] == eps),
        None,
    )
    if entry is None:
        return "-"
    full = entry["samples"] == report["samples"] and entry.get("complete", True)
    partial = "" if full else f", n={entry['samples']}"
    attack_set = entry.get("attack_set", "suite")
    return (
        f"{100 * entry['robust_accuracy']:.1f}% "
        f"({entry['attack']}/{entry['threat_model']}, {attack_set}{partial})"
    )


def verdict_table(
    reports: list[dict], manifests: dict[str, dict]
) -> tuple[list[str], list[list[str]]]:
    """The verdict table's header and rows, one row per report."""
    linf, l2 = _radii(reports, "linf"), _radii(reports, "l2")
    header = (
        ["model", "defence", "training", "clean"]
        + [f"L-inf {format_eps(e)}" for e in linf]
        + [f"L2 {format_eps(e)}" for e in l2]
        + ["training cost"]
    )
    rows = []
    for report in reports:
        manifest = manifests.get(report["model"]["name"])
        rows.append(
            [
                report["model"]["name"],
                defence(report),
                training_method(manifest),
                f"{100 * report['clean_accuracy']:.1f}%",
            ]
            + [_worst(report, "linf", e) for e in linf]
            + [_worst(report, "l2", e) for e in l2]
            + [training_cost(manifest, manifests)]
        )
    return header, rows
