"""The per-dataset summary of a reproduction: the paper's setting beside the worst case."""

from __future__ import annotations

from pathlib import Path

from robustness.attacks import ATTACKS
from robustness.render import format_eps
from robustness.report import fired_flags
from robustness.verdict import verdict_table

THREAT_ORDER = ("transfer", "naive", "bpda", "gradient_free")


def write_summary(
    reports: list[dict],
    out_dir: Path | str,
    dataset: str,
    manifests: dict[str, dict] | None = None,
) -> list[Path]:
    """summary-DATASET.md and .png; with the models' manifests, the verdict table leads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / f"summary-{dataset}.md", out / f"summary-{dataset}.png"
    md.write_text(summary_markdown(reports, dataset, png.name, manifests))
    plot_summary(reports, png)
    return [md, png]


def _cell(row: dict | None, full: int) -> str:
    if row is None:
        return "-"
    mark = "" if row["samples"] == full and row["complete"] else f" (n={row['samples']})"
    return f"{100 * row['robust_accuracy']:.1f}%{mark}"


def _radii(reports: list[dict]) -> list[float]:
    return sorted({r["epsilon"] for rep in reports for r in _linf_rows(rep)})


def _linf_rows(report: dict) -> list[dict]:
    return [
        r
        for r in report["results"]
        if r["norm"] == "linf" and r["epsilon"] is not None and not r["sanity"]
    ]


def _lowest(rows: list[dict]) -> dict | None:
    return min(rows, key=lambda r: r["robust_accuracy"], default=None)


def summary_markdown(
    reports: list[dict],
    dataset: str,
    plot_name: str | None = None,
    manifests: dict[str, dict] | None = None,
) -> str:
    radii = _radii(reports)
    head = ["model", "clean"] + [f"eps={format_eps(e)}" for e in radii]
    lines = [f"# {dataset}: every model, attacked", ""]
    if manifests is not None:
        lines += ["## Verdict: the worst case per radius, L-inf and L2", ""]
        lines += _table(*verdict_table(reports, manifests))
        lines += ["", "The tables below are L-inf only.", ""]
    lines += ["## Worst case over every attack and threat model (the headline)", ""]
    lines += _table(
        head,
        [
            [rep["model"]["name"], f"{100 * rep['clean_accuracy']:.1f}%"]
            + [_worst_cell(rep, eps) for eps in radii]
            for rep in reports
        ],
    )
    if any(rep.get("worst_case_8bit") for rep in reports):
        lines += ["", "## Worst case on the 8-bit grid (attacks that send 8-bit images)", ""]
        lines += _table(
            head,
            [
                [rep["model"]["name"], f"{100 * rep['clean_accuracy']:.1f}%"]
                + [_worst_cell(rep, eps, "worst_case_8bit") for eps in radii]
                for rep in reports
            ],
        )
    lines += ["", "## Lowest accuracy per threat model (minimum over attacks)", ""]
    lines += _table(
        ["model", "threat model"] + head[2:],
        [
            [rep["model"]["name"], threat]
            + [
                _cell(
                    _lowest(
                        [
                            r
                            for r in _linf_rows(rep)
                            if r["threat_model"] == threat and r["epsilon"] == eps
                        ]
                    ),
                    rep["samples"],
                )
                for eps in radii
            ]
            for rep in reports
            for threat in THREAT_ORDER
            if any(r["threat_model"] == threat for r in _linf_rows(rep))
        ],
    )
    lines += ["", "## Per attack", ""] + _per_attack(reports, radii)
    lines += ["", "## Masking flags fired", ""]
    lines += [
        f"- {rep['model']['name']}: {', '.join(fired_flags(rep)) or 'none'}" for rep in reports
    ]
    lines += ["", "(n=...) marks a cell computed on fewer samples than the model's report."]
    if plot_name:
        lines += ["", f"![worst case vs transfer]({plot_name})"]
    return "\n".join(lines) + "\n"


def _worst_cell(report: dict, eps: float, field: str = "worst_case") -> str:
    entry = next(
        (w for w in report.get(field) or [] if w["norm"] == "linf" and w["epsilon"] == eps),
        None,
    )
    if entry is None:
        return "-"
    # Reports from before attack sets name none, and render as they always did.
    named = f", {entry['attack_set']}" if "attack_set" in entry else ""
    return f"{_cell(entry, report['samples'])} ({entry['attack']}/{entry['threat_model']}{named})"


def _per_attack(reports: list[dict], radii: list[float]) -> list[str]:
    lines = []
    for attack in ATTACKS:
        rows = []
        for rep in reports:
            for threat in THREAT_ORDER:
                found = {
                    r["epsilon"]: r
                    for r in _linf_rows(rep)
                    if r["attack"] == attack and r["threat_model"] == threat
                }
                if found:
                    rows.append(
                        [rep["model"]["name"], threat]
                        + [_cell(found.get(e), rep["samples"]) for e in radii]
                    )
        if rows:
            lines += [f"### {attack}", ""]
            lines += _table(["model", "threat model"] + [format_eps(e) for e in radii], rows)
            lines.append("")
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def plot_summary(reports: list[dict], path: Path) -> None:
    """Worst case (solid) and the paper's transfer setting (dashed) per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for i, rep in enumerate(reports):
        clean = rep["clean_accuracy"]
        worst = [
            (w["epsilon"], w["robust_accuracy"]) for w in rep["worst_case"] if w["norm"] == "linf"
        ]
        if worst:
            xs, ys = zip(*([(0.0, clean)] + worst), strict=True)
            axes.plot(xs, ys, "-o", color=f"C{i}", label=f"{rep['model']['name']}: worst case")
        transfer = sorted(
            (
                eps,
                _lowest(
                    [
                        r
                        for r in _linf_rows(rep)
                        if r["threat_model"] == "transfer" and r["epsilon"] == eps
                    ]
                ),
            )
            for eps in _radii([rep])
        )
        transfer = [(eps, row["robust_accuracy"]) for eps, row in transfer if row is not None]
        if transfer:
            xs, ys = zip(*([(0.0, clean)] + transfer), strict=True)
            axes.plot(
                xs,
                ys,
                "--s",
                color=f"C{i}",
                label=f"{rep['model']['name']}: transfer (paper's setting)",
            )
    axes.set_xlabel("epsilon (L-inf)")
    axes.set_ylabel("robust accuracy")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
