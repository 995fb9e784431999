"""Chromium for the console's browser tests (skipped, saying why, without it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser import chromium


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with chromium() as launched:
        yield launched
