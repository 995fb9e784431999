"""The console's reports in Chromium, against ``python -m service`` serving the shipped
MNIST and CIFAR-10 models: three real checks (one on an uploaded labelled set) are listed,
filtered, opened, compared and downloaded; charts and legends are checked on the laid-out
page for clipped and overlapping labels. Screenshots go to test-artifacts/console/.

The tests run in order and build on each other's checks (a module of one scenario).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.evalset import load_eval_set
from models.registry import DATASETS
from tests.browser import layout_problems, shoot
from tests.service.helpers.console import (
    WAIT_MS,
    admin_console_server,
    console_page,
    use_token,
)
from tests.service.helpers.servers import Server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "console-reports-token-0123456789abcdef"
REPORT = "#robustness-report"
CIFAR10_CLASSES = DATASETS["cifar10"].class_names


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("console-reports")
    checkpoints = [ROOT / "checkpoints" / "mnist-tq2", ROOT / "checkpoints" / "cifar10-tq4"]
    with admin_console_server(folder, checkpoints, TOKEN) as running:
        yield running


@pytest.fixture
def page(browser, server: Server) -> Iterator:
    with console_page(browser, server.url) as opened:
        use_token(opened, TOKEN)
        yield opened


def labelled_set(tmp_path: Path) -> Path:
    """Twenty real MNIST test digits with their labels, as an operator would upload them."""
    data = load_eval_set(ROOT / "data" / "eval" / "mnist-test-first1000.npz")
    images = (data.images[100:120, 0].numpy() * 255).round().astype(np.uint8)  # (N, H, W)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, labels=data.labels[100:120].numpy())
    path = tmp_path / "my-digits.npz"
    path.write_bytes(buffer.getvalue())
    return path


def run_check(page, model: str, attacks: str, radii: str, samples: str, upload=None) -> str:
    """Start a check from the Admin form and wait until it is done; returns its id."""
    page.select_option("#check-model", model)
    page.fill("#check-attacks", attacks)
    page.fill("#check-epsilons", radii)
    page.fill("#check-samples", samples)
    page.fill("#check-budget", "300")
    if upload is not None:
        page.set_input_files("#check-upload", str(upload))
    before = page.locator("#job-id").inner_text()
    page.click("#check-start")
    page.wait_for_function(
        "(before) => document.querySelector('#job-id').textContent !== before"
        " && ['done', 'failed', 'timed_out'].includes("
        "document.querySelector('#job-status').textContent)",
        arg=before,
        timeout=WAIT_MS,
    )
    assert page.locator("#job-status").inner_text() == "done", page.locator(
        "#job-error"
    ).inner_text()
    return page.locator("#job-id").inner_text()


def rows(page) -> list[str]:
    page.wait_for_function(
        "() => !document.querySelector('#checks-count').textContent.startsWith('Listing')"
    )
    return page.locator("#checks-body tr").evaluate_all("rows => rows.map(r => r.dataset.job)")


CHECKS: dict[str, str] = {}


def test_three_checks_are_listed_newest_first_and_filtered(page, tmp_path) -> None:
    CHECKS["bundled"] = run_check(page, "mnist-tq2", "noise, fgsm", "0.1, 0.3", "20")
    CHECKS["uploaded"] = run_check(
        page, "mnist-tq2", "noise, fgsm", "0.1, 0.3", "20", upload=labelled_set(tmp_path)
    )
    CHECKS["cifar"] = run_check(page, "cifar10-tq4", "noise, fgsm", "2/255, 8/255", "10")
    page.click("#checks-reload")
    assert rows(page) == [CHECKS["cifar"], CHECKS["uploaded"], CHECKS["bundled"]]
    uploaded = page.locator(f"#checks-body tr[data-job='{CHECKS['uploaded']}']")
    assert "20 uploaded" in uploaded.inner_text()
    cifar = page.locator(f"#checks-body tr[data-job='{CHECKS['cifar']}']").inner_text()
    assert "L-inf 2/255, 8/255" in cifar  # the radii as they were typed
    # Filters: a model, a status, words.
    page.select_option("#checks-model", "mnist-tq2")
    page.wait_for_function("() => document.querySelectorAll('#checks-body tr').length === 2")
    assert rows(page) == [CHECKS["uploaded"], CHECKS["bundled"]]
    page.fill("#checks-search", "uploaded")
    assert rows(page) == [CHECKS["uploaded"]]
    assert "1 of 2 checks" in page.locator("#checks-count").inner_text()
    page.fill("#checks-search", "")
    page.select_option("#checks-model", "")
    page.select_option("#checks-filter-status", "failed")
    page.wait_for_function("() => document.querySelectorAll('#checks-body tr').length === 0")
    assert "No checks match" in page.locator("#checks-count").inner_text()
    page.select_option("#checks-filter-status", "done")
    page.wait_for_function("() => document.querySelectorAll('#checks-body tr').length === 3")
    shoot(page, "console", "checks")


def test_a_late_listing_never_replaces_the_one_the_filters_ask_for(page) -> None:
    """Two filters changed in quick succession: the first listing's answer is held back by
    the test until the second has been shown. The console cancels the first, so the list
    stays what the filters now say (without the cancel this test fails: the first request
    never ends while held)."""
    if "cifar" not in CHECKS:
        pytest.skip("the checks of the first test did not run")
    assert rows(page) == [CHECKS["cifar"], CHECKS["uploaded"], CHECKS["bundled"]]
    held = []

    def hold_unfiltered(route) -> None:
        if "status=" in route.request.url:
            route.continue_()
        else:
            held.append(route)

    page.route("**/robustness-check?*", hold_unfiltered)
    with page.expect_request(lambda request: "model=mnist-tq2" in request.url):
        page.select_option("#checks-model", "mnist-tq2")  # every status: held back
    with page.expect_event(
        "requestfailed", lambda request: request.url == held[0].request.url, timeout=WAIT_MS
    ):
        page.select_option("#checks-filter-status", "failed")  # cancels the held one
    page.wait_for_function("() => document.querySelectorAll('#checks-body tr').length === 0")
    assert rows(page) == []
    assert "No checks match" in page.locator("#checks-count").inner_text()
    assert "Could not list" not in page.locator("#checks-count").inner_text()
    page.unroute("**/robustness-check?*")
    page.select_option("#checks-filter-status", "")
    page.wait_for_function("() => document.querySelectorAll('#checks-body tr').length === 2")
    assert rows(page) == [CHECKS["uploaded"], CHECKS["bundled"]]


def open_check(page, job_id: str) -> None:
    page.click(f"#checks-body tr[data-job='{job_id}'] button:has-text('Open')")
    page.locator(f"{REPORT} article[aria-label$='{job_id[:8]}']").wait_for(timeout=WAIT_MS)


def test_a_cifar_report_names_classes_and_marks_the_radii_as_given(page) -> None:
    if "cifar" not in CHECKS:
        pytest.skip("the checks of the first test did not run")
    open_check(page, CHECKS["cifar"])
    report = page.locator(REPORT)
    ticks = (
        report.locator("svg[role=img]")
        .first.locator("text.tick")
        .evaluate_all("texts => texts.map((t) => t.textContent)")
    )
    assert ticks == ["0", "2/255", "8/255"]
    # Every prediction and label in the gallery is a CIFAR-10 class name, not an index.
    text = "elements => elements.map((e) => e.textContent)"  # closed disclosures included
    captions = report.locator(".examples figcaption").evaluate_all(text)
    predicted = [c.rsplit("predicted ", 1)[1] for c in captions if "predicted" in c]
    notes = report.locator(".examples .example p").evaluate_all(text)
    labels = [re.search(r"label (\w+):", note).group(1) for note in notes]
    assert predicted and labels
    assert set(predicted) | set(labels) <= set(CIFAR10_CLASSES), (predicted, labels)
    assert layout_problems(page, REPORT) == []
    shoot(page, "console", "report-cifar10")


def test_the_chart_groups_and_hides_series_without_clipping(page) -> None:
    if "bundled" not in CHECKS:
        pytest.skip("the checks of the first test did not run")
    open_check(page, CHECKS["bundled"])
    chart = page.locator(f"{REPORT} figure.chart").first
    entries = chart.locator(".legend li")
    assert entries.count() == 5  # the worst case and four threat models
    # One line per attack instead: noise and fgsm, over the worst case.
    chart.locator("select.grouping").select_option("attack")
    assert [t.strip() for t in entries.all_inner_texts()] == [
        "worst case over every attack (the headline)",
        "noise",
        "fgsm",
    ]
    chart.locator("select.grouping").select_option("threat:bpda")
    assert [t.strip() for t in entries.all_inner_texts()][1:] == ["fgsm"]
    # A legend entry hides its line, and shows it again.
    toggle = entries.nth(1).locator("button")
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "false"
    assert chart.locator("g[data-series='1']").is_hidden()
    toggle.click()
    assert chart.locator("g[data-series='1']").is_visible()
    colours = chart.locator("svg[role=img] polyline").evaluate_all(
        "lines => lines.map(l => [l.getAttribute('stroke'), l.getAttribute('stroke-dasharray')]"
        ".join(' '))"
    )
    assert len(colours) == len(set(colours))
    assert layout_problems(page, REPORT) == []
    # Narrow, as on a phone: the charts shrink with their labels, the legend wraps.
    page.set_viewport_size({"width": 360, "height": 800})
    assert layout_problems(page, REPORT) == []
    page.set_viewport_size({"width": 1100, "height": 900})
    shoot(page, "console", "report-mnist")


def test_two_checks_are_compared_side_by_side(page) -> None:
    if "uploaded" not in CHECKS:
        pytest.skip("the checks of the first test did not run")
    for job_id in (CHECKS["bundled"], CHECKS["uploaded"]):
        page.check(f"#checks-body tr[data-job='{job_id}'] input[type=checkbox]")
    page.click("#checks-compare")
    compare = page.locator(f"{REPORT} .compare")
    compare.wait_for(timeout=WAIT_MS)
    table = compare.locator("table.differences tbody tr").all_inner_texts()
    assert [row.split("\t")[:2] for row in table] == [["L-inf", "0.1"], ["L-inf", "0.3"]]
    assert all("points" in row for row in table)
    # A is the older check: the bundled set; B the uploaded one.
    sides = compare.locator(".side h4").all_inner_texts()
    assert CHECKS["bundled"][:8] in sides[0] and CHECKS["uploaded"][:8] in sides[1]
    first, second = (compare.locator(".side").nth(i).bounding_box() for i in (0, 1))
    assert first["x"] + first["width"] <= second["x"]  # side by side at 1100 px
    assert layout_problems(page, REPORT) == []
    shoot(page, "console", "compare")


def test_a_report_downloads_as_json_and_as_the_html_page(page) -> None:
    if "cifar" not in CHECKS:
        pytest.skip("the checks of the first test did not run")
    row = f"#checks-body tr[data-job='{CHECKS['cifar']}']"
    with page.expect_download(timeout=WAIT_MS) as saved:
        page.click(f"{row} button:has-text('JSON')")
    download = saved.value
    assert download.suggested_filename.startswith("cifar10-tq4-")
    assert download.suggested_filename.endswith(f"-{CHECKS['cifar'][:8]}.json")
    report = json.loads(Path(download.path()).read_text())
    assert report["model"]["name"] == "cifar10-tq4"
    assert report["model"]["class_names"][3] == "cat"
    with page.expect_download(timeout=WAIT_MS) as saved:
        page.click(f"{row} button:has-text('HTML')")
    html = Path(saved.value.path()).read_text()
    assert saved.value.suggested_filename.endswith(".html")
    assert html.startswith("<!doctype html>") and "Robustness report: cifar10-tq4" in html
    assert "Saved" in page.locator("#robustness-status").inner_text()
