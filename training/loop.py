"""The training loop: a config in, a verified checkpoint and its metrics out.

Runs as one process, or under ``torchrun`` with DistributedDataParallel (gloo on
CPU, nccl on GPU). Every epoch's sample order and augmentation come from a
generator seeded by (seed, epoch), so a run is deterministic, a resumed run
continues exactly where it stopped, and N processes see the same global batches
as one process would (each rank takes an equal slice of every global batch).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from models.checkpoint import Manifest, load_checkpoint, save_checkpoint
from models.cnn import QuantizedClassifier
from models.evalset import CHECKPOINT_EVAL_SET, write_eval_set
from models.memory import keep_freed_memory
from models.quantizers import QuantizerMode
from models.registry import build_model, dataset_info
from training import resume
from training.adversarial import (
    AdversarialSettings,
    adversarial_loss,
    collapse_epoch,
    held_out_pgd_accuracy,
)
from training.config import (
    TrainConfig,
    adversarial_epsilon,
    adversarial_step_size,
    learning_rate,
    steepness,
)
from training.datasets import Dataset, Split, load_dataset
from training.ema import WeightAverage
from training.imagefolder import FolderOptions, load_image_folder
from training.provenance import git_revision, utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def train(config: TrainConfig) -> dict:
    """Train one model and write its checkpoint to ``config.out``; returns the metrics."""
    keep_freed_memory()  # every step allocates and frees its activations and gradients
    runtime = _start_runtime(config)
    revision = git_revision()  # the code that trains, not whatever is checked out at the end
    try:
        torch.manual_seed(config.seed)
        data = _load_data(config, runtime)
        if config.limit_train:
            data.train = Split(
                data.train.images[: config.limit_train], data.train.labels[: config.limit_train]
            )
        _check_batches(config, runtime, len(data.train.labels))
        model = _build(config, data)
        initial = _initialise_cnn(config, model, data.name)
        teacher, teacher_record = _load_teacher(config, data, runtime.device)
        model = model.to(runtime.device)
        optimizer = _optimizer(config, model)
        average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
        start_epoch, history = resume.restore(config, model, optimizer, average)
        trainable = _wrap(model, runtime)
        started = time.perf_counter()
        for epoch in range(start_epoch, config.epochs):
            epoch_started = time.perf_counter()
            history.append(
                _run_epoch(
                    config, runtime, model, trainable, optimizer, data, epoch, teacher, average
                )
            )
            # Wall time per epoch, kept in the resume state, so a resumed run's total counts
            # every session's epochs, not only the last session's.
            history[-1]["seconds"] = round(time.perf_counter() - epoch_started, 1)
            if runtime.is_main and collapse_epoch(history) == epoch + 1:
                log.warning(
                    "catastrophic overfitting at epoch %d: held-out PGD accuracy fell to %.4f; "
                    "the manifest records it (consider more steps, a smaller step or PGD)",
                    epoch + 1,
                    history[-1]["pgd_accuracy"],
                )
            if runtime.is_main:
                resume.save(config, model, optimizer, epoch + 1, history, average)
        seconds = time.perf_counter() - started
        provenance = {"initialised_from": initial, "teacher_checkpoint": teacher_record}
        shipped = model if average is None else average.model
        return _finish(config, runtime, shipped, data, history, seconds, revision, provenance)
    finally:
        if runtime.world_size > 1:
            torch.distributed.destroy_process_group()


def _check_batches(config: TrainConfig, runtime: Runtime, images: int) -> None:
    """Refuse, before any work, a run whose steps would hold no rows: an epoch drops its last
    partial batch, so a training split smaller than one batch trains on nothing and would
    still write a checkpoint; and each process takes ``batch_size // world_size`` rows."""
    if config.batch_size < runtime.world_size:
        raise ValueError(
            f"--batch-size {config.batch_size} is smaller than the {runtime.world_size} "
            "training processes: each needs at least one row a step"
        )
    if images < config.batch_size:
        raise ValueError(
            f"the training split has {images} images, fewer than one batch of "
            f"{config.batch_size}, and an epoch drops its last partial batch, so it would "
            f"train on nothing: pass --batch-size {images} or less, or give it more images"
        )


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _start_runtime(config: TrainConfig) -> Runtime:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = _pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    if world_size == 1:
        return Runtime(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    # Processes on one host share its cores; oversubscribing threads slows every rank.
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return Runtime(device, torch.distributed.get_rank(), world_size)


def _pick_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _load_data(config: TrainConfig, runtime: Runtime) -> Dataset:
    if config.dataset == "imagefolder":
        options = FolderOptions(config.input_size, config.channels, config.split, config.seed)
        return load_image_folder(config.data_dir, options)
    data = load_dataset(config.dataset, config.data_dir, config.download and runtime.is_main)
    info = dataset_info(config.dataset)
    data.class_names, data.input_shape = info.class_names, info.input_shape
    return data


def _build(config: TrainConfig, data: Dataset | None = None) -> QuantizedClassifier:
    """The model for ``data`` (default: the official dataset ``config.dataset`` names)."""
    if data is None:
        info = dataset_info(config.dataset)
        input_shape, class_names = info.input_shape, info.class_names
    else:
        input_shape, class_names = data.input_shape, data.class_names
    quantizer = {"kind": config.defense, "levels": config.levels}
    if config.defense == "tq":
        quantizer["steepness"] = config.steepness_start
    normalization = None
    if config.mean is not None:
        if len(config.mean) != input_shape[0]:
            raise ValueError(
                f"--mean and --std have {len(config.mean)} values for {input_shape[0]} channels"
            )
        normalization = {"mean": list(config.mean), "std": list(config.std)}
    return build_model(
        config.architecture,
        input_shape,
        len(class_names),
        quantizer,
        config.architecture_args,
        normalization,
    )


def _initialise_cnn(
    config: TrainConfig, model: QuantizedClassifier, dataset: str | None = None
) -> dict | None:
    """Copy ``config.init_from``'s network weights into ``model``, and its quantizer's
    thresholds when both are TQ with the same levels (any other quantizer starts fresh);
    returns what was used. ``dataset`` is the name the run's manifest will carry (default
    ``config.dataset``)."""
    if config.init_from is None:
        return None
    dataset = dataset or config.dataset
    source = load_checkpoint(config.init_from)
    if (source.manifest.dataset, source.manifest.architecture) != (dataset, config.architecture):
        raise ValueError(
            f"--init-from {config.init_from}: a {source.manifest.dataset} "
            f"{source.manifest.architecture} checkpoint cannot start a {dataset} run"
        )
    model.network.load_state_dict(source.model.network.state_dict(), strict=True)
    record = {"folder": str(config.init_from), "weights_sha256": source.manifest.weights_sha256}
    mine, theirs = model.quantizer, source.model.quantizer
    if (
        mine is not None
        and theirs is not None
        and mine.kind == theirs.kind == "tq"
        and mine.levels == theirs.levels
    ):
        mine.load_state_dict(theirs.state_dict(), strict=True)
        record["quantizer_thresholds"] = theirs.spec()["thresholds"]
    return record


def _load_teacher(
    config: TrainConfig, data: Dataset, device: torch.device
) -> tuple[nn.Module | None, dict | None]:
    """RSLAD's frozen teacher: ``config.teacher``'s served model, checked against the data
    (same dataset, input shape and classes); None without one."""
    if config.teacher is None:
        return None, None
    source = load_checkpoint(config.teacher)
    manifest = source.manifest
    mine = (data.name, list(data.input_shape), list(data.class_names))
    theirs = (manifest.dataset, list(manifest.input_shape), list(manifest.class_names))
    if theirs != mine:
        raise ValueError(
            f"--teacher {config.teacher}: a {manifest.dataset} checkpoint with input "
            f"{theirs[1]} and {len(theirs[2])} classes cannot label a {data.name} run with "
            f"input {mine[1]} and {len(mine[2])} classes (or its class names differ)"
        )
    teacher = source.model.eval().requires_grad_(False).to(device)
    return teacher, {"folder": str(config.teacher), "weights_sha256": manifest.weights_sha256}


def _wrap(model: nn.Module, runtime: Runtime) -> nn.Module:
    if runtime.world_size == 1:
        return model
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _run_epoch(
    config,
    runtime,
    model,
    trainable,
    optimizer,
    data: Dataset,
    epoch: int,
    teacher=None,
    average: WeightAverage | None = None,
) -> dict:
    lr = learning_rate(config, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    if model.quantizer is not None and config.defense == "tq":
        model.quantizer.steepness = steepness(config, epoch)
        if average is not None:
            average.model.quantizer.steepness = model.quantizer.steepness
    loss, train_accuracy = _train_one_epoch(
        config, runtime, model, trainable, optimizer, data.train, epoch, teacher, average
    )
    # The accuracies and the held-out check are of the weights that would ship.
    model = model if average is None else average.model
    record = {
        "epoch": epoch + 1,
        "lr": lr,
        "loss": loss,
        "train_accuracy": train_accuracy,
        "test_accuracy": evaluate(model, data.test, runtime.device) if runtime.is_main else None,
        "thresholds": model.quantizer.spec()["thresholds"] if model.quantizer is not None else [],
        "steepness": model.quantizer.steepness if model.quantizer is not None else None,
    }
    if config.adversarial != "none":
        record.update(_adversarial_record(config, runtime, model, data.test, epoch))
    if runtime.is_main:
        log.info(
            "epoch %d/%d loss %.4f train_acc %.4f test_acc %.4f lr %.2e thresholds %s",
            epoch + 1,
            config.epochs,
            loss,
            train_accuracy,
            record["test_accuracy"],
            lr,
            record["thresholds"],
        )
        if record.get("pgd_accuracy") is not None:
            log.info(
                "epoch %d/%d %s training radius %.4f; held-out PGD accuracy at %.4f: %.4f",
                epoch + 1,
                config.epochs,
                config.adversarial,
                record["adv_epsilon"],
                config.adv_epsilon,
                record["pgd_accuracy"],
            )
    return record


def _adversarial_settings(
    config: TrainConfig, epoch: int, teacher: nn.Module | None = None
) -> AdversarialSettings | None:
    if config.adversarial == "none":
        return None
    epsilon = adversarial_epsilon(config, epoch)
    return AdversarialSettings(
        config.adversarial,
        epsilon,
        config.adv_steps,
        adversarial_step_size(config, epsilon),
        config.trades_beta,
        config.rslad_alpha,
        teacher,
    )


def _adversarial_record(config, runtime, model, test: Split, epoch: int) -> dict:
    """The epoch's training radius, and PGD accuracy on the held-out check batch."""
    record = {"adv_epsilon": adversarial_epsilon(config, epoch), "pgd_accuracy": None}
    count = min(config.adv_check_samples, len(test.labels))
    if not runtime.is_main or count == 0:
        return record
    x = torch.from_numpy(test.images[-count:]).float().div_(255.0).to(runtime.device)
    y = torch.from_numpy(test.labels[-count:]).to(runtime.device)
    record["pgd_accuracy"] = held_out_pgd_accuracy(model, x, y, config.adv_epsilon)
    return record


def _train_one_epoch(
    config,
    runtime,
    model,
    trainable,
    optimizer,
    split: Split,
    epoch: int,
    teacher=None,
    average=None,
):
    trainable.train()
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(len(split.labels), generator=generator)
    batches = len(order) // config.batch_size  # the last partial global batch is dropped
    per_rank = config.batch_size // runtime.world_size
    images = torch.from_numpy(split.images)
    labels = torch.from_numpy(split.labels)
    adversarial = _adversarial_settings(config, epoch, teacher)
    total_loss = correct = seen = 0.0
    bar = tqdm(
        range(batches),
        desc=f"epoch {epoch + 1}",
        disable=not (config.progress and runtime.is_main),
        leave=False,
        unit="batch",
    )
    for b in bar:
        global_batch = order[b * config.batch_size : (b + 1) * config.batch_size]
        index = global_batch[runtime.rank * per_rank : (runtime.rank + 1) * per_rank]
        x = images[index].float().div_(255.0)  # (n, C, H, W) in [0, 1]
        if config.augment:
            x = augment(x, generator)
        x, y = x.to(runtime.device), labels[index].to(runtime.device)
        if adversarial is None:
            logits = trainable(x)
            loss = F.cross_entropy(logits, y)
        else:
            loss, logits = adversarial_loss(adversarial, model, trainable, x, y, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if average is not None:
            average.update(model)
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}")
    return total_loss / max(seen, 1), correct / max(seen, 1)


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip (the usual CIFAR-10 recipe)."""
    n, _, height, width = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + height, dx[i] : dx[i] + width]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


@torch.no_grad()
def evaluate(
    model: QuantizedClassifier,
    split: Split,
    device: torch.device,
    mode: QuantizerMode = "hard",
    batch_size: int = 1000,
) -> float:
    """Accuracy on a split, with the quantizer in the given mode (the served one by default)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(split.labels), batch_size):
        x = torch.from_numpy(split.images[start : start + batch_size]).float().div_(255.0)
        y = torch.from_numpy(split.labels[start : start + batch_size])
        correct += (model(x.to(device), quantizer_mode=mode).argmax(1).cpu() == y).sum().item()
    model.train(was_training)
    return correct / len(split.labels)


def _train_seconds(history: list[dict], seconds: float) -> dict:
    """The training's wall time: the sum of every epoch's, across resumed sessions. A state
    saved before epochs were timed leaves only this session's time, and says so."""
    timed = [entry.get("seconds") for entry in history]
    if history and all(value is not None for value in timed):
        return {"train_seconds": round(sum(timed), 1)}
    return {
        "train_seconds": round(seconds, 1),
        "train_seconds_covers": "the epochs run after the last resume only (the earlier ones "
        "were not timed)",
    }


def _finish(config, runtime, model, data: Dataset, history, seconds, revision, provenance):
    if runtime.world_size > 1:
        torch.distributed.barrier()
    if not runtime.is_main:
        return {}
    metrics = {
        "clean_accuracy": evaluate(model, data.test, runtime.device, "hard"),
        "test_samples": int(len(data.test.labels)),
        **_train_seconds(history, seconds),
    }
    if model.quantizer is not None:
        metrics["clean_accuracy_soft"] = evaluate(model, data.test, runtime.device, "soft")
    if config.adversarial != "none" and history and history[-1].get("pgd_accuracy") is not None:
        metrics["held_out_pgd_accuracy"] = history[-1]["pgd_accuracy"]
    manifest = Manifest(
        architecture=config.architecture,
        architecture_args=dict(config.architecture_args),
        dataset=data.name,
        input_shape=list(data.input_shape),
        class_names=list(data.class_names),
        quantizer={},
        training={
            **config.to_json(),
            "world_size": runtime.world_size,
            **provenance,
            "history": history,
            **_overfitting_verdict(config, history),
        },
        data_sha256=data.files_sha256,
        metrics=metrics,
        git_revision=revision,
        created_at=utc_now(),
    )
    save_checkpoint(config.out, model.cpu(), manifest, _eval_set_writer(config, data))
    resume.clear(config)
    log.info(
        "wrote %s: clean accuracy %.4f on %d test images",
        config.out,
        metrics["clean_accuracy"],
        metrics["test_samples"],
    )
    return metrics


# The evaluation set a checkpoint of an image folder keeps (models/evalset.py): the first
# images of its test split, as the official datasets' shipped sets are.
EVAL_SET_SIZE = 1000


def _eval_set_writer(config: TrainConfig, data: Dataset):
    """None for the official datasets (their sets are shipped in data/eval)."""
    if config.dataset != "imagefolder":
        return None
    count = min(EVAL_SET_SIZE, len(data.test.labels))
    source = {
        "dataset": data.name,
        "source": f"first {count} images of the image folder's test split, in file order",
        "source_files_sha256": data.files_sha256,
    }

    def write(staging: Path) -> None:
        path = staging / CHECKPOINT_EVAL_SET
        write_eval_set(path, data.test.images[:count], data.test.labels[:count], source)

    return write


def _overfitting_verdict(config: TrainConfig, history: list[dict]) -> dict:
    """For adversarial runs: whether held-out PGD accuracy collapsed, and when."""
    if config.adversarial == "none":
        return {}
    epoch = collapse_epoch(history)
    return {
        "catastrophic_overfitting": {
            "detected": epoch is not None,
            "epoch": epoch,
            "check": f"PGD-10 at eps {config.adv_epsilon} through BPDA on the last "
            f"{config.adv_check_samples} test images, after every epoch",
        }
    }
