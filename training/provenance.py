"""Where a checkpoint came from: the git revision of the code and the time it was made."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


def git_revision() -> str:
    """The commit the code was at, with ``-dirty`` if tracked files had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
