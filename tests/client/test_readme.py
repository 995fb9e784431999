"""The README's examples work as pasted from the repository's root: its ``curl`` lines and its
Python-client and ``tritonclient`` programs, each run as its own process against the real
service (at the test server's port instead of 8000), and each printed line is what the
README's comment beside the ``print`` says."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.client.conftest import ADMIN_TOKEN, ROOT

README = (ROOT / "README.md").read_text()
FENCED = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXPECTED = re.compile(r"^\s*print\(.*\)  # (?P<expected>.+)$", re.MULTILINE)
CURL_LINES = [
    line
    for lang, block in FENCED.findall(README)
    if lang == "sh"
    for line in block.splitlines()
    if line.startswith("curl ")
]
PROGRAMS = [block for lang, block in FENCED.findall(README) if lang == "python"]


def at(server, text: str) -> str:
    return text.replace("127.0.0.1:8000", server.url.removeprefix("http://"))


def test_the_readme_shows_curl_and_both_clients() -> None:
    assert len(CURL_LINES) >= 3
    assert any("from client import Client" in p for p in PROGRAMS)
    assert any("from client import AsyncClient" in p for p in PROGRAMS)
    assert any("import tritonclient.http" in p for p in PROGRAMS)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("line", CURL_LINES)
def test_each_curl_line_classifies_a_sample(server, line) -> None:
    run = subprocess.run(
        ["bash", "-c", at(server, line)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    expected = ("cat", "cifar10-tq4") if "photo" in line else ("7", "mnist-pgd")
    assert (answer["class_name"], answer["model"]["name"]) == expected


def run_program(server, program: str) -> None:
    environment = {**os.environ, "QUSEC_ADMIN_TOKEN": ADMIN_TOKEN}
    run = subprocess.run(
        [sys.executable, "-c", at(server, program)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    printed = run.stdout.splitlines()
    for expected in EXPECTED.finditer(program):
        assert expected["expected"] in printed, (expected["expected"], printed)


@pytest.mark.parametrize(
    "program",
    [p for p in PROGRAMS if "admin_token" not in p],
    ids=lambda p: p.splitlines()[0],
)
def test_each_client_program_prints_what_the_readme_says(server, program) -> None:
    run_program(server, program)


@pytest.mark.slow
def test_the_robustness_check_program_runs_to_done(server) -> None:
    (program,) = [p for p in PROGRAMS if "admin_token" in p]
    run_program(server, program)
