"""The self-contained HTML report: what it shows, that it loads nothing, that it escapes."""

from __future__ import annotations

import json
import re
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
    # One line per (attack, threat model) plus the worst case, in one L-inf chart.
    series = {(r["attack"], r["threat_model"]) for r in report["results"]}
    assert sum(1 for t, _ in tags if t == "polyline") == len(series) + 1
    images = [a["src"] for t, a in tags if t == "img"]
    order = ("clean", "clean_quantized", "adversarial", "adversarial_quantized")
    groups = report["examples"]["groups"]
    stored = [e["images"][k] for g in groups for e in g["examples"] for k in order]
    assert images == [f"data:image/png;base64,{v}" for v in stored]
    for flag in report["masking_flags"]:
        assert flag["name"] in page


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
