"""The Makefile's venv installs the CPU build of torch by default, and CUDA is one switch.

Read from ``make -n`` (what the recipe would run) and from the recipe run against a stand-in
interpreter whose pip fails, so nothing is installed and no index is asked.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def planned(tmp_path: Path, *variables: str) -> list[str]:
    """The commands ``make venv`` would run for a venv that does not exist yet."""
    result = subprocess.run(
        ["make", "-n", "venv", f"VENV={tmp_path / 'venv'}", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},  # no TORCH_* from the caller's environment
    )
    # Join continued lines: one command per entry.
    return result.stdout.replace("\\\n", " ").splitlines()


def pip_installs(commands: list[str]) -> list[str]:
    return [c for c in commands if "-m pip install" in c and "--upgrade pip" not in c]


def test_the_default_is_the_cpu_build_installed_before_anything_else(tmp_path) -> None:
    installs = pip_installs(planned(tmp_path))
    assert "'torch==2.13.0+cpu'" in installs[0]
    assert "--extra-index-url" not in installs[0]
    assert not any("torch==" in line for line in installs[1:])


def test_the_cpu_wheel_index_is_one_variable_and_cuda_another(tmp_path) -> None:
    index = "file:///srv/wheels/cpu"
    (torch_line, *_) = pip_installs(planned(tmp_path, f"TORCH_INDEX={index}"))
    assert f"--extra-index-url '{index}'" in torch_line
    assert "'torch==2.13.0+cpu'" in torch_line
    (torch_line, *_) = pip_installs(planned(tmp_path, "TORCH_REQUIREMENT=torch==2.13.0"))
    assert "'torch==2.13.0'" in torch_line


def test_without_the_cpu_wheel_make_says_which_variable_to_set(tmp_path) -> None:
    # A stand-in interpreter: everything succeeds but installing torch, which fails as pip
    # does when no index it knows carries the requirement.
    python = tmp_path / "python"
    python.write_text(
        '#!/bin/sh\ncase "$*" in *torch==*) echo "no matching distribution" >&2; exit 1;; esac\n'
    )
    python.chmod(0o755)
    result = subprocess.run(
        ["make", "venv", f"VENV={tmp_path / 'venv'}", f"PYTHON={python}", f"PY={python}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "TORCH_INDEX=" in result.stderr and "TORCH_REQUIREMENT=torch==2.13.0" in result.stderr
    assert "cleverhans" not in result.stdout  # it stopped at torch
    assert not (tmp_path / "venv" / ".installed").exists()
