"""Robust accuracy against radius as inline SVG, for the self-contained HTML report.

A report can hold thirty (attack, threat model) series, too many for one chart's colours and
legend. So the page draws them in two steps: one chart per norm with one line per threat
model (the lowest accuracy over its attacks at each radius) and the worst case, then, behind
a disclosure, one small chart per threat model with its attacks. Threat models and attacks
each have colours of their own that no other line in the same chart shares. The radius axis
is marked at the requested radii, written as given (8/255, 0.3), and no tick label reaches
past the drawing. The console draws the same charts (``js/chart.js``).
"""

from __future__ import annotations

from html import escape

from robustness.render import format_eps

THREAT_NAMES = {
    "transfer": "transfer",
    "naive": "naive white-box",
    "bpda": "BPDA",
    "gradient_free": "gradient-free",
}
# Okabe and Ito's colour-blind-safe hues, one per threat model.
THREAT_COLOURS = {
    "transfer": "#0072B2",
    "naive": "#E69F00",
    "bpda": "#009E73",
    "gradient_free": "#CC79A7",
}
# Twelve hues for attacks, apart from each other (CIE76 distance 29 or more) and from the
# worst case's black; past twelve they come round again with a dash, so no two lines of one
# chart look alike.
ATTACK_COLOURS = (
    "#4363D8",
    "#E6194B",
    "#3CB44B",
    "#F58231",
    "#911EB4",
    "#42D4F4",
    "#F032E6",
    "#9A6324",
    "#808000",
    "#469990",
    "#800000",
    "#000075",
)
ATTACK_DASHES = ("", "6 3", "2 2")
WORST = "#000000"
WIDTH, HEIGHT = 600, 300
LEFT, RIGHT, TOP, BOTTOM = 52, 20, 16, 46
FONT_PX = 12
CHAR_PX = 7.2  # an upper bound on a character's width at FONT_PX in a sans-serif face


def norm_name(norm: str) -> str:
    return "L-inf" if norm == "linf" else "L2"


def bounded_rows(report: dict, norm: str) -> list[dict]:
    """The rows a chart plots: this norm, at a radius, not the sanity run."""
    return [
        r
        for r in report["results"]
        if r["norm"] == norm and r["epsilon"] is not None and not r["sanity"]
    ]


def lowest_by(rows: list[dict], key: str) -> dict[str, list[tuple[float, float]]]:
    """For each value of ``key`` (a threat model or an attack): the lowest robust accuracy
    over the other's values at each radius, as sorted (radius, accuracy) points."""
    lowest: dict[str, dict[float, float]] = {}
    for row in rows:
        at = lowest.setdefault(row[key], {})
        eps = row["epsilon"]
        at[eps] = min(at.get(eps, 1.0), row["robust_accuracy"])
    return {name: sorted(points.items()) for name, points in lowest.items()}


def attack_styles(report: dict) -> dict[str, tuple[str, str]]:
    """Each attack of the report -> (colour, dash), fixed across the report's charts."""
    attacks = list(dict.fromkeys(r["attack"] for r in report["results"]))
    return {
        attack: (
            ATTACK_COLOURS[i % len(ATTACK_COLOURS)],
            ATTACK_DASHES[(i // len(ATTACK_COLOURS)) % len(ATTACK_DASHES)],
        )
        for i, attack in enumerate(attacks)
    }


def threat_chart(report: dict, norm: str) -> str:
    """One line per threat model (its attacks' lowest accuracy) and the worst case."""
    rows = bounded_rows(report, norm)
    counts = {t: len({r["attack"] for r in rows if r["threat_model"] == t}) for t in THREAT_NAMES}
    series = [
        (
            f"{THREAT_NAMES.get(threat, threat)}: lowest of {counts.get(threat, 0)} "
            f"attack{'s' if counts.get(threat, 0) != 1 else ''}",
            THREAT_COLOURS.get(threat, "#777777"),
            "",
            points,
        )
        for threat, points in _in_order(lowest_by(rows, "threat_model"), THREAT_NAMES)
    ]
    title = f"Robust accuracy against {norm_name(norm)} radius, per threat model"
    return chart(report, norm, series, title)


def attack_charts(report: dict, norm: str) -> list[str]:
    """One chart per threat model with each of its attacks, and the worst case."""
    styles, rows = attack_styles(report), bounded_rows(report, norm)
    charts = []
    for threat in [t for t in THREAT_NAMES if any(r["threat_model"] == t for r in rows)]:
        mine = [r for r in rows if r["threat_model"] == threat]
        series = [
            (attack, *styles[attack], points)
            for attack, points in _in_order(lowest_by(mine, "attack"), styles)
        ]
        title = f"{THREAT_NAMES[threat]}: each attack, {norm_name(norm)}"
        charts.append(chart(report, norm, series, title))
    return charts


def _in_order(series: dict, order) -> list[tuple[str, list]]:
    known = [name for name in order if name in series]
    return [(name, series[name]) for name in known + sorted(set(series) - set(known))]


class Plot:
    """Data coordinates -> SVG coordinates; the radius axis runs to the largest radius."""

    def __init__(self, top: float) -> None:
        self.top = top or 1.0

    def x(self, eps: float) -> float:
        return LEFT + eps / self.top * (WIDTH - LEFT - RIGHT)

    def y(self, acc: float) -> float:
        return TOP + (1 - acc) * (HEIGHT - TOP - BOTTOM)


def tick_labels(plot: Plot, radii: list[float]) -> list[tuple[float, str]]:
    """(x of the label's centre, text) for 0 and each radius, kept inside the drawing; a
    label that would overlap the one after it is left out (the largest radius always shows)."""
    kept: list[tuple[float, str]] = []
    for eps in sorted({0.0, *radii}, reverse=True):
        text = format_eps(eps)
        half = len(text) * CHAR_PX / 2
        centre = min(max(plot.x(eps), half + 1), WIDTH - half - 1)
        if kept and centre + half + 4 > kept[-1][0] - len(kept[-1][1]) * CHAR_PX / 2:
            continue
        kept.append((centre, text))
    return kept[::-1]


def chart(report: dict, norm: str, series: list[tuple], title: str) -> str:
    """An SVG chart and its legend; ``series`` is (name, colour, dash, points)."""
    radii = sorted({eps for *_, points in series for eps, _ in points})
    plot = Plot(max(radii, default=1.0))
    clean = [(0.0, report["clean_accuracy"])]
    shapes = _grid(plot, radii, norm)
    legend = []
    worst = [
        (w["epsilon"], w["robust_accuracy"]) for w in report["worst_case"] if w["norm"] == norm
    ]
    if worst:
        # Underneath and wider: the series that sets the worst case stays visible on it.
        shapes.append(_line(plot, clean + worst, WORST, 6, ""))
        shapes += [_dot(plot, e, a, WORST, 5) for e, a in clean + worst]
    for name, colour, dash, points in series:
        shapes.append(_line(plot, clean + points, colour, 2, dash))
        shapes += [_dot(plot, e, a, colour, 2.5) for e, a in points]
        legend.append(_legend_item(colour, 2, dash, name))
    if worst:
        legend.append(_legend_item(WORST, 6, "", "worst case over every attack (the headline)"))
    return (
        f'<figure class="chart"><figcaption>{escape(title)}</figcaption>'
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" font-size="{FONT_PX}" role="img" '
        f'aria-label="{escape(title)}">'
        f"{''.join(shapes)}</svg>"
        f'<ul class="legend">{"".join(legend)}</ul></figure>'
    )


def _grid(plot: Plot, radii: list[float], norm: str) -> list[str]:
    x, y = plot.x, plot.y
    shapes = []
    for acc in (0, 0.25, 0.5, 0.75, 1):
        shapes.append(
            f'<line x1="{x(0):.1f}" x2="{x(plot.top):.1f}" y1="{y(acc):.1f}" y2="{y(acc):.1f}" '
            'stroke="#e5e8eb"/>'
            f'<text x="{LEFT - 6}" y="{y(acc) + 4:.1f}" text-anchor="end">{acc:.0%}</text>'
        )
    for eps in radii:
        shapes.append(
            f'<line x1="{x(eps):.1f}" x2="{x(eps):.1f}" y1="{y(0):.1f}" y2="{y(1):.1f}" '
            'stroke="#eef0f2"/>'
        )
    baseline = HEIGHT - BOTTOM + 16
    shapes += [
        f'<text class="tick" x="{centre:.1f}" y="{baseline}" text-anchor="middle">'
        f"{escape(text)}</text>"
        for centre, text in tick_labels(plot, radii)
    ]
    shapes.append(
        f'<line x1="{x(0):.1f}" x2="{x(plot.top):.1f}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
        'stroke="#1b1f24"/>'
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{y(0):.1f}" y2="{y(1):.1f}" stroke="#1b1f24"/>'
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
        f"radius ({norm_name(norm)})</text>"
    )
    return shapes


def _stroke(colour: str, width: float, dash: str) -> str:
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return f' stroke="{colour}" stroke-width="{width}"{dashes}'


def _line(plot: Plot, points: list[tuple], colour: str, width: float, dash: str) -> str:
    xy = " ".join(f"{plot.x(e):.1f},{plot.y(a):.1f}" for e, a in points)
    return f'<polyline points="{xy}" fill="none"{_stroke(colour, width, dash)}/>'


def _dot(plot: Plot, eps: float, acc: float, colour: str, radius: float) -> str:
    return f'<circle cx="{plot.x(eps):.1f}" cy="{plot.y(acc):.1f}" r="{radius}" fill="{colour}"/>'


def _legend_item(colour: str, width: float, dash: str, text: str) -> str:
    swatch = (
        '<svg width="32" height="12" aria-hidden="true">'
        f'<line x1="1" x2="31" y1="6" y2="6"{_stroke(colour, width, dash)}/></svg>'
    )
    return f"<li>{swatch}<span>{escape(text)}</span></li>"
