"""Radii as the operator wrote them ("8/255"), shown beside the numbers the suite ran on.

A check's request may give its radii as fractions (``robustness.request.parse_radius``);
the suite runs on the floats, and its report holds floats. Every answer that shows a
radius also gets an ``epsilon_label``: the radius exactly as the request wrote it, or,
for a radius the request left to the dataset's defaults, as the suite's tables write it
(``robustness.request.format_eps``: ``2/255``, ``0.3``).
"""

from __future__ import annotations

from typing import Any

from robustness.request import format_eps

# Keys whose values hold no radius: base64 images are the bulk of a report.
_SKIPPED = frozenset({"images", "attack_params", "gradient_probes", "versions"})


def label_table(request: dict[str, Any], given: dict[str, Any] | None) -> dict[str, str]:
    """repr(radius) -> its label, for every radius of the resolved ``request``."""
    given = given or {}
    table: dict[str, str] = {}
    for name in ("epsilons", "l2_epsilons"):
        written = given.get(name)
        values = request.get(name) or []
        labels = written if written is not None and len(written) == len(values) else values
        for value, label in zip(values, labels, strict=True):
            table.setdefault(repr(float(value)), _label(label))
    sanity = request.get("sanity_epsilon")
    if sanity is not None:
        table.setdefault(repr(float(sanity)), _label(given.get("sanity_epsilon", sanity)))
    return table


def _label(written: Any) -> str:
    return written.strip() if isinstance(written, str) else format_eps(float(written))


def add_labels(node: Any, table: dict[str, str]) -> None:
    """Give every mapping in ``node`` that has a numeric ``epsilon`` its ``epsilon_label``
    (in place; a radius not in the table is written as the suite's tables write it)."""
    if isinstance(node, list):
        for item in node:
            add_labels(item, table)
    elif isinstance(node, dict):
        epsilon = node.get("epsilon")
        if isinstance(epsilon, int | float) and not isinstance(epsilon, bool):
            node["epsilon_label"] = table.get(repr(float(epsilon))) or format_eps(epsilon)
        for key, value in node.items():
            if key not in _SKIPPED and isinstance(value, dict | list):
                add_labels(value, table)
