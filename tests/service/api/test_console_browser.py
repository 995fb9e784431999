"""The web console in a real browser: headless Chromium (Debian's ``chromium`` package)
driven by Playwright, against ``python -m service`` on loopback with the shipped MNIST
checkpoints. No browser is downloaded: Playwright launches the system's executable.

Screenshots go to ``test-artifacts/console/`` (ignored by git) for a person to look at.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.evalset import load_eval_set
from tests.browser import shoot as shoot_in
from tests.service.helpers.console import (
    WAIT_MS,
    admin_console_server,
    console_page,
    use_token,
)
from tests.service.helpers.servers import Server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "console-test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("console")
    with admin_console_server(folder, [ROOT / "checkpoints" / "mnist-tq2"], TOKEN) as running:
        yield running


@pytest.fixture
def page(browser, server: Server) -> Iterator:
    """A fresh page on the console; fails the test on any script error, CSP violation or 404."""
    with console_page(browser, server.url) as opened:
        yield opened


def shoot(page, name: str) -> Path:
    return shoot_in(page, "console", name)


def mnist_digit(tmp_path: Path, index: int) -> tuple[Path, int]:
    data = load_eval_set(ROOT / "data" / "eval" / "mnist-test-first1000.npz")
    pixels = (data.images[index, 0].numpy() * 255).round().astype(np.uint8)
    path = tmp_path / f"mnist-{index}.png"
    Image.fromarray(pixels).save(path)
    return path, int(data.labels[index])


def image_levels(page, selector: str) -> list[int]:
    """The distinct grey levels of an <img>, read back through a canvas."""
    return page.evaluate(
        """(selector) => {
            const img = document.querySelector(selector);
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
            const context = canvas.getContext("2d");
            context.drawImage(img, 0, 0);
            const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
            const levels = new Set();
            for (let i = 0; i < data.length; i += 4) levels.add(data[i]);
            return [...levels].sort((a, b) => a - b);
        }""",
        selector,
    )


def test_models_and_a_real_digit_classified_with_what_the_model_saw(page, tmp_path) -> None:
    table = page.locator("#models-table")
    assert "mnist-tq2" in table.inner_text() and "99.1%" in table.inner_text()
    path, label = mnist_digit(tmp_path, 0)
    page.set_input_files("#classify-file", str(path))
    page.wait_for_function(
        "() => document.querySelector('#classify-status').textContent.startsWith('Classified')",
        timeout=WAIT_MS,
    )
    assert page.locator("#classify-label").inner_text().startswith(f"{label} (class {label})")
    assert page.evaluate("() => document.querySelector('#quantized-image').naturalWidth") == 28
    # Two levels: the 2-level quantizer's output; the input keeps MNIST's grey edges.
    assert image_levels(page, "#quantized-image") == [0, 255]
    assert len(image_levels(page, "#input-image")) > 2
    assert page.locator("#classify-top li").count() == 5
    assert "ms in the service" in page.locator("#classify-timing").inner_text()
    shoot(page, "classify")


def test_a_drawn_digit_is_classified(page) -> None:
    pad = page.locator("#drawing-pad")
    box = pad.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.85, steps=12)
    page.mouse.up()
    page.click("#drawing-classify")
    page.wait_for_function(
        "() => document.querySelector('#classify-status').textContent.includes('the drawing')"
        " && !document.querySelector('#classify-status').textContent.startsWith('Classifying')",
        timeout=WAIT_MS,
    )
    assert page.locator("#classify-status").inner_text().startswith("Classified the drawing")
    assert image_levels(page, "#quantized-image") == [0, 255]


def test_a_digit_dropped_on_the_page_is_classified(page, tmp_path) -> None:
    path, label = mnist_digit(tmp_path, 1)
    page.evaluate(
        """([data, name]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            const drop = new DragEvent("drop", { dataTransfer: transfer, bubbles: true });
            document.querySelector("#drop-zone").dispatchEvent(drop);
        }""",
        [base64.b64encode(path.read_bytes()).decode(), path.name],
    )
    status = page.locator("#classify-status")
    status.filter(has_text="Classified").wait_for(timeout=WAIT_MS)
    assert path.name in status.inner_text()
    assert page.locator("#classify-label").inner_text().startswith(f"{label} (class {label})")


def test_every_control_is_labelled_and_the_page_fits_a_phone(page) -> None:
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, canvas, button')]
            .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                     && !(e.tagName === 'BUTTON' && e.textContent.trim()))
            .map((e) => e.id || e.outerHTML)"""
    )
    assert unlabelled == []
    page.set_viewport_size({"width": 360, "height": 800})
    too_wide = page.evaluate(
        """() => [...document.querySelectorAll('body *')]
            .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1
                     && !e.closest('.scroll'))
            .map((e) => e.id || e.tagName)"""
    )
    assert too_wide == []
    # Keyboard: the file picker is reachable by Tab from the model picker.
    page.focus("#classify-model")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "classify-file"
    shoot(page, "narrow")


def test_a_wrong_token_shows_the_services_reason(page) -> None:
    page.fill("#admin-token", "not-the-token-at-all-0000")
    page.click("#token-form button[type=submit]")
    status = page.locator("#admin-status")
    status.filter(has_text="Token not accepted").wait_for(timeout=WAIT_MS)
    assert "403 forbidden" in status.inner_text()
    assert page.locator("#check-form").is_hidden()
    assert page.locator("#robustness-view").is_hidden()
    # The token field is emptied: the token lives in the script's memory, not the page.
    assert page.input_value("#admin-token") == ""
    shoot(page, "wrong-token")


def test_the_published_report_of_the_served_weights_comes_first_and_opens(page) -> None:
    """The shipped mnist-tq2's weights were evaluated in docs/results/mnist-tq2.json: it is
    the list's first entry, marked published, and opens in the report view."""
    published = json.loads((ROOT / "docs" / "results" / "mnist-tq2.json").read_text())
    use_token(page, TOKEN)
    row = page.locator("#published-body tr[data-published='mnist-tq2']")
    row.wait_for(timeout=WAIT_MS)
    assert "published" in row.inner_text() and "the dashboard shows it" in row.inner_text()
    assert page.locator("#checks-table tbody tr").first.get_attribute("data-published")
    row.locator("button:has-text('Open')").click()
    report = page.locator("#robustness-report article")
    heading = "Published report of mnist-tq2: mnist-tq2.json"
    report.filter(has_text=heading).wait_for(timeout=WAIT_MS)
    assert "come from it until a check that meets the bar" in report.inner_text()
    headline = report.locator("table.headline tbody tr").all_inner_texts()
    assert len(headline) == len(published["worst_case"]) and "77.6%" in " ".join(headline)
    shoot(page, "published-report")
    with page.expect_download(timeout=WAIT_MS) as saved:
        report.locator("button.download:has-text('JSON')").click()
    assert saved.value.suggested_filename == "mnist-tq2.json"
    assert json.loads(Path(saved.value.path()).read_text()) == published
    # The status filter "published" lists the published reports alone.
    page.select_option("#checks-filter-status", "published")
    page.wait_for_function("() => document.querySelectorAll('#checks-body tr').length === 0")
    assert page.locator("#published-body tr").count() == 1


def test_admin_runs_a_check_and_reads_its_chart_flags_and_gallery(page) -> None:
    use_token(page, TOKEN)
    page.fill("#check-attacks", "noise, fgsm")
    page.fill("#check-epsilons", "0.1, 0.3")
    page.fill("#check-samples", "20")
    page.fill("#check-budget", "200")
    page.click("#check-start")
    page.wait_for_function(
        "() => ['done', 'failed', 'timed_out'].includes(document.querySelector('#job-status')"
        ".textContent)",
        timeout=WAIT_MS,
    )
    assert page.locator("#job-status").inner_text() == "done", page.locator(
        "#job-error"
    ).inner_text()
    assert page.evaluate("() => document.querySelector('#job-progress').value") == 1
    page.click("#job-open")
    report = page.locator("#robustness-report")
    report.locator("svg polyline").first.wait_for(state="attached", timeout=WAIT_MS)
    # By default one line per threat model (its attacks' lowest), over the worst case.
    series = {
        "transfer: lowest of 1 attack",
        "naive white-box: lowest of 1 attack",
        "BPDA: lowest of 1 attack",
        "gradient-free: lowest of 1 attack",
    }
    legend = report.locator(".legend li").all_inner_texts()
    assert {text.strip() for text in legend} == series | {
        "worst case over every attack (the headline)"
    }
    assert report.locator("svg polyline").count() == len(series) + 1
    assert "FIRED" in report.locator(".flags").inner_text()
    # One attack's examples are open, the first where the attack fooled the model.
    opened = report.locator("details[open]")
    assert opened.count() == 1
    assert opened.locator(".example").first.locator("img").count() == 4
    assert opened.locator(".fooled").count() >= 1
    opened.scroll_into_view_if_needed()
    shoot(page, "report")
    # The robustness view lists the check.
    page.click("#checks-reload")
    page.locator("#checks-body tr").first.wait_for(timeout=WAIT_MS)
    job_id = page.locator("#job-id").inner_text()
    assert page.locator(f"#checks-body tr[data-job='{job_id}']").count() == 1


def test_admin_cancels_a_check(page) -> None:
    use_token(page, TOKEN)
    page.fill("#check-attacks", "bim, pgd")
    page.fill("#check-samples", "100")
    page.click("#check-start")
    page.locator("#job-cancel").wait_for(state="visible", timeout=WAIT_MS)
    page.click("#job-cancel")
    page.locator("#job-status").filter(has_text="cancelled").wait_for(timeout=WAIT_MS)
    assert page.locator("#job-cancel").is_hidden()
