"""Adversarial training: a real robustness gain on tiny data, the settings in the manifest,
and the catastrophic-overfitting check."""

import logging
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from models.checkpoint import load_checkpoint
from models.quantizers import ConstantQuantizer
from training import loop
from training.adversarial import (
    COLLAPSE_DROP,
    AdversarialSettings,
    attack_view,
    collapse_epoch,
    held_out_pgd_accuracy,
    kl_examples,
    pgd_examples,
)
from training.config import TrainConfig, adversarial_epsilon, adversarial_step_size
from training.datasets import load_dataset
from training.loop import _build, train

EPSILON = 0.2
CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


def _config(out, data_dir, **overrides):
    values = dict(
        dataset="mnist",
        defense="none",
        out=out,
        data_dir=data_dir,
        epochs=3,
        batch_size=32,
        lr=2e-3,
        seed=7,
        device="cpu",
        progress=False,
        adv_steps=5,
        adv_check_samples=64,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _pgd_accuracy(folder, data_dir) -> float:
    test = load_dataset("mnist", data_dir).test
    x = torch.from_numpy(test.images).float() / 255
    return held_out_pgd_accuracy(
        load_checkpoint(folder).model, x, torch.from_numpy(test.labels), EPSILON
    )


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from tests.training.conftest import write_mnist

    return write_mnist(tmp_path_factory.mktemp("adv") / "mnist")


@pytest.fixture(scope="module")
def standard_pgd_accuracy(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("standard") / "out"
    train(_config(out, tiny_data, adv_check_samples=0))
    return _pgd_accuracy(out, tiny_data)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["pgd", "trades", "fgsm-rs"])
def test_adversarial_training_raises_pgd_accuracy_over_standard_training(
    tmp_path, tiny_data, standard_pgd_accuracy, method
):
    out = tmp_path / "out"
    train(_config(out, tiny_data, adversarial=method, adv_epsilon=EPSILON))
    robust = _pgd_accuracy(out, tiny_data)
    # Same data, seed and schedule; only the training examples differ. On these images a
    # standard CNN keeps ~10% under PGD at 0.2 and adversarial training 60-100%.
    assert robust > standard_pgd_accuracy + 0.2, (method, robust, standard_pgd_accuracy)


@pytest.fixture(scope="module")
def robust_teacher(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("teacher") / "out"
    train(_config(out, tiny_data, adversarial="pgd", adv_epsilon=EPSILON, adv_check_samples=0))
    return out


@pytest.mark.slow
def test_distillation_from_a_robust_teacher_raises_pgd_accuracy_over_standard_training(
    tmp_path, tiny_data, standard_pgd_accuracy, robust_teacher
):
    out = tmp_path / "out"
    config = _config(
        out, tiny_data, adversarial="rslad", adv_epsilon=EPSILON, teacher=robust_teacher
    )
    train(config)
    robust = _pgd_accuracy(out, tiny_data)
    assert robust > standard_pgd_accuracy + 0.2, (robust, standard_pgd_accuracy)


def test_rslad_records_its_teacher_and_alpha(tmp_path, tiny_mnist):
    teacher = CHECKPOINTS / "mnist-pgd"
    config = _config(
        tmp_path / "out",
        tiny_mnist,
        epochs=1,
        limit_train=64,
        adversarial="rslad",
        adv_epsilon=EPSILON,
        teacher=teacher,
        rslad_alpha=0.5,
    )
    train(config)
    training = load_checkpoint(config.out).manifest.training
    assert (training["adversarial"], training["rslad_alpha"]) == ("rslad", 0.5)
    assert training["teacher"] == str(teacher)
    assert training["teacher_checkpoint"] == {
        "folder": str(teacher),
        "weights_sha256": load_checkpoint(teacher).manifest.weights_sha256,
    }


def test_a_teacher_for_other_data_is_refused(tmp_path, tiny_mnist):
    config = _config(
        tmp_path / "out",
        tiny_mnist,
        limit_train=64,
        adversarial="rslad",
        adv_epsilon=EPSILON,
        teacher=CHECKPOINTS / "cifar10-undefended",
    )
    with pytest.raises(ValueError, match="cannot label a mnist run"):
        train(config)
    assert not config.out.exists()


def test_the_kl_attack_moves_the_student_away_from_the_teacher(tiny_mnist, tmp_path):
    model = _build(_config(tmp_path, tiny_mnist, defense="cq", levels=2)).eval()
    teacher = load_checkpoint(CHECKPOINTS / "mnist-pgd").model.eval()
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        soft = F.softmax(teacher(x), dim=1)
    settings = AdversarialSettings("rslad", EPSILON, 5, EPSILON / 4, teacher=teacher)
    x_adv = kl_examples(model, x, soft, settings, torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= EPSILON + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1

    def divergence(images):
        with torch.no_grad():
            log_student = F.log_softmax(attack_view(model, images), dim=1)
        return F.kl_div(log_student, soft, reduction="batchmean").item()

    assert divergence(x_adv) > divergence(x)


@pytest.mark.slow
def test_manifest_records_the_adversarial_settings_and_the_check(tmp_path, tiny_data):
    config = _config(
        tmp_path / "out",
        tiny_data,
        defense="tq",
        epochs=2,
        adversarial="pgd",
        adv_epsilon=EPSILON,
        adv_ramp_epochs=1,
    )
    train(config)
    manifest = load_checkpoint(config.out).manifest
    training = manifest.training
    assert (training["adversarial"], training["adv_epsilon"], training["adv_steps"]) == (
        "pgd",
        EPSILON,
        5,
    )
    assert training["adv_ramp_epochs"] == 1
    assert [r["adv_epsilon"] for r in training["history"]] == pytest.approx([0.1, 0.2])
    assert all(0 <= r["pgd_accuracy"] <= 1 for r in training["history"])
    assert training["catastrophic_overfitting"]["detected"] is False
    assert manifest.metrics["held_out_pgd_accuracy"] == training["history"][-1]["pgd_accuracy"]


def test_a_collapse_is_logged_and_recorded(tmp_path, tiny_mnist, monkeypatch, caplog):
    """Fast training's known failure: held-out PGD accuracy falls to ~0 within an epoch."""
    readings = iter([0.5, 0.6, 0.05])
    monkeypatch.setattr(loop, "held_out_pgd_accuracy", lambda *args: next(readings))
    config = _config(
        tmp_path / "out",
        tiny_mnist,
        epochs=3,
        adversarial="fgsm-rs",
        adv_epsilon=EPSILON,
        limit_train=64,
    )
    with caplog.at_level(logging.WARNING, logger="training.loop"):
        train(config)
    verdict = load_checkpoint(config.out).manifest.training["catastrophic_overfitting"]
    assert (verdict["detected"], verdict["epoch"]) == (True, 3)
    assert "catastrophic overfitting at epoch 3" in caplog.text


def test_collapse_epoch_is_a_fall_below_the_best_so_far():
    def history(*accuracies):
        return [{"epoch": i + 1, "pgd_accuracy": a} for i, a in enumerate(accuracies)]

    assert collapse_epoch(history(0.3, 0.4, 0.45)) is None
    assert collapse_epoch(history(0.5, 0.5 - COLLAPSE_DROP + 0.05, 0.6)) is None
    assert collapse_epoch(history(0.5, 0.5 - COLLAPSE_DROP, 0.6)) == 2
    assert collapse_epoch(history(0.6, 0.55, 0.1, 0.5)) == 3
    assert collapse_epoch(history(None, 0.1)) is None


def test_examples_are_crafted_through_the_quantizer_with_bpda(tiny_mnist, tmp_path):
    model = _build(_config(tmp_path, tiny_mnist, defense="cq", levels=2)).eval()
    assert isinstance(model.quantizer, ConstantQuantizer)
    x = torch.rand(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))
    # The served path (hard staircase) passes no gradient; the attack's view does, and its
    # forward is exactly the served model's.
    x.requires_grad_(True)
    (served,) = torch.autograd.grad(model(x).sum(), x, allow_unused=True)
    (bpda,) = torch.autograd.grad(attack_view(model, x).sum(), x)
    assert served is None and bpda.abs().sum() > 0
    x = x.detach()
    assert torch.equal(attack_view(model, x), model(x))
    x_adv = pgd_examples(model, x, y, EPSILON, 3, EPSILON / 2, torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= EPSILON + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)


def test_radius_ramp_and_published_step_sizes(tmp_path):
    ramped = _config(
        tmp_path,
        tmp_path,
        epochs=6,
        adversarial="pgd",
        adv_epsilon=0.3,
        adv_steps=10,
        adv_ramp_epochs=2,
    )
    assert [adversarial_epsilon(ramped, e) for e in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert adversarial_step_size(ramped, 0.3) == pytest.approx(0.075)  # 2.5 eps / steps
    fast = _config(tmp_path, tmp_path, adversarial="fgsm-rs", adv_epsilon=8 / 255)
    assert adversarial_step_size(fast, 8 / 255) == pytest.approx(10 / 255)  # 1.25 eps


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"adversarial": "pgd", "adv_epsilon": 0.0}, "adv_epsilon"),
        ({"adversarial": "madry"}, "adversarial must be"),
        ({"adversarial": "pgd", "adv_epsilon": 0.1, "adv_ramp_epochs": 3}, "adv_ramp_epochs"),
        ({"adv_steps": 0}, "adv_steps"),
        ({"adversarial": "rslad", "adv_epsilon": 0.1}, "rslad needs a teacher"),
        ({"adversarial": "pgd", "adv_epsilon": 0.1, "teacher": Path("t")}, "teacher is for"),
        (
            {"adversarial": "rslad", "adv_epsilon": 0.1, "teacher": Path("t"), "rslad_alpha": 2},
            "rslad_alpha",
        ),
    ],
)
def test_bad_adversarial_settings_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, tmp_path, **overrides)
