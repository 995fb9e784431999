"""The self-contained HTML report: what it shows, that it loads nothing, that it escapes."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

from robustness.cli import main
from robustness.html import to_html
from robustness.request import SuiteRequest
from robustness.runner import run_suite

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
REQUEST = SuiteRequest(
    attacks=("noise", "fgsm"),
    threat_models=("transfer", "naive", "bpda", "gradient_free"),
    epsilons=(0.1, 0.3),
    samples=16,
    batch_size=16,
    sanity_epsilon=None,
)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))


class _Outside(HTMLParser):
    """Counts what a reader sees before opening any disclosure."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = self.open_details = self.charts = self.images = self.rows = 0

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "details":
            self.depth += 1
            self.open_details += "open" in dict(attrs)
        elif self.depth == 0:
            self.charts += tag == "svg" and ("role", "img") in attrs
            self.images += tag == "img"
            self.rows += tag == "tr"

    def handle_endtag(self, tag) -> None:
        self.depth -= tag == "details"


def _delta_e(first: str, second: str) -> float:
    """CIE76 colour distance between two #RRGGBB colours (D65)."""

    def lab(colour: str) -> tuple[float, float, float]:
        rgb = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = [((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92 for c in rgb]
        xyz = (
            (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047,
            0.2126 * r + 0.7152 * g + 0.0722 * b,
            (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883,
        )
        fx, fy, fz = [v ** (1 / 3) if v > 0.008856 else 7.787 * v + 16 / 116 for v in xyz]
        return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)

    return math.dist(lab(first), lab(second))


def _tags(page: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def _loads_nothing(page: str) -> None:
    tags = _tags(page)
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object")]
    for _, attrs in tags:
        for name in ("src", "href"):
            assert attrs.get(name) is None or attrs[name].startswith("data:image/png;base64,")
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", page)


def test_report_page_has_charts_flags_and_every_example(masked, undefended, eval_set):
    report = run_suite(masked, eval_set, REQUEST, surrogate=undefended)
    page = to_html(report)
    _loads_nothing(page)
    tags = _tags(page)
    # Open: one L-inf chart, one line per threat model plus the worst case. Behind a
    # disclosure: one chart per threat model, one line per attack plus the worst case.
    threats = {r["threat_model"] for r in report["results"]}
    series = {(r["attack"], r["threat_model"]) for r in report["results"]}
    assert sum(1 for t, _ in tags if t == "polyline") == (len(threats) + 1) + (
        len(series) + len(threats)
    )
    images = [a["src"] for t, a in tags if t == "img"]
    order = ("clean", "clean_quantized", "adversarial", "adversarial_quantized")
    groups = report["examples"]["groups"]
    attacks = list(dict.fromkeys(g["attack"] for g in groups))
    by_attack = sorted(groups, key=lambda g: attacks.index(g["attack"]))
    stored = [e["images"][k] for g in by_attack for e in g["examples"] for k in order]
    assert images == [f"data:image/png;base64,{v}" for v in stored]
    for flag in report["masking_flags"]:
        assert flag["name"] in page


def test_the_page_keeps_long_parts_behind_disclosures():
    """What decides stays open (headline, one chart per norm, flags); each attack's curves,
    the examples and the rows are in <details>, closed."""
    report = json.loads((RESULTS / "cifar10-tq4.json").read_text())
    page = to_html(report)
    outside = _Outside()
    outside.feed(page)
    assert outside.open_details == 0
    assert outside.charts == 2  # L-inf and L2, per threat model
    assert outside.images == 0 and outside.rows <= 1 + 6 + 1 + 6  # headline and per-set tables
    assert len(re.findall(r"<polyline", page)) > 30  # every series is still on the page


def test_each_chart_gives_its_lines_distinct_colours_and_marks_the_radii_as_given():
    report = json.loads((RESULTS / "cifar10-tq4.json").read_text())
    charts = re.findall(r"<svg viewBox=.*?</svg>", to_html(report))
    assert len(charts) == 2 + 4 + 4  # per norm: per threat model, then each threat model's
    for chart in charts:
        lines = re.findall(
            r'<polyline points="[^"]*" fill="none" stroke="(#\w+)" '
            r'stroke-width="[\d.]+"(?: stroke-dasharray="([\d ]+)")?',
            chart,
        )
        assert lines and len(lines) == len(set(lines)), lines
        colours = sorted({colour for colour, _ in lines})
        for i, first in enumerate(colours):
            for second in colours[i + 1 :]:
                assert _delta_e(first, second) >= 25, (first, second)
        ticks = re.findall(r'<text class="tick"[^>]*>([^<]*)</text>', chart)
        assert ticks in (["0", "2/255", "4/255", "8/255"], ["0", "0.25", "0.5", "1"]), ticks


def test_examples_and_labels_are_named_by_class():
    report = json.loads((RESULTS / "cifar10-tq4.json").read_text())
    assert "class_names" not in report["model"]  # from before reports recorded them
    page = to_html(report)
    assert "label cat:" in page and "predicted dog" in page
    assert not re.search(r"label \d+:", page)


def test_reports_record_the_models_class_names(masked, eval_set):
    names = tuple(f"digit {i}" for i in range(10))
    report = run_suite(replace(masked, class_names=names), eval_set, REQUEST)
    assert report["model"]["class_names"] == list(names)
    assert "label digit " in to_html(report)
    assert "class_names" not in run_suite(masked, eval_set, REQUEST)["model"]


def test_strings_from_the_report_are_escaped(masked, eval_set):
    report = run_suite(masked, eval_set, REQUEST)
    report["model"]["name"] = "<script>alert(1)</script>"
    report["masking_flags"][0]["evidence"] = ['"><img src=x onerror=alert(1)>']
    report["examples"]["groups"][0]["examples"][0]["images"]["clean"] = 'x" onerror="alert(1)'
    page = to_html(report)
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'onerror="alert(1)' not in page
    _loads_nothing(page)


def test_render_writes_html_for_a_report_made_before_examples_and_says_so(tmp_path):
    # A published report as it was before reports kept adversarial examples.
    report = json.loads((RESULTS / "mnist-tq2.json").read_text())
    del report["examples"]
    copy = tmp_path / "mnist-tq2.json"
    copy.write_text(json.dumps(report))
    assert main(["render", "--html", str(copy)]) == 0
    page = (tmp_path / "mnist-tq2.html").read_text()
    _loads_nothing(page)
    assert "carries no adversarial examples" in page
    for worst in report["worst_case"]:
        assert f"<strong>{100 * worst['robust_accuracy']:.1f}%</strong>" in page


def test_flags_print_radii_as_the_tables_do_in_published_reports():
    """The flags' evidence was written with six digits (eps=0.00784314); rendered, it names
    the radius the report requested, as the tables write it (2/255)."""
    from robustness.render import to_markdown

    report = json.loads((RESULTS / "cifar10-tq4.json").read_text())
    evidence = " ".join(e for flag in report["masking_flags"] for e in flag["evidence"])
    assert "eps=0.00784314" in evidence  # the record itself is left as published
    for page in (to_markdown(report), to_html(report)):
        assert "eps=0.00784314" not in page and "eps=0.0156863" not in page
        assert "eps=2/255" in page and "eps=4/255" in page
