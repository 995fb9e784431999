"""The published report pages (docs/results/) as a reader sees them in Chromium: short
enough to read with their disclosures closed, and no chart label or legend entry clipped or
lying on another, wide or narrow, closed or opened. Screenshots go to
test-artifacts/reports/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import chart_count, chromium, layout_problems, shoot

pytestmark = pytest.mark.slow

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
PAGES = sorted(p.stem for p in RESULTS.glob("*.html"))
# The longest page, closed, at 1100 px wide: the CIFAR-10 reports with 15 attacks under four
# threat models and 105 groups of examples measured about 2,300 px (they were 40,000 px).
MAX_HEIGHT_PX = 3500


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


def test_every_published_report_page_is_there() -> None:
    assert PAGES == [
        "cifar10-cq4",
        "cifar10-tq4",
        "cifar10-undefended",
        "mnist-cq2",
        "mnist-tq2",
        "mnist-undefended",
    ]


@pytest.mark.parametrize("name", PAGES)
def test_a_published_page_is_short_and_its_charts_are_legible(page, name) -> None:
    page.goto((RESULTS / f"{name}.html").as_uri())
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height <= MAX_HEIGHT_PX, f"{name}: {height} px"
    assert chart_count(page) >= 1
    assert layout_problems(page) == []
    shoot(page, "reports", f"{name}-closed")
    # Narrow (a phone): the charts shrink with their text, the legends wrap.
    page.set_viewport_size({"width": 380, "height": 800})
    assert layout_problems(page) == []
    page.set_viewport_size({"width": 1100, "height": 900})
    # Every disclosure open: each attack's charts and every example.
    page.evaluate("document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    assert chart_count(page) > 2
    assert layout_problems(page) == []
    captions = page.locator("figcaption").all_inner_texts()
    if name.startswith("cifar10"):
        assert any(text.endswith(("cat", "dog", "airplane", "ship")) for text in captions)


def test_the_layout_check_sees_a_clipped_label_and_legend_entries_on_each_other(page) -> None:
    """The check above is not vacuous: the old chart's clipped "8/255" and a legend entry
    laid over another are both reported."""
    page.goto((RESULTS / "cifar10-tq4.html").as_uri())
    page.evaluate(
        """() => {
            const chart = document.querySelector("svg[role=img]");
            const tick = [...chart.querySelectorAll("text.tick")].pop();
            tick.setAttribute("x", "590");  // centred on the right edge, as it used to be
            const legend = document.querySelector(".legend");
            legend.style.position = "relative";
            const second = legend.children[1];
            second.style.position = "absolute";
            second.style.left = "0";
            second.style.top = "0";
        }"""
    )
    problems = layout_problems(page)
    assert any('label "8/255" reaches past the chart' in p for p in problems), problems
    assert any("lies on" in p and p.startswith("legend") for p in problems), problems
