"""``/docs`` and ``/redoc`` in a real browser, offline: headless Chromium (Debian's
``chromium``) against ``python -m service`` renders both from this origin's files alone,
with no script error and no Content-Security-Policy violation but the one ReDoc's footer
logo asks for (an image on ReDoc's own site, which the policy refuses)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.helpers.servers import STOPPED_BY_SIGTERM, Server, start_server, stop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "docs"
WAIT_MS = 60_000

sync_api = pytest.importorskip("playwright.sync_api")
if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError(".ci/run installs chromium; it is missing")
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("docs")
    running = start_server(folder / "server.log", ["--checkpoint", str(checkpoints["mnist-tq2"])])
    yield running
    assert stop(running) in STOPPED_BY_SIGTERM, (folder / "server.log").read_text()


@pytest.mark.parametrize(
    ("path", "shows"),
    [("/docs", "#swagger-ui .opblock"), ("/redoc", "[data-section-id] h2")],
)
def test_the_documentation_renders_from_this_origin_alone(server: Server, path, shows) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        problems: list[str] = []
        fetched: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                problems.append(message.text) if message.type in ("error", "warning") else None
            ),
        )
        page.on("request", lambda request: fetched.append(request.url))
        page.goto(f"{server.url}{path}")
        page.wait_for_selector(shows, timeout=WAIT_MS)
        assert "classify" in page.inner_text("body").lower()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{path.strip('/')}.png"))
        browser.close()
    outside = [url for url in fetched if not url.startswith((server.url, "data:", "blob:"))]
    if path == "/redoc":
        # ReDoc's footer asks for its logo from its own site; the policy refuses it.
        logo = "https://cdn.redoc.ly/redoc/logo-mini.svg"
        assert outside == [logo]
        problems = [p for p in problems if logo not in p]
    else:
        assert outside == []
    assert problems == []
