"""The ``standard`` preset (AutoAttack's standard version) and checks described in a file.

The budgets are read from the preset, never repeated here: what is checked is that the
preset names AutoAttack's four attacks per norm, that a run of it reaches torchattacks
with exactly the preset's budgets, and that its rows say they come from that set.
"""

from __future__ import annotations

import json

import pytest

from robustness.attacks import ATTACKS
from robustness.attacks._torchattacks import NORM_NAMES
from robustness.attacks.apgd_ce import APGDCE
from robustness.attacks.apgd_t import APGDT
from robustness.attacks.fab_t import FABT
from robustness.attacks.square import Square
from robustness.cli import main
from robustness.presets import STANDARD, SUITE, attack_set_of
from robustness.request import with_params

# Ours -> the attribute of the torchattacks object it sets (the preset's budgets are checked
# on the object that runs, not on our dataclass).
LIBRARY_NAMES = {
    "steps": "steps",
    "restarts": "n_restarts",
    "target_classes": "n_target_classes",
    "queries": "n_queries",
    "rho": "thr_decr",
    "p_init": "p_init",
    "rescale_schedule": "rescale_schedule",
}
KINDS = (APGDCE, APGDT, FABT, Square)
LIBRARY_CLASSES = {APGDCE: "APGD", APGDT: "APGDT", FABT: "FAB", Square: "Square"}


def test_the_standard_preset_is_autoattacks_four_attacks_for_each_norm():
    for norm in ("linf", "l2"):
        attacks = [ATTACKS[name] for name in STANDARD.attacks if ATTACKS[name].norm == norm]
        # One each of APGD-CE (cross-entropy), APGD-T, FAB-T and Square, in that order.
        assert [next(k for k in KINDS if isinstance(a, k)) for a in attacks] == list(KINDS)
        assert attacks[0].loss == "ce"
    for name, params in STANDARD.params.items():
        # Every budget names a parameter the attack has, and the attack takes it.
        assert with_params(ATTACKS[name], params)
        assert attack_set_of(name, {**params, "unrelated": 1}) == "standard"
        changed = {**params, next(iter(params)): -1}
        assert attack_set_of(name, changed) == SUITE
    assert STANDARD.threat_models_for(quantized=False) == ("naive", "gradient_free")
    assert STANDARD.threat_models_for(quantized=True) == ("bpda", "gradient_free")


@pytest.fixture
def library_calls(monkeypatch):
    """Every torchattacks object our adapters run, by its class name."""
    import robustness.attacks._torchattacks as glue

    seen: dict[str, list] = {}
    real_call = glue.call

    def recording_call(attack, model_fn, x, y):
        seen.setdefault(type(attack).__name__, []).append(attack)
        return real_call(attack, model_fn, x, y)

    for module in {type(a).__module__ for a in ATTACKS.values()}:
        imported = __import__(module, fromlist=["_"])
        if getattr(imported, "call", None) is real_call:
            monkeypatch.setattr(imported, "call", recording_call)
    return seen


def _evaluate(workspace, out, *extra, samples: int = 3) -> dict:
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(workspace / "checkpoints" / "mnist-cq2"),
            "--eval-set",
            str(workspace / "eval" / "mnist-test-first1000.npz"),
            "--out",
            str(out),
            "--samples",
            str(samples),
            "--batch-size",
            str(samples),
            "--sanity-epsilon",
            "none",
            "--threads",
            "1",
            *extra,
        ]
    )
    assert code == 0
    return json.loads((out / "mnist-cq2.json").read_text())


@pytest.mark.slow
def test_a_tiny_run_of_the_standard_preset_runs_its_attacks_at_its_budgets(
    workspace, library_calls
):
    report = _evaluate(
        workspace, workspace / "standard", "--preset", "standard", "--epsilons", "0.3",
        "--l2-epsilons", "3", "--html",
    )  # fmt: skip
    rows = report["results"]
    assert {r["attack"] for r in rows} == set(STANDARD.attacks)
    # Through BPDA in front of the quantizer; Square queries the deployed model.
    assert {r["threat_model"] for r in rows} == set(STANDARD.threat_models)
    assert {r["attack_set"] for r in rows} == {"standard"}
    for name, budget in STANDARD.params.items():
        assert {k: report["attack_params"][name][k] for k in budget} == dict(budget)
    # What ran in torchattacks: the same budgets, on the library's objects.
    for name in STANDARD.attacks:
        kind = next(k for k in KINDS if isinstance(ATTACKS[name], k))
        ran = [
            attack
            for attack in library_calls[LIBRARY_CLASSES[kind]]
            if attack.norm == NORM_NAMES[ATTACKS[name].norm]
        ]
        assert ran, name
        for attack in ran:
            for ours, value in STANDARD.params[name].items():
                assert getattr(attack, LIBRARY_NAMES[ours]) == value, (name, ours)
    # The headline says which set each number comes from; the set's own headline is
    # complete and taken per sample, which is never above its lowest single attack.
    assert all(w["attack_set"] == "standard" for w in report["worst_case"])
    per_set = report["worst_case_per_attack_set"]
    assert {(w["attack_set"], w["norm"]) for w in per_set} == {
        ("standard", "linf"),
        ("standard", "l2"),
    }
    for entry in per_set:
        assert entry["complete_set"]
        assert entry["per_sample_accuracy"] <= entry["robust_accuracy"]
    page = (workspace / "standard" / "mnist-cq2.html").read_text()
    assert "<svg" in page and "AutoAttack's standard version" in page


def test_a_config_file_sets_the_check_and_flags_win_over_it(workspace, capsys):
    config = workspace / "check.toml"
    config.write_text(
        f"""
checkpoint = "{workspace / "checkpoints" / "mnist-cq2"}"
eval_set = "{workspace / "eval" / "mnist-test-first1000.npz"}"
attacks = ["fgsm", "pgd"]
threat_models = ["bpda"]
epsilons = ["8/255", 0.3]
samples = 12
batch_size = 6
sanity_epsilon = "none"

[params.pgd]
nb_iter = 4
step_ratio = 0.5

[limits]
pgd = 6
"""
    )
    out = workspace / "configured"
    code = main(
        ["evaluate", "--config", str(config), "--out", str(out), "--samples", "8"]
        + ["--set", "pgd.nb_iter=2", "--threads", "1"]
    )
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "mnist-cq2.json").read_text())
    request = report["request"]
    assert request["epsilons"] == [8 / 255, 0.3]
    assert (request["samples"], request["batch_size"], request["sanity_epsilon"]) == (8, 6, None)
    assert request["threat_models"] == ["bpda"] and request["attacks"] == ["fgsm", "pgd"]
    assert report["attack_params"]["pgd"]["nb_iter"] == 2  # the flag wins
    assert report["attack_params"]["pgd"]["step_ratio"] == 0.5  # the file's
    assert request["sample_limits"] == {"pgd": 6}
    assert {r["attack_set"] for r in report["results"]} == {SUITE}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("sampels = 3", "unknown keys sampels"),
        ("samples = 'many'", "samples must be of type int"),
        ("epsilons = ['8/0']", "not a radius"),
        ("preset = 'plus'", "unknown preset 'plus'"),
        ("attacks = ['pgd']\n[params.pgd]\nnb_itr = 3", "pgd has no parameter 'nb_itr'"),
        ("samples = [", "is not TOML"),
    ],
)
def test_a_bad_config_file_is_refused_with_the_reason(workspace, capsys, text, says):
    config = workspace / "bad.toml"
    config.write_text(text + "\n")
    code = main(
        [
            "evaluate",
            "--config",
            str(config),
            "--checkpoint",
            str(workspace / "checkpoints" / "mnist-cq2"),
            "--eval-set",
            str(workspace / "eval" / "mnist-test-first1000.npz"),
            "--out",
            str(workspace / "refused-config"),
        ]
    )
    assert code == 1
    assert says in capsys.readouterr().err
    assert not (workspace / "refused-config").exists()


def test_every_option_of_every_command_states_its_meaning(capsys):
    from robustness.cli import _parser

    parser = _parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001
    for name, command in commands.items():
        for action in command._actions:  # noqa: SLF001
            assert action.help, (name, action.dest)
        with pytest.raises(SystemExit):
            main([name, "--help"])
        shown = capsys.readouterr().out
        for dest, default in (("samples", "1000"), ("out", None), ("seed", "0")):
            if any(a.dest == dest for a in command._actions) and default:  # noqa: SLF001
                assert f"(default: {default})" in shown.replace("\n", " "), (name, dest)
