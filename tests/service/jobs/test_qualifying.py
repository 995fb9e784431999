"""The bar a check must meet to set a model's robustness gauges, as a rule."""

from __future__ import annotations

from service.jobs.qualifying import QualifyingBar, bar_for, judge, plan_reasons

ALL = ("transfer", "naive", "bpda", "gradient_free")
# The default bar for a quantized MNIST model with a surrogate and the bundled 1,000 images.
BAR = bar_for("mnist", ALL, 1000, ["pgd", "apgd_ce"], None, None)


def request(**changes) -> dict:
    full = {
        "attacks": ["noise", "pgd", "apgd_ce"],
        "threat_models": list(ALL),
        "epsilons": [0.1, 0.2, 0.3],
        "samples": 1000,
        "sample_limits": {},
    }
    return {**full, **changes}


def row(attack: str, threat_model: str, epsilon: float, **changes) -> dict:
    return {
        "attack": attack,
        "threat_model": threat_model,
        "norm": "linf",
        "epsilon": epsilon,
        "samples": 1000,
        "complete": True,
        "sanity": False,
        "robust_accuracy": 0.5,
        **changes,
    }


def full_rows() -> list[dict]:
    rows = []
    for epsilon in (0.1, 0.2, 0.3):
        rows += [row(a, t, epsilon) for a in ("pgd", "apgd_ce") for t in ALL[:3]]
        rows.append(row("noise", "gradient_free", epsilon))
    return rows


def report(rows: list[dict], **changes) -> dict:
    return {"results": rows, "skipped": [], "request": request(), **changes}


def test_the_default_bar_is_the_dataset_radii_the_whole_set_and_every_threat_model() -> None:
    expected = QualifyingBar(ALL, ("pgd", "apgd_ce"), (0.1, 0.2, 0.3), 1000)
    assert expected == BAR
    assert ("pgd", "gradient_free") not in BAR.units()  # PGD needs gradients
    assert len(BAR.units()) == 6
    # A model without a quantizer or a surrogate is held to the threat models it has.
    plain = bar_for("cifar10", ("naive", "gradient_free"), 1000, ["pgd"], None, 500)
    assert plain.threat_models == ("naive", "gradient_free") and plain.samples == 500
    assert plain.epsilons == (2 / 255, 4 / 255, 8 / 255)
    # A strong attack that cannot run on the model is not asked of it.
    assert bar_for("mnist", ("naive",), 1000, ["level"], None, None).attacks == ()


def test_a_small_transfer_only_check_cannot_qualify_and_says_why() -> None:
    small = request(attacks=["fgsm"], threat_models=["transfer"], epsilons=[0.3], samples=20)
    reasons = plan_reasons(BAR, small, uploaded=False)
    assert reasons == [
        "threat models that apply to the model are missing: naive, bpda, gradient_free",
        "strong attacks are missing: pgd, apgd_ce",
        "L-inf radii are missing: 0.1, 0.2",
        "it runs on 20 samples; the bar is 1000",
    ]
    judged = judge(BAR, reasons, "done", report([row("fgsm", "transfer", 0.3, samples=20)]))
    assert judged["qualifying"] is False and judged["reasons"] == reasons
    assert judged["bar"]["samples"] == 1000


def test_samples_uploads_and_capped_attacks_are_named() -> None:
    capped = request(samples=1000, sample_limits={"apgd_ce": 200})
    assert plan_reasons(BAR, capped, uploaded=True) == [
        "it runs on an uploaded sample set, not the model's evaluation set",
        "apgd_ce is limited to 200 samples; the bar is 1000",
    ]
    quantized_only = request(attacks=["pgd", "apgd_ce"])
    assert plan_reasons(BAR, quantized_only, uploaded=False) == [
        "no requested attack runs under gradient_free"
    ]


def test_a_complete_check_qualifies_on_its_rows_and_nothing_less_does() -> None:
    assert plan_reasons(BAR, request(), uploaded=False) == []
    assert judge(BAR, [], "done", report(full_rows())) == {
        "qualifying": True,
        "reasons": [],
        "bar": BAR.as_dict(),
    }
    timed_out = judge(BAR, [], "timed_out", report(full_rows()))
    assert timed_out["reasons"] == ["the check ended timed_out, not done"]
    rows = full_rows()
    rows[0]["complete"] = False
    rows = [r for r in rows if not (r["attack"] == "apgd_ce" and r["threat_model"] == "bpda")]
    reasons = judge(BAR, [], "done", report(rows, skipped=[{"attack": "apgd_ce"}]))["reasons"]
    assert reasons[:2] == ["1 planned units were skipped", "some rows are incomplete"]
    assert "no apgd_ce row under bpda at 0.1" in reasons
    assert "no pgd row under transfer at 0.1" in reasons  # its only row is incomplete
