"""The web console opened in Chromium (tests/browser.py) against a real service: a fresh
page per test that fails the test on any script error, CSP violation or 404."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.service.helpers.servers import STOPPED_BY_SIGTERM, Server, start_server, stop

# Generous: the machine is shared, and a job process imports torch before it starts.
WAIT_MS = 240_000


@contextmanager
def admin_console_server(folder: Path, checkpoints: list[Path], token: str) -> Iterator[Server]:
    """A real service with an admin token and its own job store in ``folder``, serving
    ``checkpoints``; stopped with SIGTERM afterwards (its log shown if it did not stop so)."""
    arguments = [arg for checkpoint in checkpoints for arg in ("--checkpoint", str(checkpoint))]
    running = start_server(
        folder / "server.log",
        arguments,
        {
            "QUSEC_ADMIN_TOKEN": token,
            "QUSEC_ROBUSTNESS_DB": str(folder / "jobs.sqlite3"),
            "QUSEC_ROBUSTNESS_THREADS": "1",
        },
    )
    yield running
    assert stop(running) in STOPPED_BY_SIGTERM, (folder / "server.log").read_text()


@contextmanager
def console_page(browser, url: str, width: int = 1100, height: int = 900) -> Iterator:
    context = browser.new_context(
        viewport={"width": width, "height": height}, accept_downloads=True
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console {message.type}: {message.text}")
            if message.type == "error"
            # Refusals the tests provoke on purpose (a wrong token) log a line of their own.
            and "the server responded with a status of 40" not in message.text
            else None
        ),
    )
    # Whatever the page or the browser asks for exists: no 404 (a favicon included).
    page.on(
        "response",
        lambda response: problems.append(f"404 {response.url}") if response.status == 404 else None,
    )
    page.goto(f"{url}/")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    try:
        yield page
    finally:
        context.close()
    assert problems == [], problems


def use_token(page, token: str) -> None:
    page.fill("#admin-token", token)
    page.click("#token-form button[type=submit]")
    page.locator("#check-form").wait_for(state="visible", timeout=WAIT_MS)
