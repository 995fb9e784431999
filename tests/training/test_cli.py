"""``python -m training``: every option's help says what it is and its default, and a
finished run is only retrained over with ``--force`` while an interrupted one resumes."""

from __future__ import annotations

import argparse
import logging
import re

import pytest

from models.checkpoint import load_checkpoint
from training import resume
from training.cli import build_parser, main, radius

COMMANDS = ([], ["train"], ["export-evalset"], ["describe"])
# "  --levels LEVELS   help..." or "  --augment   help...": the invocation, then the help.
OPTION = re.compile(r"^  (?P<invocation>-\S+(?: \S+)*?)(?: {2,}(?P<help>.*))?$")


def options_of(help_text: str) -> dict[str, str]:
    """Each option's invocation and its help (continuation lines joined) from ``--help``."""
    found: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        match = OPTION.match(line)
        if match:
            current = match["invocation"]
            found[current] = match["help"] or ""
        elif current is not None and line.startswith(" " * 4) and line.strip():
            found[current] = f"{found[current]} {line.strip()}".strip()
        else:
            current = None
    return found


def help_of(command: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "(top)")
def test_every_option_says_what_it_is_and_its_default(command, capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    options = options_of(help_of(command, capsys))
    assert "-h, --help" in options
    for invocation, text in options.items():
        assert text, f"{invocation} has no help"
        takes_a_value = " " in invocation.split(", ")[-1]
        if takes_a_value:
            assert "(default: " in text or text.endswith("(required)"), invocation


def test_the_defaults_shown_are_the_parsers_own(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    options = options_of(help_of(["train"], capsys))
    assert options["--epochs EPOCHS"].endswith("(default: 6)")
    assert options["--batch-size BATCH_SIZE"].endswith("(default: 128)")
    assert options["--out OUT"].endswith("(required)")
    assert "(default: all)" in options["--limit-train LIMIT_TRAIN"]
    assert "--force" in options


def train_args(data_dir, out, *extra: str) -> list[str]:
    return [
        "train",
        "--dataset",
        "mnist",
        "--defense",
        "tq",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--limit-train",
        "64",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]


def test_a_finished_run_is_replaced_only_with_force(tmp_path, tiny_mnist, caplog) -> None:
    out = tmp_path / "out"
    assert main(train_args(tiny_mnist, out)) == 0
    weights = (out / "model.safetensors").read_bytes()

    with caplog.at_level(logging.ERROR, logger="training"):
        assert main(train_args(tiny_mnist, out, "--seed", "1")) == 2
    assert "--force" in caplog.text and str(out) in caplog.text
    assert (out / "model.safetensors").read_bytes() == weights
    assert load_checkpoint(out).manifest.training["seed"] == 0

    assert main(train_args(tiny_mnist, out, "--seed", "1", "--force")) == 0
    assert load_checkpoint(out).manifest.training["seed"] == 1
    assert (out / "model.safetensors").read_bytes() != weights


def test_an_interrupted_run_resumes_without_force(
    tmp_path, tiny_mnist, monkeypatch, caplog
) -> None:
    out = tmp_path / "out"
    assert main(train_args(tiny_mnist, out)) == 0  # a finished run...
    original = resume.save

    def save_then_crash(config, model, optimizer, epochs_done, history, *average):
        original(config, model, optimizer, epochs_done, history, *average)
        raise KeyboardInterrupt

    monkeypatch.setattr(resume, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):  # ...retrained with --force, cut after epoch 1
        main(train_args(tiny_mnist, out, "--seed", "1", "--force"))
    monkeypatch.setattr(resume, "save", original)
    state = out.with_name(".out.train-state")
    assert state.is_dir() and load_checkpoint(out).manifest.training["seed"] == 0

    with caplog.at_level(logging.INFO, logger="training"):
        assert main(train_args(tiny_mnist, out, "--seed", "1")) == 0  # no --force needed
    assert "resuming" in caplog.text
    manifest = load_checkpoint(out).manifest
    assert manifest.training["seed"] == 1 and len(manifest.training["history"]) == 2
    assert not state.exists()


def test_radii_take_the_forms_the_robustness_suite_takes() -> None:
    """`--adv-epsilon` and `--adv-step-size` accept what `robustness evaluate --epsilons` does,
    decimal numerators included, and refuse the rest with the option's own message."""
    assert radius("10/255") == pytest.approx(10 / 255)
    assert radius("2.5/255") == pytest.approx(2.5 / 255)
    for bad in ("2.5/", "8/0", "eight"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a number or fraction"):
            radius(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="outside"):
        radius("300/255")
