"""Headless Chromium for the tests that look at pages: Debian's ``chromium`` package, driven
by Playwright for Python through its executable path (no browser is ever downloaded), and
the layout checks those tests share.

Without the executable (or Playwright) the tests that need it skip with a one-line reason;
under CI (``CI`` set), where ``.ci/run`` installs it, its absence is an error instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def playwright_or_skip():
    """Playwright's sync API, once Chromium is known to be there; else the test skips."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            raise RuntimeError(".ci/run installs chromium; it is missing")
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium fonts-dejavu-core)")
    return sync_api


@contextmanager
def chromium() -> Iterator:
    sync_api = playwright_or_skip()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


def shoot(page, folder: str, name: str) -> Path:
    """A full-page screenshot under test-artifacts/ (ignored by git), for a person to see."""
    path = ARTIFACTS / folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path


# What a reader would see as broken, measured on the laid-out page: a chart's text reaching
# past its drawing or lying on another text, legend entries on top of each other or cut off.
_LAYOUT_PROBLEMS = """(root) => {
    const problems = [];
    const visible = (r) => r.width > 0 && r.height > 0;
    const overlap = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5
        && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5;
    const scope = root ? document.querySelector(root) : document;
    for (const chart of scope.querySelectorAll("svg[role=img]")) {
        const frame = chart.getBoundingClientRect();
        if (!visible(frame)) continue;
        const name = chart.getAttribute("aria-label");
        const texts = [...chart.querySelectorAll("text")]
            .map((t) => [t.textContent, t.getBoundingClientRect()]).filter(([, r]) => visible(r));
        if (!texts.length) problems.push(`${name}: no text laid out`);
        for (const [text, r] of texts) {
            if (r.left < frame.left - 0.5 || r.right > frame.right + 0.5
                || r.top < frame.top - 0.5 || r.bottom > frame.bottom + 0.5) {
                problems.push(`${name}: label "${text}" reaches past the chart`);
            }
        }
        for (let i = 0; i < texts.length; i += 1) {
            for (let j = i + 1; j < texts.length; j += 1) {
                if (overlap(texts[i][1], texts[j][1])) {
                    problems.push(`${name}: "${texts[i][0]}" lies on "${texts[j][0]}"`);
                }
            }
        }
    }
    for (const legend of scope.querySelectorAll(".legend")) {
        const items = [...legend.children].map((li) => [li.textContent.trim(), li])
            .filter(([, li]) => visible(li.getBoundingClientRect()));
        for (let i = 0; i < items.length; i += 1) {
            const [text, li] = items[i];
            if (li.scrollWidth > li.clientWidth + 1) problems.push(`legend "${text}" is cut off`);
            for (let j = i + 1; j < items.length; j += 1) {
                if (overlap(li.getBoundingClientRect(), items[j][1].getBoundingClientRect())) {
                    problems.push(`legend "${text}" lies on "${items[j][0]}"`);
                }
            }
        }
    }
    return problems;
}"""


def layout_problems(page, root: str | None = None) -> list[str]:
    """Clipped or overlapping chart labels and legend entries under ``root`` (a selector)."""
    return page.evaluate(_LAYOUT_PROBLEMS, root)


def chart_count(page, root: str | None = None) -> int:
    """How many charts under ``root`` are laid out (visible)."""
    return page.evaluate(
        """(root) => [...(root ? document.querySelector(root) : document)
            .querySelectorAll("svg[role=img]")]
            .filter((s) => s.getBoundingClientRect().width > 0).length""",
        root,
    )
