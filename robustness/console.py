"""What the command line prints for a person watching: progress lines and a report's summary."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from robustness.render import format_eps
from robustness.report import fired_flags
from robustness.runner import Progress


class ProgressPrinter:
    """Stderr lines for a person watching: one when a unit starts, and one at least every
    ``every`` seconds within a long unit (a query attack's unit can run for half an hour)."""

    def __init__(self, label: str = "", every: float = 60.0, clock=time.monotonic) -> None:
        self.label, self.every, self.clock = label, every, clock
        self.last_unit, self.last_time = None, clock()

    def __call__(self, progress: Progress) -> None:
        unit = (progress.attack, progress.threat_model, progress.epsilon)
        now = self.clock()
        if unit == self.last_unit and now - self.last_time < self.every:
            return
        self.last_unit, self.last_time = unit, now
        print(
            f"{self.label}[{progress.done_batches}/{progress.total_batches} batches] "
            f"{progress.attack} / {progress.threat_model} eps={format_eps(progress.epsilon)}",
            file=sys.stderr,
            flush=True,
        )


def print_summary(report: dict, paths: list[Path]) -> None:
    print(
        f"{report['model']['name']}: status {report['status']}, "
        f"clean accuracy {100 * report['clean_accuracy']:.1f}% on {report['samples']} images"
    )
    headlines = [("worst case", report["worst_case"])]
    headlines.append(("8-bit grid", report.get("worst_case_8bit") or []))
    for title, rows in headlines:
        for w in rows:
            print(
                f"  {title} {w['norm']:4} eps={format_eps(w['epsilon']):>7}: "
                f"{100 * w['robust_accuracy']:5.1f}%  ({w['attack']} / {w['threat_model']}, "
                f"{w.get('attack_set', 'suite')}, n={w['samples']})"
            )
    print(f"  masking flags fired: {', '.join(fired_flags(report)) or 'none'}")
    for path in paths:
        print(f"  wrote {path}")
