"""A check described in a file: ``robustness evaluate --config check.toml``.

The file holds what the flags hold, under the flags' names with underscores; a flag
given on the command line wins over the file, and the file over the built-in default.
TOML (the standard library's ``tomllib``)::

    checkpoint = "checkpoints/mnist-tq2"
    preset = "standard"                 # AutoAttack's standard version
    attacks = ["level", "pgd"]          # run beside the preset's
    threat_models = ["bpda", "gradient_free"]
    epsilons = ["2/255", "8/255"]       # numbers or fractions
    l2_epsilons = [0.5]
    samples = 200

    [params.square]                     # like --set square.queries=1000
    queries = 1000

    [limits]                            # like --limit spsa=100
    spsa = 100

Paths are taken relative to the current directory, as on the command line. Unknown keys
are refused, so a misspelt budget cannot pass silently.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path
from typing import Any

from robustness.request import parse_radii

# Built-in defaults of the options a file may also set (help texts show them).
DEFAULTS: dict[str, Any] = {
    "out": Path("robustness-report"),
    "samples": 1000,
    "batch_size": 100,
    "seed": 0,
    "sanity_epsilon": "1.0",
    "sanity_samples": 200,
    "bpda_backward": "identity",
}
_PATHS = ("checkpoint", "surrogate", "eval_set", "out")
_LISTS = ("attacks", "threat_models")
_RADII = ("epsilons", "l2_epsilons")
_SCALARS = {
    "preset": str,
    "stem": str,
    "time_budget": float,
    "samples": int,
    "batch_size": int,
    "seed": int,
    "sanity_samples": int,
    "bpda_backward": str,
    "threads": int,
}
KEYS = (*_PATHS, *_LISTS, *_RADII, *_SCALARS, "sanity_epsilon", "params", "limits")


def load_config(path: Path) -> dict[str, Any]:
    """The file's settings, in the form the flags have after parsing (comma-separated
    lists, ``Path`` objects), with ``params`` and ``limits`` as tables."""
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not TOML: {exc}") from None
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown keys {', '.join(unknown)}; known: {', '.join(KEYS)}")
    return {key: _setting(key, value, path) for key, value in raw.items()}


def _setting(key: str, value: Any, path: Path) -> Any:
    label = f"{path}: {key}"
    if key in _PATHS:
        return Path(_typed(value, str, label))
    if key in _LISTS:
        items = value if isinstance(value, list) else [value]
        return ",".join(_typed(item, str, label) for item in items)
    if key in _RADII:
        return ",".join(f"{radius!r}" for radius in parse_radii(value, label))
    if key == "sanity_epsilon":
        return value if isinstance(value, str) else repr(_typed(value, float, label))
    if key in ("params", "limits"):
        return _tables(key, value, label)
    return _typed(value, _SCALARS[key], label)


def _typed(value: Any, kind: type, label: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{label} must be of type {kind.__name__}, got {value!r}")
    return value


def _tables(key: str, value: Any, label: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{label} must be a table")
    if key == "limits":
        return {attack: _typed(n, int, f"{label}.{attack}") for attack, n in value.items()}
    for attack, params in value.items():
        if not isinstance(params, dict):
            raise ValueError(f"{label}.{attack} must be a table of parameters")
    return {attack: dict(params) for attack, params in value.items()}


def apply_config(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every option the command line left unset from ``--config`` (when the command
    has it), then from ``DEFAULTS``. The file's ``params`` and ``limits`` come first and
    ``--set``/``--limit`` after them, so the flags win there too."""
    path = getattr(args, "config", None)
    config = load_config(path) if path is not None else {}
    values = vars(args)
    for key, value in config.items():
        if key not in ("params", "limits") and values.get(key) is None:
            values[key] = value
    for key, value in DEFAULTS.items():
        if key in values and values[key] is None:
            values[key] = value
    values["config_params"] = config.get("params", {})
    values["config_limits"] = config.get("limits", {})
    return args
