"""Merging reports: a rerun's rows in place of the old ones, equal to one run of both."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest

from robustness.cli import main
from robustness.merge import MergeError, assemble_parts, merge_reports
from robustness.render import to_markdown
from robustness.request import SuiteRequest
from robustness.runner import plan_units, run_suite

# PGD and noise draw random numbers, so equal rows show the per-unit seeding at work.
BOTH = SuiteRequest(
    attacks=("noise", "fgsm", "pgd"),
    threat_models=("transfer", "naive", "bpda"),
    epsilons=(0.1, 0.3),
    samples=24,
    batch_size=8,
    attack_params={"pgd": {"nb_iter": 3}},
    sanity_epsilon=0.5,
    sanity_samples=8,
)


def _rows(report):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in report["results"]]


@pytest.fixture(scope="module")
def runs(masked, undefended, eval_set):
    """One run of everything; a run with PGD on 8 samples only; PGD rerun on all 24."""
    kwargs = {"surrogate": undefended}
    whole = run_suite(masked, eval_set, BOTH, **kwargs)
    first = run_suite(masked, eval_set, replace(BOTH, sample_limits={"pgd": 8}), **kwargs)
    pgd_only = replace(BOTH, attacks=("pgd",), sanity_epsilon=None)
    rerun = run_suite(masked, eval_set, pgd_only, **kwargs)
    return whole, first, rerun


def test_merged_report_equals_one_run_of_everything(runs):
    whole, first, rerun = runs
    assert {r["samples"] for r in first["results"] if r["attack"] == "pgd"} == {8}
    merged = merge_reports(first, rerun)
    assert _rows(merged) == _rows(whole)
    for key in ("worst_case", "worst_case_per_attack", "masking_flags", "attack_params"):
        assert merged[key] == whole[key], key
    assert merged["request"] == whole["request"]
    assert merged["status"] == "complete"
    assert [run["attacks"] for run in merged["merged_from"]] == [
        ["noise", "fgsm", "pgd"],
        ["pgd"],
    ]
    assert merged["seconds"] == pytest.approx(first["seconds"] + rerun["seconds"], abs=0.2)
    assert "Merged from 2 runs" in to_markdown(merged)


def test_runs_of_single_radii_merge_into_the_one_run_report(runs, masked, undefended, eval_set):
    """An expensive attack split into one run per radius, merged in any order."""
    whole, first, _ = runs
    pgd_only = replace(BOTH, attacks=("pgd",), sanity_epsilon=None)
    high, low = (
        run_suite(masked, eval_set, replace(pgd_only, epsilons=(eps,)), surrogate=undefended)
        for eps in (0.3, 0.1)
    )
    merged = merge_reports(first, high, low)
    assert _rows(merged) == _rows(whole)
    assert merged["request"] == whole["request"]
    assert merged["worst_case"] == whole["worst_case"]
    assert merged["skipped"] == whole["skipped"]
    assert merged["examples"] == whole["examples"]
    # After the first radius only, PGD's other rows are still the 8-sample ones.
    partly = {
        (r["epsilon"], r["samples"])
        for r in merge_reports(first, high)["results"]
        if r["attack"] == "pgd" and not r["sanity"]
    }
    assert partly == {(0.1, 8), (0.3, 24)}


def test_a_run_at_a_new_radius_adds_its_rows_and_the_request_lists_it(
    runs, masked, undefended, eval_set
):
    """A model published at one radius, attacked later at another: both radii's rows stay,
    the request asks for both, and the worst case gains the new radius."""
    whole, first, _ = runs
    extra = run_suite(
        masked,
        eval_set,
        replace(BOTH, attacks=("pgd",), epsilons=(0.2,), l2_epsilons=(), sanity_epsilon=None),
        surrogate=undefended,
    )
    merged = merge_reports(first, extra)
    assert merged["request"]["epsilons"] == sorted({*first["request"]["epsilons"], 0.2})
    old = [r for r in merged["results"] if r["epsilon"] != 0.2]
    assert _rows({"results": old}) == _rows(first)
    new = [r for r in merged["results"] if r["epsilon"] == 0.2]
    assert new and _rows({"results": new}) == _rows(extra)
    assert 0.2 in {row["epsilon"] for row in merged["worst_case"]}


def test_merge_refuses_a_single_radius_run_with_other_settings(runs):
    """Its rows would sit beside the base's other radii under one request's settings."""
    _, first, rerun = runs
    whole_pgd = copy.deepcopy(rerun)
    whole_pgd["request"]["attack_params"] = {"pgd": {"nb_iter": 7}}
    merge_reports(first, whole_pgd)  # every radius replaced: the part's settings stand
    one_radius = copy.deepcopy(whole_pgd)
    one_radius["request"]["epsilons"] = [0.3]
    one_radius["results"] = [r for r in one_radius["results"] if r["epsilon"] == 0.3]
    with pytest.raises(MergeError, match="attack_params of pgd, whose other radii stay"):
        merge_reports(first, one_radius)


def test_merge_leaves_its_inputs_alone(runs):
    _, first, rerun = runs
    before = copy.deepcopy((first, rerun))
    merge_reports(first, rerun)
    assert (first, rerun) == before


@pytest.mark.parametrize(
    ("field", "change", "message"),
    [
        ("seed", lambda r: r.update(seed=1), "seed differs"),
        ("model", lambda r: r["model"].update(sha256="other"), "model sha256 differs"),
        ("eval_set", lambda r: r["eval_set"].update(sha256="x"), "evaluation set sha256"),
        ("request", lambda r: r["request"].update(batch_size=5), "request batch_size differs"),
        ("surrogate", lambda r: r["surrogate"].update(sha256="s"), "surrogate sha256 differs"),
        ("versions", lambda r: r["versions"].update(torch="0"), "versions differs"),
    ],
)
def test_merge_refuses_runs_that_do_not_belong_together(runs, field, change, message):
    _, first, rerun = runs
    other = copy.deepcopy(rerun)
    change(other)
    with pytest.raises(MergeError, match=message):
        merge_reports(first, other)


def test_merge_command_writes_the_report_and_refuses_bad_files(runs, tmp_path, capsys):
    _, first, rerun = runs
    (tmp_path / "a.json").write_text(json.dumps(first))
    (tmp_path / "b.json").write_text(json.dumps(rerun))
    out = tmp_path / "merged" / "m.json"
    code = main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)])
    assert code == 0
    assert json.loads(out.read_text())["merged_from"][1]["attacks"] == ["pgd"]
    assert out.with_suffix(".md").is_file() and out.with_suffix(".png").is_file()

    (tmp_path / "junk.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "thin.json").write_text(
        json.dumps({k: v for k, v in rerun.items() if k != "results"})
    )
    capsys.readouterr()
    for bad, said in (
        ("junk.json", "is not JSON"),
        ("list.json", "is not a robustness report"),
        ("thin.json", "not a robustness report: no field"),
        ("missing.json", "cannot read"),
    ):
        code = main(["merge", str(tmp_path / "a.json"), str(tmp_path / bad), "--out", str(out)])
        assert code == 1
        assert said in capsys.readouterr().err
    code = main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", "m.md"])
    assert code == 1
    assert "--out must name a .json file" in capsys.readouterr().err


def test_parts_of_one_plan_assemble_into_the_one_run_report(runs, masked, undefended, eval_set):
    """Each unit run on its own (as workers of a split check do), then assembled."""
    whole = runs[0]
    units, _ = plan_units(BOTH, BOTH.resolved_attacks(), masked, undefended)
    parts = [
        run_suite(masked, eval_set, BOTH, surrogate=undefended, only_units=[index])
        for index in range(len(units))
    ]
    assert all(len(part["results"]) >= 1 for part in parts)
    assembled = assemble_parts(parts)
    assert _rows(assembled) == _rows(whole)
    for key in ("worst_case", "worst_case_per_attack", "masking_flags", "skipped", "request"):
        assert assembled[key] == whole[key], key
    assert assembled["status"] == "complete" and assembled["parts"] == len(units)
    with pytest.raises(MergeError, match="seed"):
        assemble_parts([parts[0], {**parts[1], "seed": 1}])


def test_merge_without_parts_derives_the_headline_and_flags_again(runs):
    whole = copy.deepcopy(runs[0])
    stale = {**whole, "worst_case": [], "masking_flags": whole["masking_flags"][:2]}
    stale.pop("worst_case_8bit")
    rederived = merge_reports(stale)
    for key in ("worst_case", "worst_case_8bit", "worst_case_per_attack", "masking_flags"):
        assert rederived[key] == whole[key], key
    assert _rows(rederived) == _rows(whole)
    assert rederived["seconds"] == whole["seconds"]


def test_merge_accepts_a_library_only_one_run_recorded(runs):
    first, rerun = copy.deepcopy(runs[1]), copy.deepcopy(runs[2])
    first["versions"].pop("torchattacks")  # a report from before the library was used
    merged = merge_reports(first, rerun)
    assert merged["versions"] == rerun["versions"]
    rerun["versions"]["torchattacks"] = "0"
    assert merge_reports(first, rerun)["versions"]["torchattacks"] == "0"
