"""``python -m training train ...``: train an undefended, CQ or TQ model and write its checkpoint.

Also runs under torchrun for DistributedDataParallel, e.g.
``torchrun --nproc_per_node 2 -m training train --dataset mnist --defense tq ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from models.checkpoint import MANIFEST_FILE, CheckpointError, read_manifest
from models.evalset import EVAL_DIR, write_eval_set
from models.radii import parse_fraction
from models.registry import architecture_names
from training.config import ADVERSARIAL_METHODS, TrainConfig
from training.datasets import DatasetError, load_dataset
from training.resume import ResumeError, state_dir


def radius(text: str) -> float:
    """A radius as a decimal or a fraction such as ``8/255``."""
    try:
        value = parse_fraction(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number or fraction such as 0.3 or 8/255"
        ) from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1]")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with ``(default: X)``, or ``(required)``. Left as written: a
    flag (off unless given), and an option without a default value whose help says itself
    what happens without it, in the same words."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.nargs == 0 or "(default: " in text:
            return text
        if action.required:
            return f"{text} (required)"
        return f"{text} (default: %(default)s)"


def input_size(text: str) -> tuple[int, int]:
    """``H,W`` such as ``64,64``."""
    try:
        parts = tuple(int(part) for part in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not H,W such as 64,64")
    return parts  # type: ignore[return-value]


def architecture_arg(text: str) -> tuple[str, object]:
    """``KEY=VALUE``; the value is read as JSON (numbers, true, lists) or else kept a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE such as width=32")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def per_channel(text: str) -> tuple[float, ...]:
    """Comma-separated numbers, one per channel, such as ``0.49,0.48,0.45``."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not comma-separated numbers such as 0.49,0.48,0.45"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=__doc__.splitlines()[0],
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train one model and write its checkpoint folder",
        formatter_class=HelpFormatter,
    )
    train.add_argument(
        "--dataset",
        choices=["mnist", "cifar10", "imagefolder"],
        required=True,
        help="an official dataset, or imagefolder: --data-dir holds one sub-folder per class "
        "(docs/models.md)",
    )
    train.add_argument(
        "--defense",
        choices=["none", "cq", "tq"],
        required=True,
        help="none: undefended CNN; cq: constant quantization; tq: trainable quantization",
    )
    train.add_argument("--levels", type=int, default=2, help="quantization levels L")
    train.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    train.add_argument(
        "--force",
        action="store_true",
        help="train again when --out already holds a finished run's checkpoint, replacing it "
        "(an interrupted run resumes without it)",
    )
    train.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="folder holding the official dataset files",
    )
    folder = train.add_argument_group(
        "image folder", "only with --dataset imagefolder; the policy is in docs/models.md"
    )
    folder.add_argument(
        "--input-size",
        type=input_size,
        default=None,
        help="H,W every image is letterboxed to (default: the most common size)",
    )
    folder.add_argument(
        "--channels",
        type=int,
        choices=[1, 3],
        default=None,
        help="1 (grey) or 3 (RGB) (default: 1 if every image is grey, else 3)",
    )
    folder.add_argument(
        "--split",
        type=float,
        default=None,
        help="fraction of each class held out for testing, chosen by --seed, when the "
        "folder has no train/ and test/ sub-folders (default: none, the folder must have them)",
    )
    train.add_argument(
        "--mean",
        type=per_channel,
        default=None,
        help="per-channel mean the network's input is normalized by, after the quantizer "
        "(with --std; recorded in the manifest) (default: none, no normalization)",
    )
    train.add_argument(
        "--std",
        type=per_channel,
        default=None,
        help="per-channel std (with --mean) (default: none)",
    )
    train.add_argument(
        "--download",
        action="store_true",
        help="fetch missing official files into --data-dir and verify their checksums",
    )
    train.add_argument("--epochs", type=int, default=6, help="passes over the training set")
    train.add_argument("--batch-size", type=int, default=128, help="global batch size")
    train.add_argument("--lr", type=float, default=1e-3, help="learning rate of Adam or SGD")
    train.add_argument(
        "--schedule",
        choices=["constant", "cosine"],
        default="constant",
        help="learning-rate schedule over the epochs",
    )
    train.add_argument("--weight-decay", type=float, default=0.0, help="the optimizer's decay")
    train.add_argument(
        "--steepness-start",
        type=float,
        default=10.0,
        help="TQ sigmoid steepness h at the first epoch, annealed geometrically",
    )
    train.add_argument(
        "--steepness-end",
        type=float,
        default=100.0,
        help="TQ sigmoid steepness h at the last epoch",
    )
    train.add_argument(
        "--augment",
        action="store_true",
        help="random crop (pad 4) and horizontal flip; meant for CIFAR-10",
    )
    train.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="checkpoint folder whose CNN weights start this run (same dataset); the "
        "quantizer starts fresh, unless both are TQ with the same levels, when the learned "
        "thresholds carry over too (default: none, random initial weights)",
    )
    train.add_argument(
        "--architecture",
        choices=architecture_names(),
        default="cleverhans-basic-cnn",
        help="registered architecture to train, built in or installed through the "
        "qusec.architectures entry points",
    )
    train.add_argument(
        "--architecture-arg",
        type=architecture_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of the architecture's factory, repeatable; recorded in the manifest "
        "(default: none, the factory's defaults)",
    )
    train.add_argument(
        "--optimizer",
        choices=["adam", "sgd"],
        default="adam",
        help="adam, or sgd with Nesterov momentum",
    )
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    adversarial = train.add_argument_group(
        "adversarial training",
        "examples are crafted through the quantizer with BPDA (docs/training.md)",
    )
    adversarial.add_argument(
        "--adversarial",
        choices=ADVERSARIAL_METHODS,
        default="none",
        help="pgd (Madry et al.), trades (Zhang et al.), fgsm-rs (Wong et al.), rslad "
        "(Zi et al.: distillation from --teacher's soft labels), or none",
    )
    adversarial.add_argument(
        "--adv-epsilon",
        type=radius,
        default=0.0,
        help="L-inf training radius in [0, 1] pixel units, e.g. 0.3 or 8/255; "
        "above 0 with --adversarial",
    )
    adversarial.add_argument(
        "--adv-steps", type=int, default=10, help="inner attack steps, PGD and TRADES"
    )
    adversarial.add_argument(
        "--adv-step-size",
        type=radius,
        default=None,
        help="inner attack step (default: 2.5 eps / steps; 1.25 eps for fgsm-rs)",
    )
    adversarial.add_argument(
        "--trades-beta", type=float, default=6.0, help="TRADES' robust-loss weight"
    )
    adversarial.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="rslad only: checkpoint folder (same dataset, input shape and classes) whose "
        "probabilities on the clean images are the targets, e.g. a more robust model",
    )
    adversarial.add_argument(
        "--rslad-alpha",
        type=float,
        default=5 / 6,
        help="rslad's weight of the adversarial term; the clean term gets the rest "
        "(default: 5/6, the paper's)",
    )
    adversarial.add_argument(
        "--adv-ramp-epochs",
        type=int,
        default=0,
        help="ramp the radius linearly from 0 over this many epochs; 0: no ramp",
    )
    adversarial.add_argument(
        "--adv-check-samples",
        type=int,
        default=512,
        help="held-out test images attacked with PGD after each epoch to detect "
        "catastrophic overfitting",
    )
    train.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help="keep an exponential moving average of the weights with this decay per step, "
        "e.g. 0.999, and ship it instead of the last weights; the epoch log, the held-out "
        "check and the manifest's accuracies are the average's (default: none, the last "
        "weights ship)",
    )
    train.add_argument(
        "--seed", type=int, default=0, help="seed of the initial weights and sample order"
    )
    train.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: cuda when available, else cpu",
    )
    train.add_argument(
        "--limit-train",
        type=int,
        default=None,
        help="train on the first N training images only, for smoke runs (default: all)",
    )
    train.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    export = commands.add_parser(
        "export-evalset",
        help="write the first N official test images as a checksummed .npz",
        formatter_class=HelpFormatter,
    )
    export.add_argument("--dataset", choices=["mnist", "cifar10"], required=True, help="data set")
    export.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="folder holding the official files"
    )
    export.add_argument("--count", type=int, default=1000, help="first N test images")
    export.add_argument("--out-dir", type=Path, default=EVAL_DIR, help="folder for the subset")
    describe = commands.add_parser(
        "describe",
        help="print a Markdown table of checkpoint folders from their manifests",
        formatter_class=HelpFormatter,
    )
    describe.add_argument("checkpoints", type=Path, nargs="+", help="checkpoint folders")
    return parser


def describe(folders: list[Path]) -> str:
    """One row per checkpoint: what it is, how it was made, how accurate it is. An imported
    program or a checkpoint without a test run shows "-" where its manifest says nothing."""
    rows = [
        "| checkpoint | architecture | input | classes | defense | levels | thresholds "
        "| clean accuracy (test images) | epochs | seed | weights sha256 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for folder in folders:
        m = read_manifest(folder)
        q = m.quantizer
        thresholds = ", ".join(f"{t:.4f}" for t in q.get("thresholds", [])) or "-"
        accuracy = m.metrics.get("clean_accuracy")
        clean = "-" if accuracy is None else f"{100 * accuracy:.2f}%"
        if accuracy is not None and m.metrics.get("test_samples") is not None:
            clean += f" ({m.metrics['test_samples']})"
        architecture = m.architecture
        if m.format == "exported-program":
            architecture += f" ({m.training.get('imported_from', 'imported')})"
        rows.append(
            f"| {m.name} | {architecture} | {'x'.join(map(str, m.input_shape))} "
            f"| {len(m.class_names)} | {q['kind']} | {q.get('levels', '-')} | {thresholds} "
            f"| {clean} | {m.training.get('epochs', '-')} | {m.training.get('seed', '-')} "
            f"| `{m.weights_sha256[:16]}` |"
        )
    return "\n".join(rows)


def export_evalset(args: argparse.Namespace) -> dict:
    if args.count < 1:
        raise ValueError("--count must be >= 1")
    data = load_dataset(args.dataset, args.data_dir)
    test = data.test
    if args.count > len(test.labels):
        raise ValueError(f"--count {args.count} exceeds the {len(test.labels)} test images")
    path = args.out_dir / f"{args.dataset}-test-first{args.count}.npz"
    source = {
        "dataset": args.dataset,
        "source": f"first {args.count} images of the official test set, in file order",
        "source_files_sha256": data.files_sha256,
    }
    digest = write_eval_set(path, test.images[: args.count], test.labels[: args.count], source)
    return {"path": str(path), "sha256": digest, "count": args.count}


def refuse_to_overwrite(config: TrainConfig, force: bool) -> None:
    """A finished run's checkpoint is replaced only with --force; a run whose state folder
    is there was interrupted and resumes, whatever --out holds."""
    finished = (config.out / MANIFEST_FILE).is_file() and not state_dir(config).exists()
    if finished and not force:
        raise ValueError(
            f"{config.out} already holds a finished run's checkpoint; pass --force to train "
            "again and replace it, or choose another --out"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "describe":
            sys.stdout.write(describe(args.checkpoints) + "\n")
            return 0
        if args.command == "export-evalset":
            sys.stdout.write(json.dumps(export_evalset(args)) + "\n")
            return 0
        config = TrainConfig(
            dataset=args.dataset,
            defense=args.defense,
            levels=args.levels,
            out=args.out,
            data_dir=args.data_dir,
            download=args.download,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            schedule=args.schedule,
            weight_decay=args.weight_decay,
            steepness_start=args.steepness_start,
            steepness_end=args.steepness_end,
            augment=args.augment,
            seed=args.seed,
            device=args.device,
            limit_train=args.limit_train,
            init_from=args.init_from,
            progress=not args.no_progress,
            architecture=args.architecture,
            architecture_args=dict(args.architecture_arg),
            input_size=args.input_size,
            channels=args.channels,
            split=args.split,
            mean=args.mean,
            std=args.std,
            optimizer=args.optimizer,
            momentum=args.momentum,
            adversarial=args.adversarial,
            adv_epsilon=args.adv_epsilon,
            adv_steps=args.adv_steps,
            adv_step_size=args.adv_step_size,
            trades_beta=args.trades_beta,
            teacher=args.teacher,
            rslad_alpha=args.rslad_alpha,
            adv_ramp_epochs=args.adv_ramp_epochs,
            adv_check_samples=args.adv_check_samples,
            ema_decay=args.ema_decay,
        )
        refuse_to_overwrite(config, args.force)
        from training.loop import train  # torch import is slow; keep --help fast

        metrics = train(config)
    except (ValueError, DatasetError, ResumeError, CheckpointError) as exc:
        logging.getLogger("training").error("%s", exc)
        return 2
    if rank == 0:
        sys.stdout.write(json.dumps(metrics) + "\n")
    return 0
