"""Writing a report: JSON (the record), Markdown (for people), PNG (accuracy vs epsilon)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from models.registry import DATASETS
from robustness.attacks import ATTACKS
from robustness.request import format_eps

THREAT_STYLES = {"transfer": ":", "naive": "--", "bpda": "-", "gradient_free": "-."}


def write_report(report: dict, out_dir: Path | str, stem: str) -> list[Path]:
    """Write ``stem``.json, .md and .png under ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.json", out / f"{stem}.md", out / f"{stem}.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(to_markdown(report, plot_name=paths[2].name))
    plot_accuracy(report, paths[2])
    return paths


def requested_radii(report: dict) -> dict[str, list[float]]:
    """The radii the report's request named, per norm, in the order given."""
    request = report.get("request") or {}
    return {
        "linf": list(request.get("epsilons") or []),
        "l2": list(request.get("l2_epsilons") or []),
    }


def class_names(report: dict) -> list[str] | None:
    """The model's class names: from the report (reports record them since they were added),
    else from the dataset when it is a known one; None when neither says."""
    model = report.get("model") or {}
    if model.get("class_names"):
        return [str(name) for name in model["class_names"]]
    known = DATASETS.get(model.get("dataset", ""))
    return list(known.class_names) if known is not None else None


def class_name(index: int, names: list[str] | None) -> str:
    """A label as a person reads it: its class name where known, else its index."""
    if names is not None and 0 <= index < len(names):
        return names[index]
    return str(index)


_EPS_IN_TEXT = re.compile(r"eps=([0-9][0-9.e+-]*)")


def radii_as_given(text: str, report: dict) -> str:
    """``eps=0.00784314`` in a flag's evidence (printed with six digits when the report was
    made) as the radius the report requested, written as in its tables: ``eps=2/255``.
    Numbers that match no requested radius are left as they are."""
    request = report.get("request") or {}
    radii = [
        *request.get("epsilons", []),
        *request.get("l2_epsilons", []),
        *([request["sanity_epsilon"]] if request.get("sanity_epsilon") else []),
    ]

    def as_given(match: re.Match) -> str:
        try:
            value = float(match.group(1))
        except ValueError:
            return match.group(0)
        for radius in radii:
            if abs(radius - value) <= 1e-5 * max(abs(radius), 1e-12):
                return f"eps={format_eps(radius)}"
        return match.group(0)

    return _EPS_IN_TEXT.sub(as_given, text)


def attack_set_name(entry: dict) -> str:
    """A row's or headline entry's attack set; reports from before sets name none."""
    return entry.get("attack_set", "suite")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def to_markdown(report: dict, plot_name: str | None = None) -> str:
    model, lines = report["model"], []
    lines += [f"# Robustness report: {model['name']}", ""]
    if report["status"] != "complete":
        lines += [f"**Status: {report['status']}** - partial results; see Skipped.", ""]
    lines += _summary(report) + [""]
    lines += ["## Headline: worst-case robust accuracy", ""]
    lines += [
        "Lowest robust accuracy over every attack and threat model that ran at each radius.",
        "",
    ]
    lines += _table(
        HEADLINE_COLUMNS,
        [_headline_row(w) for w in report["worst_case"]],
    )
    lines += _headline_8bit(report)
    lines += _headline_per_set(report)
    if plot_name:
        lines += ["", f"![accuracy vs epsilon]({plot_name})"]
    lines += ["", "## Gradient-masking flags", ""] + _flags(report)
    lines += ["", "## Results", ""] + _results(report)
    if report["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [
            f"- {s['attack']} / {s['threat_model']}"
            + (f" eps={format_eps(s['epsilon'])}" if s.get("epsilon") is not None else "")
            + f": {s['reason']}"
            for s in report["skipped"]
        ]
    lines += ["", "## Attack parameters", ""]
    lines += [f"- {name}: {json.dumps(p)}" for name, p in report["attack_params"].items()]
    return "\n".join(lines) + "\n"


def _headline_8bit(report: dict) -> list[str]:
    """The L-inf headline again for an attacker who can only send 8-bit images."""
    entries = report.get("worst_case_8bit") or []
    if not entries:
        return []
    lines = ["", "On the 8-bit grid (whole intensity steps, what the service receives):", ""]
    return lines + _table(HEADLINE_COLUMNS, [_headline_row(w) for w in entries])


HEADLINE_COLUMNS = [
    "norm",
    "epsilon",
    "worst-case robust accuracy",
    "attack",
    "threat model",
    "attack set",
    "samples",
]


def _headline_row(w: dict) -> list[str]:
    return [
        w["norm"],
        format_eps(w["epsilon"]),
        f"**{_pct(w['robust_accuracy'])}**",
        w["attack"],
        w["threat_model"],
        attack_set_name(w),
        f"{w['samples']}" + ("" if w["complete"] else "*"),
    ]


def _headline_per_set(report: dict) -> list[str]:
    """Per attack set: its lowest single attack, and its accuracy taken per sample."""
    entries = report.get("worst_case_per_attack_set") or []
    if not entries:
        return []
    lines = [
        "",
        "Per attack set (`standard`: AutoAttack's standard version at its published budgets; "
        "`suite`: every other attack). Per sample: a sample counts only if no attack of the "
        "set fooled it, as AutoAttack reports robust accuracy.",
        "",
    ]
    header = ["attack set", "norm", "epsilon", "per sample", "lowest attack", "attack", "set"]
    rows = [
        [
            attack_set_name(w),
            w["norm"],
            format_eps(w["epsilon"]),
            f"**{_pct(w.get('per_sample_accuracy'))}**",
            _pct(w["robust_accuracy"]),
            f"{w['attack']} / {w['threat_model']}",
            "complete" if w.get("complete_set") else "partial",
        ]
        for w in entries
    ]
    return lines + _table(header, rows)


def _summary(report: dict) -> list[str]:
    model, surrogate, data = report["model"], report["surrogate"], report["eval_set"]
    quantizer = model["quantizer"]
    q = quantizer["kind"]
    if q != "none":
        q += f", {quantizer['levels']} levels, thresholds {quantizer['thresholds']}"
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    return [
        f"- Model: `{model['name']}` ({model['dataset']}), weights sha256 `{model['sha256']}`",
        f"- Quantizer: {q}",
        "- Transfer surrogate: "
        + (f"`{surrogate['name']}` sha256 `{surrogate['sha256']}`" if surrogate else "none")
        + (" (the model itself: transfer not run)" if _self_surrogate(report) else ""),
        f"- Evaluation set: `{data['name']}` sha256 `{data['sha256']}`; "
        f"first {report['samples']} images",
        f"- Clean accuracy: **{_pct(report['clean_accuracy'])}**",
        f"- Seed: {report['seed']}; started {report['started_at']}; {report['seconds']} s",
        *_runs(report),
        f"- Versions: {versions}",
    ]


def _runs(report: dict) -> list[str]:
    """One line per run a merged report was assembled from (see robustness.merge)."""
    runs = report.get("merged_from")
    if not runs:
        return []
    lines = [f"- Merged from {len(runs)} runs; later runs replace the rows of their attacks:"]
    for run in runs:
        limits = ", ".join(f"{a} on {n}" for a, n in run["sample_limits"].items())
        lines.append(
            f"  - started {run['started_at']}, {run['seconds']} s: {', '.join(run['attacks'])}"
            + (f" (first-N limits: {limits})" if limits else "")
        )
    return lines


def _self_surrogate(report: dict) -> bool:
    surrogate = report["surrogate"]
    return surrogate is not None and surrogate["sha256"] == report["model"]["sha256"]


def _flags(report: dict) -> list[str]:
    lines = []
    for flag in report["masking_flags"]:
        state = {True: "**FIRED**", False: "clear", None: "not checked"}[flag["fired"]]
        lines.append(f"- {state} `{flag['name']}`: {flag['meaning']}")
        lines += [f"  - {radii_as_given(item, report)}" for item in flag["evidence"][:6]]
        if len(flag["evidence"]) > 6:
            lines.append(f"  - ... and {len(flag['evidence']) - 6} more (see the JSON)")
    probes = report["gradient_probes"]
    lines += ["", "Input-gradient probes (cross-entropy at the clean images):", ""]
    lines += [
        f"- {threat}: {p['status']}, {p['zero_fraction']:.0%} all-zero, "
        f"mean |g| {p['mean_abs']:.3g}"
        for threat, p in probes.items()
    ]
    return lines


def _results(report: dict) -> list[str]:
    header = [
        "attack",
        "threat model",
        "norm",
        "epsilon",
        "n",
        "robust acc",
        "success",
        "L-inf mean/max",
        "L2 mean/max",
        "seconds",
    ]
    rows = []
    for r in report["results"]:
        p = r["perturbation"]
        rows.append(
            [
                r["attack"] + (" (sanity)" if r["sanity"] else ""),
                r["threat_model"],
                r["norm"],
                format_eps(r["epsilon"]),
                f"{r['samples']}" + ("" if r["complete"] else "*"),
                _pct(r["robust_accuracy"]),
                _pct(r["attack_success_rate"]),
                f"{p['linf_mean']:.3f}/{p['linf_max']:.3f}",
                f"{p['l2_mean']:.2f}/{p['l2_max']:.2f}",
                f"{r['seconds']:.1f}",
            ]
        )
    notes = [
        "",
        "Robust accuracy counts a sample only if the deployed model is right on both the clean "
        "and the crafted image; success rate and perturbation sizes are over the samples it got "
        "right. Minimal-perturbation attacks (cw_l2, hsj) run once: their 'unbounded' row is the "
        "raw result, and each radius row projects those examples onto that ball; their seconds "
        "are the one run's. * marks a run cut short.",
    ]
    return _table(header, rows) + notes


def plot_accuracy(report: dict, path: Path) -> None:
    """Robust accuracy against epsilon, one panel per norm; the worst case in bold black."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    norms = [n for n in ("linf", "l2") if any(w["norm"] == n for w in report["worst_case"])]
    figure = Figure(figsize=(6.5 * max(1, len(norms)), 4.8))
    FigureCanvasAgg(figure)
    colors = {name: f"C{i}" for i, name in enumerate(ATTACKS)}
    clean = report["clean_accuracy"]
    for i, norm in enumerate(norms or ["linf"]):
        axes = figure.add_subplot(1, max(1, len(norms)), i + 1)
        for (attack, threat), points in accuracy_series(report, norm).items():
            xs, ys = zip(*([(0.0, clean)] + points), strict=True)
            axes.plot(
                xs,
                ys,
                THREAT_STYLES[threat],
                color=colors[attack],
                marker=".",
                linewidth=1,
                label=f"{attack} / {threat}",
            )
        worst = [
            (w["epsilon"], w["robust_accuracy"]) for w in report["worst_case"] if w["norm"] == norm
        ]
        if worst:
            xs, ys = zip(*([(0.0, clean)] + worst), strict=True)
            axes.plot(xs, ys, color="black", linewidth=3, marker="o", label="worst case")
        axes.set_xlabel(f"epsilon ({'L-inf' if norm == 'linf' else 'L2'})")
        axes.set_ylabel("robust accuracy")
        axes.set_ylim(-0.02, 1.02)
        axes.grid(alpha=0.3)
        axes.set_title(f"{report['model']['name']}: {norm}")
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def accuracy_series(report: dict, norm: str) -> dict[tuple, list[tuple]]:
    """(attack, threat model) -> [(radius, robust accuracy)], sorted, for one norm's chart."""
    series: dict[tuple, list[tuple]] = {}
    for r in report["results"]:
        if r["norm"] == norm and r["epsilon"] is not None and not r["sanity"]:
            series.setdefault((r["attack"], r["threat_model"]), []).append(
                (r["epsilon"], r["robust_accuracy"])
            )
    return {k: sorted(v) for k, v in series.items()}
