"""A report as one self-contained HTML file: headline, charts, flags, examples, rows.

Everything is inline (styles, SVG charts, images as data URIs); the page loads nothing and
runs no script, so it opens offline and from a file. Every string from the report is
escaped. The page stays short enough to read: what decides (the headline, one chart per
norm, the flags) is open; each attack's curves, the adversarial examples and every row are
disclosures (``<details>``) a reader opens.
"""

from __future__ import annotations

import re
from html import escape
from pathlib import Path

from robustness.html_chart import THREAT_NAMES, attack_charts, bounded_rows, threat_chart
from robustness.render import (
    attack_set_name,
    class_name,
    class_names,
    format_eps,
    radii_as_given,
    requested_radii,
)

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
.charts{display:flex;flex-wrap:wrap;gap:1rem 2rem}
figure.chart{margin:.5rem 0;flex:1 1 30rem;max-width:40rem}
figure.chart figcaption{font-weight:600;font-size:.9rem;max-width:none;color:#1b1f24}
figure.chart>svg{width:100%;height:auto;border:1px solid #d0d5db}
svg text{fill:#1b1f24}
.legend{list-style:none;padding:0;margin:.3rem 0;display:flex;flex-wrap:wrap;gap:.2rem 1.2rem;
font-size:.85rem}.legend li{display:flex;align-items:center;gap:.35rem}
.fired{color:#a4161a;font-weight:700}.clear{color:#1d6b35;font-weight:700}
.notice{background:#eef3f8;padding:.6rem;border-left:4px solid #0b5cad}
details{margin:.4rem 0}summary{cursor:pointer;font-weight:600}
details>div,details>details{margin-left:1rem}
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
    norms = [norm for norm in ("linf", "l2") if bounded_rows(report, norm)]
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
        '<div class="charts">',
        *(threat_chart(report, norm) for norm in norms),
        "</div>",
        *(_attack_charts(report, norm) for norm in norms),
        _flags(report),
        _gallery(report),
        "<h2>All results</h2>",
        _results(report),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _attack_charts(report: dict, norm: str) -> str:
    charts = attack_charts(report, norm)
    return (
        f"<details><summary>Each attack, one chart per threat model ({_norm(norm)}, "
        f'{len(charts)} charts)</summary><div class="charts">{"".join(charts)}</div></details>'
    )


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
    radii = [
        f"{_norm(norm)} {escape(', '.join(format_eps(e) for e in given))}"
        for norm, given in requested_radii(report).items()
        if given
    ]
    if radii:
        items.append("Radii requested: " + "; ".join(radii))
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
    names = class_names(report)
    by_attack: dict[str, list[dict]] = {}
    for group in examples["groups"]:
        by_attack.setdefault(group["attack"], []).append(group)
    parts = [
        "<h2>Adversarial examples</h2><p>Each example shows the clean image, what the "
        "quantizer made of it, the adversarial image and what the quantizer made of that, "
        "with the model's predictions. One disclosure per attack.</p>"
    ]
    for attack, groups in by_attack.items():
        shown = [e for g in groups for e in g["examples"]]
        fooled = sum(e["adversarial_prediction"] != e["label"] for e in shown)
        parts.append(
            f"<details><summary>{escape(attack)}: {len(groups)} group"
            f"{'s' if len(groups) != 1 else ''}, {fooled} of {len(shown)} examples fooled"
            "</summary>"
        )
        parts += [_group(group, names) for group in groups]
        parts.append("</details>")
    if examples.get("dropped_groups"):
        parts.append(
            f"<p>{int(examples['dropped_groups'])} more groups were left out (size limit).</p>"
        )
    return "".join(parts)


def _group(group: dict, names: list[str] | None) -> str:
    threat = THREAT_NAMES.get(group["threat_model"], group["threat_model"])
    parts = [
        f"<h3>{escape(group['attack'])} / {escape(threat)}, {_norm(group['norm'])} radius "
        f'{escape(format_eps(group["epsilon"]))}</h3><div class="gallery">'
    ]
    for item in group["examples"]:
        images = item["images"]
        fooled = item["adversarial_prediction"] != item["label"]
        clean = class_name(int(item["clean_prediction"]), names)
        adversarial = class_name(int(item["adversarial_prediction"]), names)
        parts.append(
            '<div class="example"><div class="quad">'
            + _image(images["clean"], f"clean, predicted {clean}")
            + _image(images.get("clean_quantized"), "clean, quantized")
            + _image(images["adversarial"], f"adversarial, predicted {adversarial}")
            + _image(images.get("adversarial_quantized"), "adversarial, quantized")
            + f"</div><p>sample {int(item['index'])}, "
            + f"label {escape(class_name(int(item['label']), names))}: "
            + ('<span class="fooled">fooled</span>' if fooled else '<span class="held">held</span>')
            + "</p></div>"
        )
    if not group["examples"]:
        parts.append("<p>The model got none of these samples right.</p>")
    parts.append("</div>")
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
    return (
        f"<details><summary>Every row ({len(rows)}; * marks a run cut short)</summary>"
        f"{_table(header, rows)}</details>"
    )
