"""A report as one self-contained HTML file: headline, charts, flags, examples, rows.

Everything is inline (styles, SVG charts, images as data URIs); the page loads nothing and
runs no script, so it opens offline and from a file. Every string from the report is
escaped.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

from robustness.render import accuracy_series, attack_set_name, format_eps, radii_as_given

THREAT_NAMES = {
    "transfer": "transfer",
    "naive": "naive white-box",
    "bpda": "BPDA",
    "gradient_free": "gradient-free",
}
THREAT_DASHES = {"transfer": "2 3", "naive": "8 4", "bpda": "", "gradient_free": "8 3 2 3"}
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 560, 320, 48, 12, 14, 40
_BASE64 = re.compile(r"^[A-Za-z0-9+/=]*$")

FLAG_WORDS = {
    "zero_or_missing_gradients": "The quantizer's staircase has no usable gradient, so an "
    "attacker who differentiates through the model as served learns nothing: naive white-box "
    "numbers measure the attack's blindness, not the model's robustness.",
    "naive_far_above_bpda": "Naive white-box accuracy is far above BPDA's: the naive number is "
    "the quantizer hiding gradients; only BPDA, transfer and gradient-free numbers count.",
    "gradient_free_beats_gradient": "An attack that only queries the model beats attacks that "
    "see its gradients: those gradients point nowhere useful.",
    "accuracy_not_near_zero_at_large_epsilon": "At a radius that allows any image, accuracy "
    "should be near zero; it is not, so the attack is failing, not the model succeeding.",
    "accuracy_not_falling_with_epsilon": "A larger radius should never help the model, and a "
    "white-box attack should do something at the largest radius.",
}

STYLE = """
body{font-family:system-ui,sans-serif;max-width:72rem;margin:0 auto;padding:1rem;color:#1b1f24}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #d0d5db;padding:.2rem .5rem}
td.n{text-align:right;font-variant-numeric:tabular-nums}.scroll{overflow-x:auto}
svg.chart{width:100%;max-width:40rem;height:auto;border:1px solid #d0d5db}
svg text{font-size:11px}.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:0 1rem}
.fired{color:#a4161a;font-weight:700}.clear{color:#1d6b35;font-weight:700}
.notice{background:#eef3f8;padding:.6rem;border-left:4px solid #0b5cad}
.gallery{display:flex;flex-wrap:wrap;gap:1rem}.example{border:1px solid #d0d5db;padding:.4rem}
.quad{display:grid;grid-template-columns:repeat(2,auto);gap:.3rem}figure{margin:0}
figcaption{font-size:.75rem;color:#59616b;max-width:6rem}
.quad img{width:4.5rem;height:4.5rem;image-rendering:pixelated;background:#000}
.fooled{color:#a4161a;font-weight:700}.held{color:#1d6b35;font-weight:700}
"""


def write_html(report: dict, path: Path | str) -> Path:
    path = Path(path)
    path.write_text(to_html(report))
    return path


def to_html(report: dict) -> str:
    model = report["model"]
    title = f"Robustness report: {model['name']}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # The file itself forbids scripts and outside requests, wherever it is opened.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">",
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _summary(report),
        "<h2>Headline: worst-case robust accuracy</h2>",
        _headline(report),
        "<h2>Accuracy against radius</h2>",
        *(_chart(report, norm) for norm in ("linf", "l2") if accuracy_series(report, norm)),
        _flags(report),
        _gallery(report),
        "<h2>All results</h2>",
        _results(report),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _norm(norm: str) -> str:
    return "L-inf" if norm == "linf" else "L2"


def _summary(report: dict) -> str:
    model, quantizer = report["model"], report["model"]["quantizer"]
    defence = quantizer["kind"]
    if defence != "none":
        defence += f", {quantizer['levels']} levels, thresholds {quantizer['thresholds']}"
    status = "" if report["status"] == "complete" else " (partial: the run was stopped)"
    items = [
        f"Model <code>{escape(model['name'])}</code> ({escape(model['dataset'])}), "
        f"quantizer {escape(str(defence))}",
        f"Evaluation set <code>{escape(report['eval_set']['name'])}</code>, first "
        f"{int(report['samples'])} images; clean accuracy <strong>{_pct(report['clean_accuracy'])}"
        "</strong>",
        f"Started {escape(report['started_at'])}, {float(report['seconds'])} s; status "
        f"{escape(report['status'])}{status}",
    ]
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(rows_cells) + "</tr>" for rows_cells in rows)
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _headline(report: dict) -> str:
    rows = [
        [
            f"<td>{_norm(w['norm'])}</td>",
            f'<td class="n">{escape(format_eps(w["epsilon"]))}</td>',
            f'<td class="n"><strong>{_pct(w["robust_accuracy"])}</strong></td>',
            f"<td>{escape(w['attack'])}</td>",
            f"<td>{escape(THREAT_NAMES.get(w['threat_model'], w['threat_model']))}</td>",
            f"<td>{escape(attack_set_name(w))}</td>",
            f'<td class="n">{int(w["samples"])}{"" if w["complete"] else " (cut short)"}</td>',
        ]
        for w in report["worst_case"]
    ]
    header = [
        "norm",
        "radius",
        "worst-case robust accuracy",
        "attack",
        "threat model",
        "attack set",
        "samples",
    ]
    return _table(header, rows) + _per_set(report)


def _per_set(report: dict) -> str:
    entries = report.get("worst_case_per_attack_set") or []
    if not entries:
        return ""
    rows = [
        [
            f"<td>{escape(attack_set_name(w))}</td>",
            f"<td>{_norm(w['norm'])}</td>",
            f'<td class="n">{escape(format_eps(w["epsilon"]))}</td>',
            f'<td class="n"><strong>{_pct(w.get("per_sample_accuracy"))}</strong></td>',
            f'<td class="n">{_pct(w["robust_accuracy"])}</td>',
            f"<td>{escape(w['attack'])} / {escape(w['threat_model'])}</td>",
            f"<td>{'complete' if w.get('complete_set') else 'partial'}</td>",
        ]
        for w in entries
    ]
    header = ["attack set", "norm", "radius", "per sample", "lowest attack", "attack", "set"]
    note = (
        "<p>Per attack set: <code>standard</code> is AutoAttack's standard version at its "
        "published budgets, <code>suite</code> every other attack. Per sample, a sample counts "
        "only if no attack of the set fooled it, as AutoAttack reports robust accuracy.</p>"
    )
    return note + _table(header, rows)


class _Plot:
    """Data coordinates -> SVG coordinates for one chart."""

    def __init__(self, top: float) -> None:
        self.top = top

    def x(self, eps: float) -> float:
        return LEFT + eps / self.top * (WIDTH - LEFT - RIGHT)

    def y(self, acc: float) -> float:
        return TOP + (1 - acc) * (HEIGHT - TOP - BOTTOM)

    def line(self, points: list[tuple], colour: str, width: float, dash: str) -> str:
        xy = " ".join(f"{self.x(e):.1f},{self.y(a):.1f}" for e, a in points)
        return f'<polyline points="{xy}" fill="none"{_stroke(colour, width, dash)}/>'

    def axes(self, norm: str) -> list[str]:
        x, y, top = self.x, self.y, self.top
        shapes = []
        for acc in (0, 0.25, 0.5, 0.75, 1):
            shapes.append(f'<line x1="{x(0)}" x2="{x(top)}" y1="{y(acc)}" y2="{y(acc)}"')
            shapes[-1] += ' stroke="#e5e8eb"/>'
            shapes.append(
                f'<text x="{LEFT - 6}" y="{y(acc) + 4}" text-anchor="end">{acc:.0%}</text>'
            )
        for i in range(5):
            eps = top * i / 4
            shapes.append(
                f'<text x="{x(eps):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
                f"{escape(format_eps(eps)) if eps else '0'}</text>"
            )
        shapes.append(
            f'<text x="{(LEFT + WIDTH) / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
            f"radius ({_norm(norm)})</text>"
        )
        return shapes


def _stroke(colour: str, width: float, dash: str) -> str:
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return f' stroke="{colour}" stroke-width="{width}"{dashes}'


def _legend_item(colour: str, width: float, dash: str, text: str) -> str:
    swatch = (
        '<svg width="28" height="10" aria-hidden="true">'
        f'<line x1="0" x2="28" y1="5" y2="5"{_stroke(colour, width, dash)}/></svg>'
    )
    return f"<li>{swatch} {escape(text)}</li>"


def _chart(report: dict, norm: str) -> str:
    """Robust accuracy against radius per (attack, threat model); the worst case in bold."""
    series = accuracy_series(report, norm)
    plot = _Plot(max(eps for points in series.values() for eps, _ in points))
    shapes, legend = plot.axes(norm), []
    attacks = list(dict.fromkeys(attack for attack, _ in series))
    clean = [(0.0, report["clean_accuracy"])]
    for (attack, threat), points in series.items():
        colour = COLOURS[attacks.index(attack) % len(COLOURS)]
        dash = THREAT_DASHES.get(threat, "")
        shapes.append(plot.line(clean + points, colour, 1.5, dash))
        legend.append(
            _legend_item(colour, 2, dash, f"{attack} / {THREAT_NAMES.get(threat, threat)}")
        )
    worst = [
        (w["epsilon"], w["robust_accuracy"]) for w in report["worst_case"] if w["norm"] == norm
    ]
    if worst:
        shapes.append(plot.line(clean + worst, "#000", 4, ""))
        shapes += [
            f'<circle cx="{plot.x(e):.1f}" cy="{plot.y(a):.1f}" r="4"/>' for e, a in clean + worst
        ]
        legend.append(_legend_item("#000", 4, "", "worst case (the headline)"))
    label = f"Robust accuracy against {_norm(norm)} radius"
    return (
        f'<figure><svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{label}">{"".join(shapes)}</svg>'
        f'<ul class="legend">{"".join(legend)}</ul></figure>'
    )


def _flags(report: dict) -> str:
    items = []
    for flag in report["masking_flags"]:
        state, css = {True: ("FIRED", "fired"), False: ("clear", "clear")}.get(
            flag["fired"], ("not checked", "")
        )
        words = FLAG_WORDS.get(flag["name"], flag["meaning"])
        evidence = "".join(
            f"<li>{escape(radii_as_given(e, report))}</li>" for e in flag["evidence"][:6]
        )
        items.append(
            f'<li><span class="{css}">{state}</span> <code>{escape(flag["name"])}</code>: '
            f"{escape(words)}" + (f"<ul>{evidence}</ul>" if evidence else "") + "</li>"
        )
    return (
        "<h2>Gradient-masking flags</h2><p>A fired flag means some numbers are an artefact of "
        "the attack, not robustness. Naive white-box attacks on a quantized model are blind "
        "(the staircase has zero gradient), so their high accuracies must not be trusted: read "
        "the worst case, which also counts BPDA, transfer and gradient-free attacks.</p>"
        f"<ul>{''.join(items)}</ul>"
    )


def _image(data: str | None, caption: str) -> str:
    if not data or not _BASE64.match(data):
        return ""
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _gallery(report: dict) -> str:
    examples = report.get("examples")
    if examples is None:
        return (
            '<h2>Adversarial examples</h2><p class="notice">This report carries no adversarial '
            "examples: it was made before reports kept them, and its long run was not repeated "
            "for the pictures. A new run (<code>python -m robustness evaluate</code>) keeps a "
            "few per attack, threat model and radius.</p>"
        )
    parts = ["<h2>Adversarial examples</h2>"]
    for group in examples["groups"]:
        threat = THREAT_NAMES.get(group["threat_model"], group["threat_model"])
        parts.append(
            f"<h3>{escape(group['attack'])} / {escape(threat)}, {_norm(group['norm'])} radius "
            f'{escape(format_eps(group["epsilon"]))}</h3><div class="gallery">'
        )
        for item in group["examples"]:
            images = item["images"]
            fooled = item["adversarial_prediction"] != item["label"]
            parts.append(
                '<div class="example"><div class="quad">'
                + _image(images["clean"], f"clean, predicted {item['clean_prediction']}")
                + _image(images.get("clean_quantized"), "clean, quantized")
                + _image(
                    images["adversarial"],
                    f"adversarial, predicted {item['adversarial_prediction']}",
                )
                + _image(images.get("adversarial_quantized"), "adversarial, quantized")
                + f"</div><p>sample {int(item['index'])}, label {int(item['label'])}: "
                + (
                    '<span class="fooled">fooled</span>'
                    if fooled
                    else '<span class="held">held</span>'
                )
                + "</p></div>"
            )
        parts.append("</div>")
    if examples.get("dropped_groups"):
        parts.append(
            f"<p>{int(examples['dropped_groups'])} more groups were left out (size limit).</p>"
        )
    return "".join(parts)


def _results(report: dict) -> str:
    rows = [
        [
            f"<td>{escape(r['attack'])}{' (sanity)' if r['sanity'] else ''}</td>",
            f"<td>{escape(THREAT_NAMES.get(r['threat_model'], r['threat_model']))}</td>",
            f"<td>{_norm(r['norm'])}</td>",
            f'<td class="n">{escape(format_eps(r["epsilon"]))}</td>',
            f'<td class="n">{int(r["samples"])}{"" if r["complete"] else "*"}</td>',
            f'<td class="n">{_pct(r["robust_accuracy"])}</td>',
            f'<td class="n">{_pct(r["attack_success_rate"])}</td>',
        ]
        for r in report["results"]
    ]
    header = ["attack", "threat model", "norm", "radius", "n", "robust accuracy", "success"]
    return _table(header, rows)
