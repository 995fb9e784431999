"""The command line, end to end on tiny checkpoints written here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from robustness.cli import main
from robustness.cli_options import parse_epsilons, parse_limits, parse_overrides
from robustness.console import ProgressPrinter
from robustness.runner import Progress

FAST = ["--samples", "16", "--batch-size", "8", "--sanity-samples", "8", "--threads", "1"]


def test_evaluate_writes_reports_and_finds_the_surrogate(workspace, capsys):
    out = workspace / "out"
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(workspace / "checkpoints" / "mnist-cq2"),
            "--eval-set",
            str(workspace / "eval" / "mnist-test-first1000.npz"),
            "--attacks",
            "fgsm,pgd",
            "--set",
            "pgd.nb_iter=3",
            "--epsilons",
            "0.1,0.3",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0
    report = json.loads((out / "mnist-cq2.json").read_text())
    manifest = json.loads((workspace / "checkpoints" / "mnist-cq2" / "manifest.json").read_text())
    assert report["model"]["sha256"] == manifest["weights_sha256"]
    assert report["surrogate"]["name"] == "mnist-undefended"
    assert {r["threat_model"] for r in report["results"]} == {"transfer", "naive", "bpda"}
    assert report["attack_params"]["pgd"]["nb_iter"] == 3
    assert (out / "mnist-cq2.md").is_file() and (out / "mnist-cq2.png").is_file()
    printed = capsys.readouterr()
    assert "worst case linf eps=    0.3" in printed.out
    assert "fgsm / transfer" in printed.err


def test_reproduce_runs_every_checkpoint_of_each_present_dataset(workspace, capsys):
    out = workspace / "repro"
    code = main(
        [
            "reproduce",
            "--checkpoints",
            str(workspace / "checkpoints"),
            "--eval-dir",
            str(workspace / "eval"),
            "--attacks",
            "fgsm",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["mnist-cq2.json", "mnist-undefended.json"]
    summary = (out / "summary-mnist.md").read_text()
    assert "| mnist-undefended |" in summary and "| mnist-cq2 |" in summary
    assert "cifar10: skipped" in capsys.readouterr().out


def test_render_rewrites_markdown_and_summary_from_json(workspace, capsys):
    report_path = workspace / "out" / "mnist-cq2.json"
    if not report_path.exists():
        test_evaluate_writes_reports_and_finds_the_surrogate(workspace, capsys)
    (workspace / "out" / "mnist-cq2.md").unlink()
    assert main(["render", str(report_path), "--summary", "mnist"]) == 0
    assert (workspace / "out" / "mnist-cq2.md").read_text().startswith("# Robustness report")
    assert (workspace / "out" / "summary-mnist.md").is_file()


def test_time_budget_gives_a_stopped_report(workspace):
    out = workspace / "budget"
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(workspace / "checkpoints" / "mnist-cq2"),
            "--eval-set",
            str(workspace / "eval" / "mnist-test-first1000.npz"),
            "--attacks",
            "fgsm",
            "--time-budget",
            "0",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert code == 0
    report = json.loads((out / "mnist-cq2.json").read_text())
    assert report["status"] == "stopped" and report["results"] == []


def test_bad_arguments_are_reported_not_raised(workspace, capsys):
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(workspace / "checkpoints" / "mnist-cq2"),
            "--set",
            "pgd.steps=3",
            "--attacks",
            "pgd",
            *FAST,
        ]
    )
    assert code == 1
    assert "pgd has no parameter 'steps'" in capsys.readouterr().err


def test_list_shows_every_attack(capsys):
    assert main(["list"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:4] == ["attack", "norm", "access", "kind"]
    names = [line.split()[0] for line in lines]
    assert names == [
        "noise",
        "fgsm",
        "bim",
        "pgd",
        "pgd_l2",
        "apgd_ce",
        "apgd_ce_l2",
        "level",
        "level_8bit",
        "apgd_t",
        "apgd_t_l2",
        "fab_t",
        "fab_t_l2",
        "cw_l2",
        "square",
        "square_l2",
        "spsa",
        "hsj",
    ]


def test_argument_parsers():
    assert parse_epsilons("2/255, 8/255") == (2 / 255, 8 / 255)
    assert parse_epsilons("0.1,0.3") == (0.1, 0.3)
    with pytest.raises(ValueError, match="not a radius"):
        parse_epsilons("1/0")
    with pytest.raises(ValueError, match="not a radius"):
        parse_epsilons("__import__('os')")
    assert parse_overrides(["pgd.nb_iter=5", "pgd.restarts=2"]) == {
        "pgd": {"nb_iter": "5", "restarts": "2"}
    }
    with pytest.raises(ValueError, match="ATTACK.PARAM=VALUE"):
        parse_overrides(["pgd=5"])
    assert parse_limits(["spsa=100"]) == {"spsa": 100}
    with pytest.raises(ValueError, match="ATTACK=N"):
        parse_limits(["spsa=all"])


def test_python_dash_m_entry_point_and_package_boundaries():
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys, robustness.cli, robustness.runner, robustness.cli_reproduce;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('training', 'service')];"
        "assert not bad, bad;"
        # torchattacks (and the scipy.stats it loads) waits until one of its attacks runs.
        "assert 'torchattacks' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
    listed = subprocess.run(
        [sys.executable, "-m", "robustness", "list"],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    assert listed.stdout.splitlines()[1].startswith("noise")  # after the header row


def test_progress_printer_marks_each_unit_and_long_units_every_interval(capsys):
    now = [0.0]
    printer = ProgressPrinter("m ", every=60, clock=lambda: now[0])
    for batch, (seconds, epsilon) in enumerate(
        [(10, 0.1), (50, 0.1), (65, 0.1), (70, 0.1), (80, 0.2), (90, 0.2)], start=1
    ):
        now[0] = seconds
        printer(Progress(batch, 6, "spsa", "gradient_free", epsilon))
    lines = capsys.readouterr().err.splitlines()
    # The first batch, then 60 s after it, then the new radius; the rest stay quiet.
    assert lines == [
        "m [1/6 batches] spsa / gradient_free eps=0.1",
        "m [4/6 batches] spsa / gradient_free eps=0.1",
        "m [5/6 batches] spsa / gradient_free eps=0.2",
    ]


@pytest.mark.parametrize(
    ("checkpoint", "extra", "says"),
    [
        ("mnist-undefended", ["--threat-models", "bpda"], "bpda is unavailable"),
        ("mnist-undefended", ["--threat-models", "transfer"], "its own surrogate"),
        ("mnist-cq2", ["--attacks", "fgsm,fgsm"], "named twice"),
        ("mnist-cq2", ["--attacks", "pgd_l2", "--l2-epsilons", "29"], "(0, 28]"),
        ("mnist-cq2", ["--attacks", "spsa", "--threat-models", "naive"], "none of"),
    ],
)
def test_evaluate_applies_the_same_request_rules_as_the_service(
    workspace, capsys, checkpoint, extra, says
):
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(workspace / "checkpoints" / checkpoint),
            "--eval-set",
            str(workspace / "eval" / "mnist-test-first1000.npz"),
            "--out",
            str(workspace / "refused"),
            *FAST,
            *extra,
        ]
    )
    assert code == 1
    assert says in capsys.readouterr().err
    assert not (workspace / "refused").exists()


def test_render_leads_the_summary_with_the_verdict_from_matching_manifests(workspace, capsys):
    report_path = workspace / "out" / "mnist-cq2.json"
    if not report_path.exists():
        test_evaluate_writes_reports_and_finds_the_surrogate(workspace, capsys)
    checkpoints = workspace / "checkpoints"
    args = ["render", str(report_path), "--summary", "mnist", "--checkpoints", str(checkpoints)]
    assert main(args) == 0
    summary = (workspace / "out" / "summary-mnist.md").read_text()
    verdict = summary.split("## Verdict", 1)[1].split("\n\n")[1].splitlines()
    assert verdict[0].startswith("| model | defence | training | clean | L-inf 0.1 | L-inf 0.3 |")
    row = verdict[2].split(" | ")
    assert row[0] == "| mnist-cq2" and row[1] == "CQ, 2 levels" and row[2] == "standard"
    assert row[-1] == "- |"  # the test's checkpoint records no training time

    # The cost and the adversarial training come from the manifest of the attacked weights.
    manifest = json.loads((checkpoints / "mnist-cq2" / "manifest.json").read_text())
    manifest["metrics"]["train_seconds"] = 5400
    manifest.setdefault("training", {}).update(adversarial="pgd", adv_epsilon=0.3)
    trained = workspace / "trained"
    (trained / "mnist-cq2").mkdir(parents=True)
    (trained / "mnist-cq2" / "manifest.json").write_text(json.dumps(manifest))
    args[-1] = str(trained)
    assert main(args) == 0
    summary = (workspace / "out" / "summary-mnist.md").read_text()
    row = summary.split("## Verdict", 1)[1].split("\n\n")[1].splitlines()[2].split(" | ")
    assert row[2] == "pgd at 0.3" and row[-1] == "1.5 h |"

    # A run whose (last) session trained on a GPU says so: its wall time is not this machine's.
    manifest["training"]["device"] = "cuda"
    (trained / "mnist-cq2" / "manifest.json").write_text(json.dumps(manifest))
    assert main(args) == 0
    summary = (workspace / "out" / "summary-mnist.md").read_text()
    row = summary.split("## Verdict", 1)[1].split("\n\n")[1].splitlines()[2].split(" | ")
    assert row[-1] == "1.5 h (last session on a GPU) |"
    manifest["training"]["device"] = "auto"

    # A checkpoint retrained since the evaluation lends nothing to the old report.
    manifest["weights_sha256"] = "0" * 64
    other = workspace / "retrained"
    (other / "mnist-cq2").mkdir(parents=True)
    (other / "mnist-cq2" / "manifest.json").write_text(json.dumps(manifest))
    args[-1] = str(other)
    assert main(args) == 1
    assert "the checkpoint changed since the evaluation" in capsys.readouterr().err
    assert main(["render", str(report_path), "--checkpoints", str(checkpoints)]) == 1
    assert "--checkpoints needs --summary" in capsys.readouterr().err
