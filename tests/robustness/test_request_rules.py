"""The suite's request rules, owned by ``robustness.request`` for the CLI and the service."""

from __future__ import annotations

import re

import pytest

from robustness.request import (
    NO_QUANTIZER,
    SubjectFacts,
    SuiteRequest,
    applicable_threat_models,
    default_radii,
    inapplicable,
    surrogate_problem,
)

DEFENDED = SubjectFacts("mnist", (1, 28, 28), quantized=True)
UNDEFENDED_ALONE = SubjectFacts("mnist", (1, 28, 28), quantized=False, surrogate_problem="none")


def test_which_threat_model_applies_to_which_model() -> None:
    assert applicable_threat_models(DEFENDED) == ("transfer", "naive", "bpda", "gradient_free")
    assert applicable_threat_models(UNDEFENDED_ALONE) == ("naive", "gradient_free")
    assert inapplicable("bpda", UNDEFENDED_ALONE) == NO_QUANTIZER
    assert inapplicable("transfer", UNDEFENDED_ALONE) == "none"


def test_surrogate_problems() -> None:
    assert surrogate_problem("a", "mnist", None, "").startswith("no surrogate")
    assert "its own surrogate" in surrogate_problem("a", "mnist", "a", "mnist")
    assert "cifar10 model" in surrogate_problem("a", "mnist", "b", "cifar10")
    assert surrogate_problem("a", "mnist", "b", "mnist") is None
    # The same program imported undefended is a surrogate for its defended import.
    assert surrogate_problem("a", "pets", "a", "pets", same_quantizer=False) is None
    wrong_io = surrogate_problem(
        "a", "pets", "b", "pets", target_io=((3, 40, 48), 7), surrogate_io=((3, 32, 32), 7)
    )
    assert "3x32x32 images to 7 classes, the target 3x40x48" in wrong_io


def test_default_radii_follow_the_dataset_and_the_attacks() -> None:
    assert default_radii("mnist", ("fgsm",)) == ((0.1, 0.2, 0.3), ())
    assert default_radii("mnist", ("fgsm", "pgd_l2")) == ((0.1, 0.2, 0.3), (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="no preset for dataset 'svhn' and no input shape"):
        default_radii("svhn", ("fgsm",))


def test_a_dataset_without_a_preset_gets_the_generic_radii_for_its_shape() -> None:
    linf, l2 = default_radii("pets", ("fgsm", "pgd_l2"), (3, 32, 32))
    assert linf == (2 / 255, 4 / 255, 8 / 255) and l2 == (0.25, 0.5, 1.0)
    # Four times the values: twice the L2 radius, the same per-pixel size.
    assert default_radii("pets", ("pgd_l2",), (3, 64, 64))[1] == (0.5, 1.0, 2.0)
    assert default_radii("pets", ("pgd_l2",), (3, 40, 48))[1] == (0.342, 0.685, 1.37)


@pytest.mark.parametrize(
    ("changes", "facts", "says"),
    [
        ({"attacks": ("fgsm", "fgsm")}, None, "named twice"),
        ({"attacks": ("deepfool",)}, None, "unknown attack 'deepfool'"),
        ({"threat_models": ("naive", "naive")}, None, "named twice"),
        ({"threat_models": ("oracle",)}, None, "unknown threat model"),
        ({"epsilons": (0.1, 0.1)}, None, "repeat a radius"),
        ({"epsilons": (-0.1,)}, None, "epsilons must lie in (0, 1]"),
        ({"epsilons": (1.5,)}, None, "epsilons must lie in (0, 1]"),
        ({"attacks": ("spsa",), "threat_models": ("naive",)}, None, "none of"),
        ({"l2_epsilons": (29.0,)}, DEFENDED, "l2_epsilons must lie in (0, 28]"),
        ({"threat_models": ("bpda",)}, UNDEFENDED_ALONE, "bpda is unavailable"),
    ],
)
def test_requests_are_refused_naming_what_is_wrong(changes, facts, says) -> None:
    request = SuiteRequest(**{"attacks": ("fgsm",), "epsilons": (0.1,), **changes})
    with pytest.raises(ValueError, match=re.escape(says)):
        request.validate(facts)


def test_inapplicable_threat_models_may_be_left_to_the_runner_to_skip() -> None:
    request = SuiteRequest(attacks=("fgsm",), epsilons=(0.1,))
    with pytest.raises(ValueError, match="transfer is unavailable"):
        request.validate(UNDEFENDED_ALONE)
    request.validate(UNDEFENDED_ALONE, skip_inapplicable=True)
    request.validate(DEFENDED)


def test_a_request_from_json_takes_radii_as_people_write_them() -> None:
    """The service's API and a stored job give radii as JSON: numbers, or strings such as
    "8/255" (parsed as a fraction, never evaluated), as the command line takes them."""
    request = SuiteRequest.from_dict(
        {
            "epsilons": ["8/255", 0.1, "0.2"],
            "l2_epsilons": "0.5, 1",
            "sanity_epsilon": "255/255",
        }
    )
    assert request.epsilons == (8 / 255, 0.1, 0.2)
    assert request.l2_epsilons == (0.5, 1.0)
    assert request.sanity_epsilon == 1.0
    request.validate(DEFENDED)
    assert SuiteRequest.from_dict(request.as_dict()) == request
    for bad in ("8/0", "__import__('os')", "1/2/3", "eight"):
        with pytest.raises(ValueError, match="not a radius"):
            SuiteRequest.from_dict({"epsilons": [bad]})
    with pytest.raises(ValueError, match="must be a list of radii"):
        SuiteRequest.from_dict({"epsilons": 0.1})
    # However the request is built (the service builds one from its own body).
    assert SuiteRequest(epsilons=("2/255",), l2_epsilons=["1"]).epsilons == (2 / 255,)
    assert SuiteRequest(epsilons=("2/255",), l2_epsilons=["1"]).l2_epsilons == (1.0,)
    # A string that parses still meets the radius rules.
    with pytest.raises(ValueError, match="epsilons must lie in"):
        SuiteRequest.from_dict({"epsilons": ["300/255"]}).validate()
