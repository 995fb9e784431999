"""Options for the whole suite.

``--official-data DIR`` says where the official dataset files are (``DIR/mnist``,
``DIR/cifar10``), for the slow tests that compare shipped things with them. It is a pytest
option rather than an environment variable: the service refuses any ``QUSEC_*`` variable that
names none of its settings, so a test variable in that namespace, left exported in a shell,
would stop ``make serve`` there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

# Beside the checkout, where the Makefile's training targets read them.
DEFAULT_OFFICIAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--official-data",
        metavar="DIR",
        type=Path,
        default=DEFAULT_OFFICIAL_DATA,
        help="folder holding the official dataset files, one subfolder per dataset "
        f"(default: {DEFAULT_OFFICIAL_DATA}); tests that need them skip without them",
    )


@pytest.fixture(scope="session")
def official_data(request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """``official_data("mnist")``: that dataset's official files, or the test skips."""
    root: Path = request.config.getoption("official_data")

    def folder(dataset: str) -> Path:
        path = root / dataset
        if not path.is_dir():
            pytest.skip(f"the official {dataset} files are not at {path} (--official-data DIR)")
        return path

    return folder
